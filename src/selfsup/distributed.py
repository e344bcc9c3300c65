"""A thin layer over torch.distributed that also works without a process group.

``rank()`` and ``world_size()`` read the process group when one is
initialised and fall back to a single process otherwise, so the same code
runs under ``torchrun`` and in a notebook.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients and returns this rank's slice.

    A plain ``all_gather`` cuts the graph, so negatives from other ranks would
    push no gradient back; SimCLR needs them to ("we aggregate ... across all
    devices", Chen et al. 2020 §2).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (N, ...) from every rank along dim 0, keeping the gradient."""
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 without gradient (features, labels)."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
