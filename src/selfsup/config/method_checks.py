"""The value checks of the ``method.*`` settings, one function each, shared by
:func:`~selfsup.config.validate` and the method classes' constructors (which can be called
without a config): one place, one message, naming the config key.
"""

from __future__ import annotations

from typing import Any

from selfsup.errors import ConfigError

# the largest jigsaw permutation set we select (selfsup.methods.permutations.MAX_PERMUTATIONS;
# repeated here so that loading a config does not import torch)
JIGSAW_MAX_PERMUTATIONS = 2000
MOMENTUM_SCHEDULES = ("constant", "cosine")
SHUFFLE_BN = ("auto", "ddp", "groups", "off")
FT_GRANULARITIES = ("batch", "sample", "dim")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def check_temperature(temperature: float | None) -> None:
    _require(temperature is None or temperature > 0,
             f"method.temperature must be > 0, got {temperature}")


def check_momentum(momentum: float, schedule: str = "constant") -> None:
    _require(0 <= momentum <= 1, f"method.moco.momentum must be in [0, 1], got {momentum}")
    _require(schedule in MOMENTUM_SCHEDULES,
             f"method.moco.momentum_schedule must be constant or cosine, got {schedule!r}")


def check_queue_size(queue_size: int) -> None:
    _require(not isinstance(queue_size, bool) and int(queue_size) == queue_size
             and queue_size >= 1,
             f"method.moco.queue_size must be an integer >= 1, got {queue_size}")


def check_shuffle_bn(shuffle_bn: str, bn_groups: int) -> None:
    _require(shuffle_bn in SHUFFLE_BN,
             f"method.moco.shuffle_bn must be auto, ddp, groups or off, got {shuffle_bn!r}")
    _require(bn_groups >= 1, f"method.moco.bn_groups must be >= 1, got {bn_groups}")


def check_ft(ft: Any) -> None:
    """``ft``: the FT settings (``method.ft`` or a ``FeatureTransform``: the same fields)."""
    _require(ft.alpha_pos > 0, f"method.ft.alpha_pos must be > 0, got {ft.alpha_pos}")
    _require(ft.alpha_neg > 0, f"method.ft.alpha_neg must be > 0, got {ft.alpha_neg}")
    _require(ft.lambda_pos is None or ft.lambda_pos >= 1,
             f"method.ft.lambda_pos must be >= 1 for extrapolation (harder positives), got "
             f"{ft.lambda_pos}; a value < 1 interpolates, which the FT paper finds no help")
    _require(ft.granularity in FT_GRANULARITIES,
             f"method.ft.granularity must be batch, sample or dim, got {ft.granularity!r}")
    _require(ft.start_epoch >= 0, f"method.ft.start_epoch must be >= 0, got {ft.start_epoch}")


def check_jigsaw(permutations: int | None, grayscale: float | None, gap: int,
                 hidden: int) -> None:
    _require(permutations is None or 2 <= permutations <= JIGSAW_MAX_PERMUTATIONS,
             f"method.jigsaw.permutations must be in [2, {JIGSAW_MAX_PERMUTATIONS}], got "
             f"{permutations}")
    _require(grayscale is None or 0 <= grayscale <= 1,
             f"method.jigsaw.grayscale must be in [0, 1], got {grayscale}")
    _require(gap >= 0, f"method.jigsaw.gap must be >= 0, got {gap}")
    _require(hidden >= 1, f"method.jigsaw.hidden must be >= 1, got {hidden}")
