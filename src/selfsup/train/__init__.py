"""Training: the one pretraining loop, the supervised loop, optimisers and schedules."""

from typing import Any

__all__ = ["pretrain"]


def __getattr__(name: str) -> Any:
    # lazy: importing selfsup.train.optim must not pull in data, models and augmentation
    if name == "pretrain":
        from selfsup.train.pretrain import pretrain

        return pretrain
    raise AttributeError(name)
