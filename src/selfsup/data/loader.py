"""Batches of a uint8 image tensor held in memory, ideally on the training device.

Small sets (MNIST, CIFAR, STL-10 at 96 px) fit on a GPU as uint8, so a batch
is one index operation: no workers, no decoding, no host-to-device copy per
step. The order is a pure function of (seed, epoch), so a resumed run sees
exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.errors import ConfigError


class ResidentLoader:
    """Shuffled, sharded batches of uint8 ``images`` (N, C, H, W); drops the last partial batch.

    ``batch_size`` is the global batch; rank ``r`` of ``world`` gets the r-th
    slice of each global batch, so every rank sees disjoint images.
    """

    def __init__(self, images: Tensor, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world: int = 1, device: torch.device | str = "cpu",
                 resident: bool = True) -> None:
        if batch_size % world:
            raise ConfigError(
                f"train.batch_size {batch_size} is not divisible by the world size {world}"
            )
        if batch_size > len(images):
            raise ConfigError(
                f"train.batch_size {batch_size} is larger than the data set ({len(images)} images)"
            )
        self.device = torch.device(device)
        if resident:
            self.images = images.to(self.device)
        else:  # too big for the device: keep it in (pinned) host memory, copy each batch
            pin = self.device.type == "cuda"
            self.images = images.pin_memory() if pin else images
        self.batch_size = batch_size
        self.local_batch = batch_size // world
        self.seed, self.rank, self.world = seed, rank, world
        self.steps_per_epoch = len(images) // batch_size
        self._epoch = -1
        self._perm: Tensor | None = None

    def permutation(self, epoch: int) -> Tensor:
        """The image order of ``epoch``; identical on every rank (same seed)."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.images), generator=g).to(self.images.device)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def batch(self, step: int) -> Tensor:
        """This rank's uint8 batch (B/world, C, H, W) for global ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        start = i * self.batch_size + self.rank * self.local_batch
        idx = self.permutation(epoch)[start : start + self.local_batch]
        return self.images[idx].to(self.device, non_blocking=True)
