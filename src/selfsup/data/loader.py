"""Batches of uint8 images for the pretraining loop, in an order that is a pure function of
(seed, epoch), so a resumed run sees exactly the batches the interrupted one would have.

Two loaders with one contract (``steps_per_epoch``, ``permutation(epoch)``, ``batch(step)``)
and one permutation, hence bit-identical batches:

- :class:`ResidentLoader`: the whole set on the training device (MNIST, CIFAR, STL-10 at
  96 px fit a GPU as uint8): a batch is one index operation, no copy per step.
- :class:`MappedLoader`: the set stays on the host, typically a memory-mapped packed store;
  a read-ahead thread gathers the next batches (this rank's slice only) into pinned memory
  while the device works, and each batch goes over with a non-blocking copy.

:func:`make_loader` picks one from ``data.on_device`` (``auto``: resident when the set fits on
the device with room to spare).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

from selfsup.data.image_source import ImageSet
from selfsup.errors import ConfigError


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The image order of ``epoch`` (identical on every rank: the same seed)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class _Order:
    """The shared part: checks, and which rows of the data set global ``step`` gives this rank."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int) -> None:
        if batch_size % world:
            raise ConfigError(
                f"train.batch_size {batch_size} is not divisible by the world size {world}"
            )
        if batch_size > n:
            raise ConfigError(
                f"train.batch_size {batch_size} is larger than the data set ({n} images)"
            )
        self.n, self.batch_size, self.local_batch = n, batch_size, batch_size // world
        self.seed, self.rank, self.world = seed, rank, world
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            self._perm, self._epoch = epoch_permutation(self.n, self.seed, epoch), epoch
        return self._perm

    def rows(self, step: int) -> Tensor:
        """This rank's rows (B/world,) of global ``step``: its slice of the global batch."""
        epoch, i = divmod(step, self.steps_per_epoch)
        start = i * self.batch_size + self.rank * self.local_batch
        return self.permutation(epoch)[start : start + self.local_batch]


class ResidentLoader(_Order):
    """Shuffled, sharded batches of uint8 ``images`` (N, C, H, W); drops the last partial batch.

    ``batch_size`` is the global batch; rank ``r`` of ``world`` gets the r-th
    slice of each global batch, so every rank sees disjoint images.
    """

    def __init__(self, images: Tensor, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world: int = 1, device: torch.device | str = "cpu",
                 resident: bool = True) -> None:
        super().__init__(len(images), batch_size, seed, rank, world)
        self.device = torch.device(device)
        if resident:
            self.images = images.to(self.device)
        else:  # too big for the device: keep it in (pinned) host memory, copy each batch
            pin = self.device.type == "cuda"
            self.images = images.pin_memory() if pin else images

    def permutation(self, epoch: int) -> Tensor:
        perm = super().permutation(epoch)
        if perm.device != self.images.device:
            self._perm = perm = perm.to(self.images.device)
        return perm

    def batch(self, step: int) -> Tensor:
        """This rank's uint8 batch (B/world, C, H, W) for global ``step``."""
        return self.images[self.rows(step)].to(self.device, non_blocking=True)


class MappedLoader(_Order):
    """:class:`ResidentLoader`'s batches from a host-side :class:`ImageSet` (usually a memory
    map), read ``prefetch`` steps ahead by one background thread.

    The thread only gathers rows (numpy/torch release the GIL while copying), so the training
    thread keeps the device busy; on CUDA the gathered batch lands in pinned memory and is
    copied without blocking. Steps are expected in order; any other step is read on demand.
    """

    def __init__(self, source: ImageSet, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world: int = 1, device: torch.device | str = "cpu", prefetch: int = 3) -> None:
        super().__init__(len(source), batch_size, seed, rank, world)
        self.source, self.device = source, torch.device(device)
        self.pin = self.device.type == "cuda"
        self.prefetch = max(0, int(prefetch))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="selfsup-read") \
            if self.prefetch else None
        self._pending: dict[int, Future] = {}

    def _read(self, rows: Tensor) -> Tensor:
        images = self.source.images
        shape = (len(rows), *images.shape[1:])
        out = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
        # sorted reads walk the file forwards; the batch keeps the permutation's order
        order = torch.argsort(rows)
        out[order] = images[rows[order]]
        return out

    def batch(self, step: int) -> Tensor:
        """This rank's uint8 batch (B/world, C, H, W) for global ``step``, on the device."""
        future = self._pending.pop(step, None)
        if self._pool is not None:
            for stale in [s for s in self._pending if s < step or s > step + self.prefetch]:
                self._pending.pop(stale).cancel()
            for ahead in range(step + 1, step + 1 + self.prefetch):
                if ahead not in self._pending:  # rows computed here: the thread needs no RNG
                    self._pending[ahead] = self._pool.submit(self._read, self.rows(ahead))
        x = future.result() if future is not None else self._read(self.rows(step))
        return x.to(self.device, non_blocking=True)

    def close(self) -> None:
        if getattr(self, "_pool", None) is not None:  # None too when __init__ refused the data
            for f in self._pending.values():
                f.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        self.close()


def fits_on_device(nbytes: int, device: torch.device, headroom: float = 0.5) -> bool:
    """Whether ``nbytes`` of uint8 images may live on ``device``: at most ``headroom`` of its
    free memory on CUDA (the model, activations and views need the rest). On the CPU the
    training device *is* host memory: a set in memory already is "on it", and a memory map must
    stay one (copying it would need the RAM the store exists to avoid)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= headroom * free
    return True


def make_loader(source: ImageSet, batch_size: int, *, seed: int, rank: int, world: int,
                device: torch.device, on_device: bool | str = "auto", prefetch: int = 3):
    """The loader for ``source``: resident on ``device`` when asked (``True``) or when it fits
    (``auto``, or always for in-memory sets on the CPU); otherwise read ahead from the host."""
    if on_device == "auto":
        if source.mapped:
            on_device = device.type == "cuda" and fits_on_device(source.nbytes, device)
        else:
            on_device = fits_on_device(source.nbytes, device)
    if on_device and not (source.mapped and device.type == "cpu"):
        return ResidentLoader(source.images, batch_size, seed=seed, rank=rank, world=world,
                              device=device, resident=True)
    return MappedLoader(source, batch_size, seed=seed, rank=rank, world=world, device=device,
                        prefetch=prefetch)


def place_images(images: Tensor, device: torch.device, on_device: bool | str = "auto") -> Tensor:
    """``images`` on ``device`` when asked or when they fit there (``auto``), else left on the
    host, where the supervised loop gathers each batch and copies it over."""
    if on_device == "auto":
        on_device = fits_on_device(images.numel() * images.element_size(), device)
    return images.to(device) if on_device else images
