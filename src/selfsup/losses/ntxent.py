"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning
of Visual Representations", ICML 2020 (arXiv 2002.05709), eq. (1):

    l(i, j) = -log exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ)

"the final loss is computed across all positive pairs, both (i, j) and (j, i),
in a mini-batch": the mean over all 2N anchors.
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
    _check_pair(z1, z2, temperature)
    if negatives is not None and (negatives.ndim != 2 or negatives.shape[1] != z1.shape[1]):
        raise ValueError(f"nt_xent negatives must be (K, {z1.shape[1]}), "
                         f"got {tuple(negatives.shape)}")
    if normalize:
        z1 = F.normalize(z1, dim=1)
        z2 = F.normalize(z2, dim=1)
    n = z1.shape[0]
    # local anchors against the global batch of candidates
    z_local = torch.cat([z1, z2], dim=0)  # 2N x d
    z1_all = gather_with_grad(z1)  # (world*N) x d
    z2_all = gather_with_grad(z2)  # (world*N) x d
    z_all = torch.cat([z1_all, z2_all], dim=0)  # 2M x d, M = world*N
    m = z1_all.shape[0]
    logits = z_local @ z_all.T / temperature  # 2N x 2M
    if negatives is not None:  # the memory's columns come after the batch's
        extra = z_local @ negatives.detach().to(z_local.dtype).T / temperature  # 2N x K
        logits = torch.cat([logits, extra], dim=1)  # 2N x (2M + K)
    offset = rank() * n
    local = torch.arange(n, device=z1.device)
    self_idx = torch.cat([local + offset, local + offset + m])  # 2N: each anchor's row in z_all
    pos_idx = torch.cat([local + offset + m, local + offset])  # 2N: its other view
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # a softmax in half precision loses the positive's margin
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[torch.arange(2 * n, device=z1.device), self_idx] = True
    logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, pos_idx)
