"""Schedules as pure functions of the step (no scheduler objects to save or resume)."""

from __future__ import annotations

import math

# moved to selfsup.methods.momentum (methods do not import the loop's package); kept
# here for the callers of train.schedule
from selfsup.methods.momentum import cosine_momentum  # noqa: F401


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, base: float, final: float = 0.0
) -> float:
    """Linear warm-up from 0 to ``base`` over ``warmup_steps``, then cosine decay to ``final``.

    SimCLR (Chen et al. 2020, §B.1): "linear warmup for the first 10 epochs, and
    decay the learning rate with the cosine decay schedule without restarts".
    """
    if step < warmup_steps:
        return base * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))


def step_decay(
    step: int, total_steps: int, base: float, milestones: tuple[float, ...] = (0.6, 0.8),
    gamma: float = 0.1,
) -> float:
    """Multiply ``base`` by ``gamma`` at each milestone (fractions of training), as MoCo v1."""
    passed = sum(1 for m in milestones if step >= m * total_steps)
    return base * gamma**passed

