"""The one supervised loop: a classifier on (inputs, labels) with SGD and a cosine schedule.

Every supervised stage reuses it with a different model and target: the
linear probe (a Linear on frozen features), and later fine-tuning,
distillation and pseudo-label training (a network on augmented images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from selfsup.train.schedule import warmup_cosine


@dataclass
class SupervisedRecipe:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = True
    seed: int = 0


def fit_classifier(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    recipe: SupervisedRecipe,
    *,
    transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    progress: bool = False,
    desc: str = "supervised",
) -> list[float]:
    """Train ``model`` in place; returns the mean loss of each epoch.

    ``inputs`` and ``labels`` live on the model's device. ``transform`` (an
    augmentation taking a generator) is applied per batch when given.
    """
    device = next(model.parameters()).device
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    n = len(inputs)
    steps_per_epoch = max(n // recipe.batch_size, 1)
    total = recipe.epochs * steps_per_epoch
    g = torch.Generator().manual_seed(recipe.seed)
    aug_gen = torch.Generator(device=device).manual_seed(recipe.seed)
    history = []
    model.train()
    bar = tqdm(range(recipe.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        perm = torch.randperm(n, generator=g).to(device)
        running = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, total, 0, recipe.lr)
            idx = perm[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            x, y = inputs[idx], labels[idx]
            if transform is not None:
                x = transform(x, aug_gen)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach()
        history.append(running.item() / steps_per_epoch)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history


@torch.no_grad()
def predict_topk(model: nn.Module, inputs: Tensor, k: int = 5, batch_size: int = 4096) -> Tensor:
    """The k highest-scoring classes (M, k) of ``model`` in eval mode."""
    model.eval()
    out = [model(inputs[i : i + batch_size]).topk(k, dim=1).indices
           for i in range(0, len(inputs), batch_size)]
    return torch.cat(out)
