"""A queue of keys: the dictionary of MoCo, the memory of SimCLR v2.

He et al., CVPR 2020 (arXiv 1911.05722), §3.2: "we maintain the dictionary as a queue of
data samples ... the encoded keys of the current mini-batch are enqueued, and the oldest
are removed". As in the reference code (facebookresearch/moco ``builder.py``) the queue and
its pointer are buffers, so they move with ``.to()`` and travel with the checkpoint; here
the queue is (K, d) and written with wrap-around indices on the device, so K need not be a
multiple of the batch and no host sync (``int(ptr)``) occurs.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config.method_checks import check_queue_size
from selfsup.distributed import gather
from selfsup.errors import ConfigError


class KeyQueue(nn.Module):
    """K normalised keys of dimension d (random unit vectors at first) and a FIFO pointer."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        check_queue_size(size)
        self.register_buffer("queue", F.normalize(torch.randn(int(size), dim), dim=1))  # K x d
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))  # 1: the oldest entry

    @property
    def K(self) -> int:
        return self.queue.shape[0]

    def snapshot(self) -> Tensor:
        """The current keys, K x d, detached from later in-place enqueues."""
        return self.queue.clone().detach()

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write the global batch of ``keys`` (N x d per rank) over the oldest entries."""
        keys = gather(keys)  # B x d, B = world * N
        batch_size = keys.shape[0]
        idx = (self.ptr + torch.arange(batch_size, device=keys.device)) % self.K  # B
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))  # K x d
        self.ptr.add_(batch_size).remainder_(self.K)  # move pointer

    def check_room(self, keys_per_step: int, what: str) -> None:
        """ConfigError when one step's keys (``what``: how they come about) exceed K."""
        if self.K < keys_per_step:
            raise ConfigError(f"method.moco.queue_size K={self.K} is smaller than {what} "
                              f"(train.batch_size); K must hold one step's {keys_per_step} keys")

    def check_dataset_size(self, n_images: int) -> None:
        """Warn when the queue holds more keys than there are images (repeats as negatives)."""
        if self.K > n_images:
            warnings.warn(f"method.moco.queue_size K={self.K} exceeds the {n_images} training "
                          "images: the queue holds older keys of the current images, which act "
                          "as false negatives; use a smaller queue_size", stacklevel=3)

    def extra_repr(self) -> str:
        return f"K={self.K}, d={self.queue.shape[1]}"
