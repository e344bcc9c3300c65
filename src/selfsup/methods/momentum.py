"""A momentum encoder: the exponential moving average of a module's parameters.

He et al., MoCo (CVPR 2020, arXiv 1911.05722), eq. (2): "θ_k ← m θ_k + (1 − m) θ_q ...
Only the parameters θ_q are updated by back-propagation"; the key encoder starts as a copy
of the query encoder. Grill et al., BYOL (NeurIPS 2020, arXiv 2006.07733), §3.2: the target
decay rate "τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2", rising from τ_base to 1 over training
(``schedule="cosine"``). SimCLR v2's memory (arXiv 2006.10029) uses the same network.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from selfsup.config.method_checks import check_momentum


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """Momentum rising from ``base`` to 1 on a half cosine (BYOL-style; MoCo option)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * progress))


class MomentumEncoder(nn.Module):
    """A frozen copy of ``online`` (``.encoder``) that follows it by EMA: no gradient ever.

    ``update(online, step, total_steps)``, after the optimiser step, does
    θ ← m θ + (1 − m) θ_online for every parameter, with m from :meth:`momentum_at`
    (``momentum``, or BYOL's cosine schedule m → 1). Only parameters are averaged: the copy's
    batch-norm buffers evolve from its own forward passes, as in the MoCo reference code.
    ``forward`` runs the copy without gradient.
    """

    def __init__(self, online: nn.Module, momentum: float, schedule: str = "constant") -> None:
        super().__init__()
        check_momentum(momentum, schedule)
        self.encoder = copy.deepcopy(online)  # "initialised as the query encoder"
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.momentum, self.schedule = float(momentum), schedule

    def momentum_at(self, step: int, total_steps: int) -> float:
        """m for the update after ``step``: constant, or rising to 1 on a half cosine."""
        if self.schedule == "cosine":
            return cosine_momentum(step, total_steps, self.momentum)
        return self.momentum

    @torch.no_grad()
    def update(self, online: nn.Module, step: int, total_steps: int) -> None:
        """θ ← m θ + (1 − m) θ_online, i.e. ``lerp(θ, θ_online, 1 − m)`` (one fused call)."""
        m = self.momentum_at(step, total_steps)
        torch._foreach_lerp_(list(self.encoder.parameters()), list(online.parameters()), 1.0 - m)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, schedule={self.schedule!r}"


class KeyEncoderViews:
    """MoCo's names (``encoder_q``, ``backbone_k``, ``head_k``, ``queue``, ``queue_ptr``,
    ``K``, ``m``) for a method with ``backbone``, ``head``, a :class:`MomentumEncoder`
    ``encoder_k`` and a :class:`~selfsup.methods.queue.KeyQueue` ``dictionary``; views only."""

    @property
    def encoder_q(self) -> nn.Sequential:
        """f_q = head ∘ backbone as one module (a view: nothing is copied)."""
        return nn.Sequential(OrderedDict(backbone=self.backbone, head=self.head))

    @property
    def backbone_k(self) -> nn.Module:
        return self.encoder_k.encoder.backbone

    @property
    def head_k(self) -> nn.Module:
        return self.encoder_k.encoder.head

    @property
    def queue(self) -> Tensor:
        return self.dictionary.queue  # K x d

    @property
    def queue_ptr(self) -> Tensor:
        return self.dictionary.ptr  # 1

    @property
    def K(self) -> int:
        return self.dictionary.K

    @property
    def m(self) -> float:
        return self.encoder_k.momentum
