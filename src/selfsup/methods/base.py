"""The contract between a method and the pretraining loop, as one small base class.

A method is an ``nn.Module`` that composes a backbone f, a head g and a loss, and maps one
batch of views to ``(loss, metrics)``; it knows nothing of optimisers, logging or files.
:class:`Method` only declares what the loop relies on, with defaults that do nothing, so a
method overrides what it needs (MoCo: :meth:`after_step`; Jigsaw: :attr:`n_views`) and a new
method is one file with a factory registered by
:func:`~selfsup.methods.registry.register_method`. Per step the loop calls::

    model.set_epoch(step / steps_per_epoch)   # before the step (FT's start epoch reads it)
    views = [augment(x) for _ in range(model.n_views)]
    loss, metrics = model(views)              # metrics: device tensors, no host sync
    loss.backward(); optimizer.step()
    model.after_step(step, total_steps)       # momentum encoders, queues

and once, before training: ``model.generator = <the run's seeded generator>`` and
``model.check_dataset_size(len(train_set))``. The backbone f must be ``model.backbone``
(k-NN monitor, export and later stages read it and the ``backbone.`` checkpoint keys).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Method(nn.Module):
    """Base of every method: ``forward(views) -> (loss, metrics)`` and the loop's hooks."""

    n_views: int = 2  # augmented views of each image per step
    # state-dict names of earlier versions -> current ones (an exact key, or a prefix ending
    # in "."), so that the checkpoints of older runs still load and resume
    renamed_state: dict[str, str] = {}

    def __init__(self) -> None:
        super().__init__()
        self.generator: torch.Generator | None = None  # the run's seeded generator (the loop)
        self.epoch: float = 0.0  # step / steps per epoch, set by set_epoch

    def forward(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, metrics)`` of one batch: ``n_views`` tensors (N, C, H, W); metrics are
        0-d (averaged over log steps) or 1-d (histograms, summed) device tensors."""
        raise NotImplementedError

    def set_epoch(self, epoch: float) -> None:
        """The training progress in epochs (a float), before each step."""
        self.epoch = float(epoch)

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after ``optimizer.step()`` of ``step`` (0-based): EMA updates, queues."""

    def check_dataset_size(self, n: int) -> None:
        """Called once with the number of training images; warn or raise on a mismatch."""

    def _generator(self, device: torch.device) -> torch.Generator:
        """:attr:`generator`, or else a private one on ``device`` seeded 0 (made once)."""
        if self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(0)
        return self.generator

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for old, new in self.renamed_state.items():
            for key in [k for k in state_dict if k == prefix + old
                        or (old.endswith(".") and k.startswith(prefix + old))]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
