"""Weighted k-NN classification on frozen features.

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018 (InstDisc), as in MoCo's CIFAR demo: cosine
similarity on L2-normalised features, the k nearest training samples vote
with weight exp(sim / T).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_scores(
    train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, num_classes: int,
    k: int = 200, temperature: float = 0.1, chunk: int = 1024,
) -> Tensor:
    """Class scores (M, num_classes): the sum of exp(sim/T) over the k nearest neighbours.

    Computed in the wider of the two features' dtypes, at least float32: float64
    features give float64 scores, half / bfloat16 features float32 ones.
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"k-NN needs (N, D) and (M, D) features, got {tuple(train_feats.shape)} "
            f"and {tuple(test_feats.shape)}"
        )
    if len(train_labels) != len(train_feats):
        raise ValueError(f"{len(train_labels)} labels for {len(train_feats)} train features")
    if k < 1:
        raise ValueError(f"k-NN k must be >= 1, got {k}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"k-NN temperature must be a finite number > 0, got {temperature}")
    k = min(k, len(train_feats))  # the caller reports the k used (selfsup.eval.protocols)
    dtype = torch.promote_types(torch.promote_types(train_feats.dtype, test_feats.dtype),
                                torch.float32)
    train = F.normalize(train_feats.to(dtype), dim=1)  # N x D
    labels = train_labels.to(train.device)
    out = []
    for i in range(0, len(test_feats), chunk):
        q = F.normalize(test_feats[i : i + chunk].to(train.device, dtype), dim=1)  # M x D
        sim, idx = (q @ train.T).topk(k, dim=1)  # M x k
        weight = (sim / temperature).exp()  # M x k
        scores = torch.zeros(len(q), num_classes, device=train.device, dtype=dtype)
        scores.scatter_add_(1, labels[idx], weight)  # M x C
        out.append(scores)
    return torch.cat(out)


def knn_predict(
    train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, num_classes: int,
    k: int = 200, temperature: float = 0.1,
) -> Tensor:
    """Predicted labels (M,) by weighted k-NN vote (fixed public API)."""
    scores = knn_scores(train_feats, train_labels, test_feats, num_classes, k, temperature)
    return scores.argmax(dim=1)


def knn_accuracy(
    train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
    num_classes: int, k: int = 200, temperature: float = 0.1,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of the weighted k-NN classifier."""
    scores = knn_scores(train_feats, train_labels, test_feats, num_classes, k, temperature)
    target = test_labels.to(scores.device)
    top = scores.topk(min(5, num_classes), dim=1).indices
    return {
        "top1": (top[:, 0] == target).float().mean().item(),
        "top5": (top == target[:, None]).any(dim=1).float().mean().item(),
    }
