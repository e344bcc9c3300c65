"""Linear probe on frozen features (``linear-feat`` in docs/protocols.md).

"a linear classifier is trained on top of the frozen base network" (SimCLR
§B.5; MoCo §4.1). Features of the un-augmented train split are computed once,
standardised with the train statistics, and a Linear layer is fitted to
them; the backbone never sees a gradient, and we check that it is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import Tensor, nn

from selfsup.train.supervised import SupervisedRecipe, fit_classifier, predict_topk


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    recipe: SupervisedRecipe | None = None,
    *,
    standardize: bool = True,
    progress: bool = False,
) -> dict:
    """Fit a linear classifier on train features; top-1/top-5 on test features."""
    recipe = recipe or SupervisedRecipe()
    device = train_feats.device
    x_train, x_test = train_feats.float(), test_feats.float().to(device)
    if standardize:
        mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(recipe.seed)
    clf = nn.Linear(x_train.shape[1], num_classes).to(device)
    history = fit_classifier(clf, x_train, train_labels.to(device), recipe, progress=progress,
                             desc="linear probe")
    k = min(5, num_classes)
    top = predict_topk(clf, x_test, k=k)
    target = test_labels.to(device)
    return {
        "top1": (top[:, 0] == target).float().mean().item(),
        "top5": (top == target[:, None]).any(dim=1).float().mean().item(),
        "final_train_loss": history[-1],
        "recipe": {**asdict(recipe), "optimizer": "sgd", "schedule": "cosine",
                   "standardize": standardize},
    }

