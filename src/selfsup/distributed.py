"""A thin layer over torch.distributed that also works without a process group.

``rank()`` and ``world_size()`` read the process group when one is
initialised and fall back to a single process otherwise, so the same code
runs under ``torchrun`` and in a notebook.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
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


# How long a collective waits for a peer where the ranks may drift apart for long: rank 0
# writing a checkpoint or the summary alone, the k-NN monitor, an uneven first step
# (torch.compile, cold caches). The old single default, which none of them was seen to reach;
# a stuck rank in the training steps is caught by the short train.timeout_s instead.
PATIENT_S = 1800.0


def init_distributed(device: torch.device, timeout_s: float = PATIENT_S) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns this rank's device: ``cuda:LOCAL_RANK`` on CUDA (NCCL), the CPU
    otherwise (gloo). Without torchrun's variables it does nothing, so a
    single process needs no process group. A collective that waits longer
    than ``timeout_s`` for a peer fails instead of hanging forever
    (:class:`CollectiveTimeouts` shortens it for the training steps).
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


def _set_pg_timeout():
    from torch.distributed import distributed_c10d as c10d

    return getattr(c10d, "_set_pg_timeout", None)  # torch >= 2.3, gloo and NCCL


def set_collective_timeout(seconds: float) -> None:
    """Collectives this rank starts from now on fail after waiting ``seconds`` for a peer
    (without torch's ``_set_pg_timeout`` the group keeps the timeout it was made with)."""
    setter = _set_pg_timeout()
    if world_size() > 1 and setter is not None:
        setter(timedelta(seconds=seconds))


class CollectiveTimeouts:
    """A short bound for the training steps, a patient one where the ranks may drift apart.

    A stopped rank is noticed by the others in their next collective. In the steps every rank
    does the same work, so ``steps_s`` (``train.timeout_s``) can be short and a stuck job ends
    within minutes. Elsewhere one rank may work alone for long (rank 0 writes a checkpoint,
    the summary, the plots) or the ranks may end a first step minutes apart (compilation):
    there collectives wait ``patient_s``, and :meth:`uneven` ends with a barrier, so the rank
    done first waits there, patiently, instead of in the next step's collective. ``now`` is
    the bound in force.
    """

    def __init__(self, steps_s: float, patient_s: float = PATIENT_S) -> None:
        self.steps_s, self.patient_s = steps_s, max(steps_s, patient_s)
        # the group is made patient and shortened for the steps; a torch that cannot change
        # a group's timeout gets the short one throughout (a slow phase may then fail)
        self.initial_s = self.patient_s if _set_pg_timeout() else steps_s
        self.now = self.initial_s

    def _set(self, seconds: float) -> None:
        if _set_pg_timeout():
            set_collective_timeout(seconds)
            self.now = seconds

    @contextmanager
    def steps(self):
        """Inside: collectives fail after ``steps_s``; on leaving, ``patient_s`` again."""
        self._set(self.steps_s)
        try:
            yield
        finally:
            self._set(self.patient_s)

    @contextmanager
    def uneven(self, on: bool = True):
        """Inside :meth:`steps`: a phase the ranks may end far apart (when ``on``), then a
        barrier, both bounded by ``patient_s``; then ``steps_s`` again."""
        if not on:
            yield
            return
        self._set(self.patient_s)
        yield  # an exception leaves the patient bound: the run is ending
        barrier()
        self._set(self.steps_s)


def leave_broken_group() -> None:
    """Tear down a gloo group that lost a peer, so the process ends with its error: left to
    the interpreter's exit, gloo aborted it ("terminate called without an active exception",
    exit -6, torch 2.13). NCCL's watchdog ends its own group."""
    if is_distributed() and dist.get_backend() == "gloo":
        dist.destroy_process_group()


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
