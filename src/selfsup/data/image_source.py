"""N images with optional labels: the one thing every consumer of data reads through.

:class:`ImageSource` is the protocol (length, channels, stored side, ``read(indices)``);
:class:`ImageSet` implements it for a uint8 (N, C, S, S) tensor. That tensor is either in
memory (MNIST, CIFAR, STL-10, decoded once per process) or a memory map of a packed store
(:mod:`selfsup.data.store`): every process of a node that maps the same store shares one copy
in the page cache, and a batch reads only the rows it indexes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from selfsup.errors import DataError


@runtime_checkable
class ImageSource(Protocol):
    """What the loaders, feature extraction and the supervised stages need of a data set."""

    name: str
    labels: Tensor | None  # int64 (N,), or None for unlabeled images
    classes: list[str]

    def __len__(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def size(self) -> int: ...  # the stored side S (images are S x S)

    def read(self, indices: Tensor | slice) -> Tensor: ...  # uint8 (B, C, S, S), on the host


@dataclass
class ImageSet:
    """Images held the way training wants them.

    ``images`` is uint8 (N, C, H, W), contiguous, on the CPU (possibly a read-only memory
    map: never write into it); ``labels`` is int64 (N,) or None for an unlabeled set;
    ``classes`` names the label values ([] if unknown); ``files`` the source file of each image
    (relative paths, image folders only); ``stats`` the per-channel (mean, std) in [0, 1] when
    known (a packed store measures it while packing).
    """

    images: Tensor
    labels: Tensor | None
    classes: list[str] = field(default_factory=list)
    name: str = ""
    files: list[str] | None = None
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    mapped: bool = False  # images is a memory map of a packed store

    def __post_init__(self) -> None:
        # Checked once here so a bad reader or hand-made set fails at load, not mid-training.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"{self.name}: images must be uint8 (N, C, H, W), "
                            f"got {self.images.dtype} {tuple(self.images.shape)}")
        self.images = self.images.contiguous()
        labels = self.labels
        if labels is not None and (labels.dtype != torch.int64 or labels.shape != (len(self),)):
            raise DataError(f"{self.name}: labels must be int64 ({len(self)},), "
                            f"got {labels.dtype} {tuple(labels.shape)}")
        if self.files is not None and len(self.files) != len(self):
            raise DataError(f"{self.name}: {len(self.files)} file names for {len(self)} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def read(self, indices: Tensor | slice) -> Tensor:
        """The uint8 images at ``indices`` (int64 positions or a slice), on the host."""
        if isinstance(indices, Tensor):
            indices = indices.cpu()
        return self.images[indices]

    def subset(self, index: Tensor) -> ImageSet:
        """The images (and labels, files) at ``index``: int64 positions or a boolean mask."""
        index = torch.as_tensor(index)
        labels = None if self.labels is None else self.labels[index]
        files = None
        if self.files is not None:
            rows = index.nonzero().view(-1) if index.dtype == torch.bool else index.view(-1)
            files = [self.files[i] for i in rows.tolist()]
        return ImageSet(self.images[index], labels, list(self.classes), self.name, files,
                        self.stats)

    def head(self, n: int) -> ImageSet:
        """The first ``n`` images as a view: no copy, even of a memory-mapped store."""
        labels = None if self.labels is None else self.labels[:n]
        files = None if self.files is None else self.files[:n]
        return ImageSet(self.images[:n], labels, list(self.classes), self.name, files,
                        self.stats, self.mapped)
