"""A thin layer over torch.distributed that also works without a process group.

``rank()`` and ``world_size()`` read the process group when one is
initialised and fall back to a single process otherwise, so the same code
runs under ``torchrun`` and in a notebook.
"""

from __future__ import annotations

import os
from datetime import timedelta

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


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns this rank's device: ``cuda:LOCAL_RANK`` on CUDA (NCCL), the CPU
    otherwise (gloo). Without torchrun's variables it does nothing, so a
    single process needs no process group. A collective that waits longer
    than ``timeout_s`` for a peer fails instead of hanging forever.
    """
    if not launched_by_torchrun() or is_distributed():
        return device
    timeout = timedelta(seconds=timeout_s)
    # torchrun's store outlives an elastic restart, and the restarted group would read the
    # failed group's addresses from it (measured: gloo "Connection refused" on every restart,
    # torch 2.13): each attempt gets keys of its own
    store, rank_, world = next(dist.rendezvous("env://", timeout=timeout))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    kwargs = dict(store=dist.PrefixStore(f"selfsup/attempt{attempt}/", store), rank=rank_,
                  world_size=world, timeout=timeout)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, **kwargs)
    else:
        dist.init_process_group("gloo", **kwargs)
    return device


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. the run folder's name)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over ranks (in place on a copy); identity on one process."""
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@torch.no_grad()
def gather_rows(x: Tensor, n: int) -> Tensor:
    """Reassemble rows that rank r computed for ``range(r*c, (r+1)*c)``, c = ceil(n/world).

    Each rank pads its chunk to c rows so ``all_gather`` sees equal shapes;
    the padding is dropped here, so the result has exactly ``n`` rows in order.
    """
    if world_size() == 1:
        return x
    c = -(-n // world_size())
    if x.shape[0] < c:
        pad = x[-1:].expand(c - x.shape[0], *x.shape[1:]) if x.shape[0] else x.new_zeros(
            c, *x.shape[1:])
        x = torch.cat([x, pad])
    return gather(x)[:n]


def my_rows(n: int) -> slice:
    """This rank's contiguous share of ``n`` rows (see :func:`gather_rows`)."""
    c = -(-n // world_size())
    return slice(min(rank() * c, n), min((rank() + 1) * c, n))
