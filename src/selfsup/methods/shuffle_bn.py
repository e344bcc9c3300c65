"""Shuffling BN for MoCo's key encoder: across ranks under DDP, and a single-device equivalent.

He et al., CVPR 2020 (arXiv 1911.05722), §3.3: batch norm lets the model
"cheat" the pretext task because "the intra-batch communication among samples
(caused by BN) leaks information"; so "for the key encoder f_k, we shuffle the
sample order in the current mini-batch before distributing it among GPUs (and
shuffle back after encoding); the sample order of the mini-batch for the query
encoder f_q is not altered". The query and its positive key are then
normalised with statistics of different subsets of the batch.

- :func:`batch_shuffle_ddp` / :func:`batch_unshuffle_ddp`: the reference code's
  helpers (facebookresearch/moco ``builder.py``): gather the global batch,
  rank 0 draws a permutation and broadcasts it, every rank encodes its slice.
- :func:`grouped_key_forward`: one device has no "other GPUs", so, as the MoCo
  CIFAR-10 demo's ``SplitBatchNorm`` does, batch norm statistics are computed
  per group of the batch: the batch is shuffled, split into ``groups`` chunks
  that go through the key encoder one at a time in train mode (each BN layer
  normalises a chunk with that chunk's own statistics), then put back in order.
  Unlike ``SplitBatchNorm`` this needs no change to the user's backbone and
  works for every normalisation layer, including BN in the head. Two
  consequences: the key encoder's BN running statistics are updated once per
  chunk (they are never used to compute keys in training; only a user who
  evaluates the key encoder would see them), and the query encoder keeps plain
  whole-batch BN (under DDP it sees its own rank's sub-batch, as in the paper).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from selfsup.distributed import gather, is_distributed, rank, world_size


def num_groups(batch: int, groups: int) -> int:
    """Groups actually used for ``batch`` samples: at most ``groups``, each of >= 2 samples.

    A batch not divisible by the group count is split as ``torch.tensor_split``
    does (sizes differ by at most one); a group of one sample would have zero
    variance (and ``BatchNorm1d`` rejects it in train mode), so the count is
    capped at ``batch // 2``.
    """
    return max(1, min(int(groups), batch // 2))


@torch.no_grad()
def grouped_key_forward(
    encoder: Callable[[Tensor], Tensor], x: Tensor, groups: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``encoder(x)`` with batch-norm statistics computed per random group of the batch.

    ``x``: (N, ...). The batch is permuted (``generator`` draws the permutation
    on ``x``'s device), split into :func:`num_groups` chunks, encoded chunk by
    chunk and un-permuted, so row i of the result is the key of ``x[i]``.
    """
    n = x.shape[0]
    g = num_groups(n, groups)
    if g == 1:
        return encoder(x)
    idx_shuffle = torch.randperm(n, device=x.device, generator=generator)  # N
    chunks = torch.tensor_split(x[idx_shuffle], g)  # g x (~N/g, ...)
    out = torch.cat([encoder(c) for c in chunks])  # N x d, in shuffled order
    idx_unshuffle = torch.argsort(idx_shuffle)  # N: inverse permutation
    return out[idx_unshuffle]  # N x d


@torch.no_grad()
def batch_shuffle_ddp(
    x: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Shuffle the global batch across ranks: ``(this rank's slice, idx_unshuffle)``.

    ``x``: (N, ...) on every rank (the same N). Returns an (N, ...) slice of
    the shuffled global batch (world*N, ...) and the inverse permutation
    (world*N,) that :func:`batch_unshuffle_ddp` needs. Only rank 0's
    ``generator`` (or global RNG) is used; the permutation is broadcast.
    """
    batch_size_this = x.shape[0]
    x_gather = gather(x)  # (world*N) x ...
    batch_size_all = x_gather.shape[0]
    num_gpus = batch_size_all // batch_size_this

    # random shuffle index, drawn on rank 0 and broadcast to all ranks
    idx_shuffle = torch.randperm(batch_size_all, device=x.device, generator=generator)  # world*N
    if is_distributed():
        dist.broadcast(idx_shuffle, src=0)

    # index for restoring
    idx_unshuffle = torch.argsort(idx_shuffle)  # world*N

    # shuffled index for this rank
    idx_this = idx_shuffle.view(num_gpus, -1)[rank()]  # N
    return x_gather[idx_this], idx_unshuffle  # N x ..., world*N


@torch.no_grad()
def batch_unshuffle_ddp(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Undo :func:`batch_shuffle_ddp`: rows of this rank's original batch, in order.

    ``x``: (N, ...) computed on this rank's shuffled slice; ``idx_unshuffle``:
    (world*N,) as returned by the shuffle.
    """
    x_gather = gather(x)  # (world*N) x ...
    num_gpus = world_size()
    idx_this = idx_unshuffle.view(num_gpus, -1)[rank()]  # N
    return x_gather[idx_this]  # N x ...


@torch.no_grad()
def ddp_key_forward(encoder: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``encoder`` on this rank's slice of the globally shuffled batch, shuffled back."""
    x, idx_unshuffle = batch_shuffle_ddp(x)  # N x ..., world*N
    k = encoder(x)  # N x d
    return batch_unshuffle_ddp(k, idx_unshuffle)  # N x d
