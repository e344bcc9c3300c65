"""The collectives of sharded k-means: no-ops on one process, over all ranks under torchrun."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from selfsup.distributed import world_size


def gather_var(t: Tensor, counts: list[int] | None = None) -> list[Tensor]:
    """``all_gather`` of rows whose number differs by rank (``counts``; equal if None)."""
    counts = counts or [t.shape[0]] * world_size()
    padded = t.new_zeros(max(counts), *t.shape[1:])  # all_gather wants equal shapes
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(out, padded)
    return [o[:c] for o, c in zip(out, counts)]


def all_reduce(t: Tensor) -> Tensor:
    if world_size() > 1:
        dist.all_reduce(t)
    return t
