"""Optimisers: LARS with SimCLR's semantics, and the parameter groups it needs.

You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks" (2017);
SimCLR uses it for every batch size (Chen et al. 2020, §B.1) and excludes
biases and batch-norm parameters from adaptation and weight decay.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from selfsup.errors import ConfigError


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling.

    Per parameter: ``g += wd*w``; ``trust = eta*|w|/|g|`` when both norms are
    positive, else 1; ``v = m*v + lr*trust*g``; ``w -= v``. A group with
    ``lars_exclude=True`` gets no weight decay and trust 1, i.e. plain
    momentum SGD.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0, eta: float = 0.001) -> None:
        if not lr >= 0:
            raise ConfigError(f"LARS lr must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ConfigError(f"LARS momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0:
            raise ConfigError(f"LARS weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            exclude = group["lars_exclude"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not exclude:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    # torch.where keeps this on the device: no host sync per parameter
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0),
                        group["eta"] * w_norm / g_norm.clamp_min(1e-30),
                        torch.ones_like(w_norm),
                    )
                    g = g * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(g, alpha=group["lr"])
                p.sub_(v)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights of convolutions and linear layers, and the rest.

    Biases and normalisation parameters (every parameter with ndim <= 1) get no
    weight decay and, for LARS, no adaptation (SimCLR §B.1).
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


OPTIMIZERS = ("lars", "sgd", "adamw")


def build_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """Build ``lars``, ``sgd`` (momentum, nesterov off) or ``adamw`` over ``param_groups``."""
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    # torch's optimisers reject unknown keys only at step time; drop ours
    for g in groups:
        g.pop("lars_exclude")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
