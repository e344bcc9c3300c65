"""InfoNCE with a shared set of negatives: the contrastive loss of MoCo.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR 2020 (arXiv 1911.05722), eq. (1):

    L_q = -log exp(q·k+/τ) / Σ_{i=0..K} exp(q·k_i/τ)

"the sum is over one positive and K negative samples ... this loss is the
log loss of a (K+1)-way softmax-based classifier that tries to classify q as
k+". The reference code (facebookresearch/moco ``builder.py``) builds the
logits Nx(1+K) with the positive at column 0 and uses cross-entropy with
label 0; so do we.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(q: Tensor, k: Tensor, negatives: Tensor, temperature: float) -> None:
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(
            f"info_nce expects q and k of the same shape (N, d), got {tuple(q.shape)} "
            f"and {tuple(k.shape)}"
        )
    if negatives.ndim != 2 or negatives.shape[1] != q.shape[1]:
        raise ValueError(
            f"info_nce expects negatives of shape (K, {q.shape[1]}), got {tuple(negatives.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def info_nce_logits(
    q: Tensor, k: Tensor, negatives: Tensor, temperature: float = 0.2, normalize: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, l_pos, l_neg)``: the loss of :func:`info_nce` and its raw scores (before /τ).

    ``l_pos`` (N,) and ``l_neg`` (N, K) are the cosine scores when ``normalize``;
    MoCo logs their statistics (the score monitor of Zhu et al., ICCV 2021)
    without computing them twice. ``k`` and ``negatives`` are cast to ``q``'s
    dtype (under autocast the products run in half precision anyway).
    """
    _check(q, k, negatives, temperature)
    k, negatives = k.to(q.dtype), negatives.to(q.dtype)
    if normalize:
        q = F.normalize(q, dim=1)
        k = F.normalize(k, dim=1)
        negatives = F.normalize(negatives, dim=1)
    # positive logits: Nx1
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # N x 1
    # negative logits: NxK
    l_neg = torch.einsum("nc,kc->nk", q, negatives)  # N x K
    logits = torch.cat([l_pos, l_neg], dim=1)  # N x (1+K)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # a softmax in half precision loses the positive's margin
    logits = logits / temperature  # N x (1+K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # N: positives
    return F.cross_entropy(logits, labels), l_pos.squeeze(1), l_neg


def info_nce(
    q: Tensor, k: Tensor, negatives: Tensor, temperature: float = 0.2, normalize: bool = True
) -> Tensor:
    """Mean over the N queries of the cross-entropy of ``[q·k, q·negatives] / τ``, positive at 0.

    ``q, k``: (N, d), row i of ``k`` is the positive key of query i.
    ``negatives``: (K, d), shared by all queries (MoCo's queue); pass a
    detached tensor, as the keys "are ... encoded by a slowly progressing
    encoder" and carry no gradient. With ``normalize`` all three are
    L2-normalised first, so the scores are cosine similarities.
    For identical unit vectors everywhere the loss is log(K + 1).
    """
    return info_nce_logits(q, k, negatives, temperature, normalize)[0]
