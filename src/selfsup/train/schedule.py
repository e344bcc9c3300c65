"""Schedules as pure functions of the step (no scheduler objects to save or resume)."""

from __future__ import annotations

import math


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


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """Momentum rising from ``base`` to 1 on a half cosine (BYOL-style; MoCo option)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * progress))
