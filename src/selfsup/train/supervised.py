"""The one supervised loop: a classifier on (inputs, targets) with SGD or LARS, cosine lr.

Every supervised stage reuses it with a different model and target: the
linear probe (a Linear on frozen features, labels), semi-supervised
fine-tuning (backbone + kept head layers + Linear on augmented images of a
label subset), distillation (a student on the teacher's soft targets, an
``objective`` that calls the teacher) and pseudo-label training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from selfsup.errors import ConfigError
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
    optimizer: str = "sgd"  # "sgd" (nesterov as set) or "lars" (SimCLR v2 fine-tuning)

    def __post_init__(self) -> None:
        # refused here, before features are extracted or a teacher is loaded
        checks = (("epochs", self.epochs >= 1, ">= 1"), ("batch-size", self.batch_size >= 1,
                  ">= 1"), ("lr", math.isfinite(self.lr) and self.lr >= 0, "a finite number >= 0"),
                  ("weight-decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                   "a finite number >= 0"), ("momentum", 0 <= self.momentum < 1, "in [0, 1)"))
        for flag, ok, want in checks:
            if not ok:
                value = getattr(self, flag.replace("-", "_"))
                raise ConfigError(f"--{flag} must be {want}, got {value}")
        if self.optimizer not in ("sgd", "lars"):
            raise ConfigError(f"--optimizer must be sgd or lars, got {self.optimizer!r}")


def _optimizer(model: nn.Module, recipe: SupervisedRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "lars":
        from selfsup.train.optim import build_optimizer

        return build_optimizer("lars", model, recipe.lr, recipe.weight_decay, recipe.momentum)
    if recipe.optimizer != "sgd":
        raise ValueError(f"supervised optimizer must be 'sgd' or 'lars', got {recipe.optimizer!r}")
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)


def _check_examples(inputs: Tensor, labels: Tensor) -> None:
    if len(inputs) != len(labels):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} targets")
    if len(inputs) == 0:
        raise ValueError("no training examples")


def fit_classifier(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    recipe: SupervisedRecipe,
    *,
    transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    objective: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    log: Callable[[dict], None] | None = None,
    progress: bool = False,
    desc: str = "supervised",
) -> list[float]:
    """Train ``model`` in place; returns the mean loss of each epoch.

    ``inputs`` and ``labels`` (any per-row targets) live on the model's
    device, or on the host (a set too big for the device, a memory-mapped
    store): then each batch is gathered there and copied over. ``transform``
    (an augmentation taking a generator) is applied per batch when given. The
    loss of a batch is ``objective(model, x, y)`` when given (e.g.
    distillation, which also runs a teacher on ``x``), else
    ``loss_fn(model(x), y)``. ``log`` receives ``{"epoch", "loss", "lr"}``
    after every epoch. A non-finite epoch loss raises (nothing silent).
    """
    _check_examples(inputs, labels)
    device = next(model.parameters()).device
    opt = _optimizer(model, recipe)
    objective = objective or (lambda m, x, y: loss_fn(m(x), y))
    steps_per_epoch = max(len(inputs) // recipe.batch_size, 1)
    g = torch.Generator().manual_seed(recipe.seed)
    aug_gen = torch.Generator(device=device).manual_seed(recipe.seed)
    history = []
    model.train()
    # the bar counts steps, not epochs: one long epoch (distillation) must not sit at 0/1
    bar = tqdm(total=recipe.epochs * steps_per_epoch, desc=desc, disable=not progress,
               leave=False, unit="step")
    for epoch in range(recipe.epochs):
        perm = torch.randperm(len(inputs), generator=g)
        running = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = perm[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            x = inputs[idx.to(inputs.device)].to(device, non_blocking=True)
            y = labels[idx.to(labels.device)].to(device, non_blocking=True)
            if transform is not None:
                x = transform(x, aug_gen)
            running += _step(model, opt, objective, x, y, recipe, epoch * steps_per_epoch + i,
                             recipe.epochs * steps_per_epoch)
            bar.update(1)
        history.append(running.item() / steps_per_epoch)
        if not math.isfinite(history[-1]):
            bar.close()
            raise FloatingPointError(f"{desc}: loss became {history[-1]} in epoch {epoch + 1}; "
                                     f"try a lower lr (now {recipe.lr:g})")
        bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.4f}")
        if log is not None:
            log({"epoch": epoch + 1, "loss": history[-1], "lr": opt.param_groups[0]["lr"]})
    bar.close()
    return history


def _step(model: nn.Module, opt: torch.optim.Optimizer, objective, x: Tensor, y: Tensor,
          recipe: SupervisedRecipe, step: int, total: int) -> Tensor:
    """One update at the cosine learning rate of ``step``; the detached loss."""
    for group in opt.param_groups:
        group["lr"] = warmup_cosine(step, total, 0, recipe.lr)
    loss = objective(model, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


@torch.no_grad()
def predict_topk(model: nn.Module, inputs: Tensor, k: int = 5, batch_size: int = 4096) -> Tensor:
    """The k highest-scoring classes (M, k) of ``model`` in eval mode."""
    model.eval()
    out = [model(inputs[i : i + batch_size]).topk(k, dim=1).indices
           for i in range(0, len(inputs), batch_size)]
    return torch.cat(out)
