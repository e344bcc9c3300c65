"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning
of Visual Representations", ICML 2020 (arXiv 2002.05709), eq. (1):

    l(i, j) = -log exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ)

"the final loss is computed across all positive pairs, both (i, j) and (j, i),
in a mini-batch": the mean over all 2N anchors.

The candidate columns (:func:`candidates`, :func:`pair_columns`) and the
masked cross-entropy (:func:`loss_from_scores`) are shared with the
Feature-Transformation variant (:func:`selfsup.methods.simclr.nt_xent_ft`),
which mixes the scores in between.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import gather_with_grad, rank, world_size


def _check_pair(z1: Tensor, z2: Tensor, temperature: float) -> None:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent expects two (N, d) tensors of the same shape, got {tuple(z1.shape)} "
            f"and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 2 and world_size() == 1:
        raise ValueError(f"nt_xent needs at least 2 images for negatives, got N={z1.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def pair_columns(n: int, m: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(self_idx, pos_idx)``, each (2N,): the column of each local anchor, and of its other
    view, among the 2M candidates ``[z1_all; z2_all]`` (M = world x N; this rank's rows)."""
    local = torch.arange(n, device=device) + rank() * n  # N: this rank's rows in z1_all
    return torch.cat([local, local + m]), torch.cat([local + m, local])


def candidates(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(z_all, self_idx, pos_idx)``: the 2M candidates of the global batch, gathered from
    every rank with gradient, and the columns of :func:`pair_columns`."""
    z1_all = gather_with_grad(z1)  # (world*N) x d
    z_all = torch.cat([z1_all, gather_with_grad(z2)])  # 2M x d, M = world*N
    return (z_all, *pair_columns(z1.shape[0], z1_all.shape[0], z1.device))


def loss_from_scores(scores: Tensor, self_idx: Tensor, pos_idx: Tensor,
                     temperature: float) -> Tensor:
    """Mean over the 2N anchors (rows) of -log softmax(scores / τ) at ``pos_idx``, the
    ``self_idx`` column excluded; ``scores`` (2N, C) are the similarities before /τ."""
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # a softmax in half precision loses the positive's margin
    self_mask = torch.zeros_like(scores, dtype=torch.bool)  # 2N x C
    self_mask[torch.arange(scores.shape[0], device=scores.device), self_idx] = True
    logits = scores.masked_fill(self_mask, float("-inf")) / temperature  # 2N x C
    return F.cross_entropy(logits, pos_idx)


def nt_xent_scores(z1: Tensor, z2: Tensor, temperature: float = 0.5, normalize: bool = True, *,
                   negatives: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(loss, scores, self_idx, pos_idx)``: :func:`nt_xent` and the scores it used.

    ``scores`` (2N, 2M [+ K]) are the anchors' similarities before /τ (cosines
    when ``normalize``): the local views against the global batch, then the
    ``negatives``' columns; ``self_idx`` and ``pos_idx`` (2N,) are each
    anchor's own and positive column. One 2N x 2M product serves the loss and
    any statistics of the scores.
    """
    _check_pair(z1, z2, temperature)
    if negatives is not None and (negatives.ndim != 2 or negatives.shape[1] != z1.shape[1]):
        raise ValueError(f"nt_xent negatives must be (K, {z1.shape[1]}), "
                         f"got {tuple(negatives.shape)}")
    if normalize:
        z1 = F.normalize(z1, dim=1)
        z2 = F.normalize(z2, dim=1)
    z_local = torch.cat([z1, z2], dim=0)  # 2N x d: local anchors against the global batch
    z_all, self_idx, pos_idx = candidates(z1, z2)  # 2M x d, 2N, 2N
    scores = z_local @ z_all.T  # 2N x 2M
    if negatives is not None:  # the memory's columns come after the batch's
        extra = z_local @ negatives.detach().to(z_local.dtype).T  # 2N x K
        scores = torch.cat([scores, extra], dim=1)  # 2N x (2M + K)
    return loss_from_scores(scores, self_idx, pos_idx, temperature), scores, self_idx, pos_idx


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5, normalize: bool = True, *,
            negatives: Tensor | None = None) -> Tensor:
    """Mean NT-Xent over all 2N anchors; row i of ``z1`` and ``z2`` are views of image i.

    Self-similarity is excluded and every other view in the batch is a
    negative (2(N-1) of them). Under ``torchrun`` the negatives are gathered
    from every rank with gradient, so the loss equals the single-process loss
    on the concatenated global batch. ``negatives`` (K, d), optional: extra
    negatives shared by every anchor (SimCLR v2's MoCo-style memory), used as
    given (normalise them yourself); they carry no gradient.
    """
    return nt_xent_scores(z1, z2, temperature, normalize, negatives=negatives)[0]
