"""On-device statistics of the positive and negative similarity scores.

Zhu et al., "Improving Contrastive Learning by Visualizing Feature
Transformation", ICCV 2021 (arXiv 2108.02982), §3: the mean positive score,
the mean negative score and the variance of the negative scores over
training "explain" when contrastive learning works. Computing them here costs
a few reductions on tensors the loss already made, with no host sync; the
loop sums them and moves them to the host only at log time.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCORE_RANGE = (-1.0, 1.0)


@torch.no_grad()
def score_stats(l_pos: Tensor, l_neg: Tensor, bins: int = 40) -> dict[str, Tensor]:
    """Device tensors: ``pos_sim``, ``neg_sim``, ``neg_var`` (scalars) and
    ``pos_hist`` / ``neg_hist`` ((bins,) counts over [-1, 1]).

    ``l_pos``: cosine scores of the positive pairs, any shape (e.g. (N,));
    ``l_neg``: cosine scores of the negatives, one row per anchor: R x K
    (MoCo N x K or 2N x K; SimCLR 2N x 2(N-1), each anchor's own negatives).
    Scores are cosine similarities, not divided by the temperature.

    ``neg_var`` follows the authors' code (DTennant/CL-Visualizing-Feature-
    Transformation, ``memory/mem_moco.py``: ``torch.var(neg, axis=1)`` per
    query, averaged over the batch when plotted): the unbiased variance of
    each anchor's K negative scores, then the mean over anchors. It measures
    how spread one anchor's negatives are, not how far apart the anchors'
    means lie (a single variance over all R x K scores mixes in the latter).
    With K = 1 the variance of the single score is taken as 0.
    """
    pos = l_pos.detach().float().reshape(-1)  # R
    neg = l_neg.detach().float()
    neg = neg.flatten(0, -2) if neg.dim() > 1 else neg[None]  # R x K
    row_var = torch.var(neg, dim=1, correction=1 if neg.shape[1] > 1 else 0)  # R
    neg = neg.reshape(-1)  # R*K
    lo, hi = SCORE_RANGE
    return {
        "pos_sim": pos.mean(),
        "neg_sim": neg.mean(),
        "neg_var": row_var.mean(),
        # histc clamps nothing: scores of unit vectors lie in [-1, 1] up to rounding
        "pos_hist": torch.histc(pos.clamp(lo, hi), bins=bins, min=lo, max=hi),
        "neg_hist": torch.histc(neg.clamp(lo, hi), bins=bins, min=lo, max=hi),
    }


def bin_edges(bins: int = 40) -> list[float]:
    lo, hi = SCORE_RANGE
    return [lo + (hi - lo) * i / bins for i in range(bins + 1)]


def drop_two_columns(s: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``s`` (R, C) without column ``a[r]`` and ``b[r]`` in each row r: (R, C - 2).

    Index arithmetic instead of a boolean mask: ``s[mask]`` needs the mask's
    count on the host, i.e. a device sync every step. Requires a[r] != b[r].
    """
    lo, hi = torch.minimum(a, b)[:, None], torch.maximum(a, b)[:, None]  # R x 1
    cols = torch.arange(s.shape[1] - 2, device=s.device).expand(s.shape[0], -1)  # R x (C-2)
    cols = cols + (cols >= lo)  # skip the smaller column
    cols = cols + (cols >= hi)  # then the larger one
    return s.gather(1, cols)


def collapsed(metrics: dict[str, float]) -> bool:
    """Whether logged score means say every embedding is the same vector.

    Positive and negative scores near 1 with no spread is the trivial solution
    of the contrastive loss (loss = log(K + 1)); gradients vanish there, so a
    run that reaches it does not leave it. ``neg_var`` is the mean per-anchor
    variance (:func:`score_stats`); it is at most about the variance over all
    scores, so it falls below the threshold at a collapse just the same, and
    the two means near 1 keep a batch whose anchors differ from being flagged.
    """
    return (metrics.get("neg_sim", 0.0) > 0.99 and metrics.get("pos_sim", 0.0) > 0.99
            and metrics.get("neg_var", 1.0) < 1e-4)
