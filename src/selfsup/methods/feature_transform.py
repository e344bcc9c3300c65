"""Feature Transformation (FT): hard positives by extrapolation, diverse negatives by interpolation.

Zhu, Liu, Zhu, Xie, Gong, Yang, "Improving Contrastive Learning by Visualizing
Feature Transformation", ICCV 2021 (arXiv 2108.02982), §4:

- positive extrapolation: "ẑ_q = λ_ex z_q + (1 − λ_ex) z_k, ẑ_k = λ_ex z_k + (1 − λ_ex) z_q"
  with λ_ex ≥ 1, so that for unit vectors the positive score
  ŝ = s + 2λ_ex(1 − λ_ex)(1 − s) ≤ s: the pair gets harder. The authors' code
  draws λ_ex = 1 + Beta(α, α), α = 2.0, one scalar per batch;
- negative interpolation: "Ẑ_neg = λ_in Z_neg + (1 − λ_in) Z_perm", λ_in ~ Beta(α, α),
  α = 1.6, with Z_perm a fresh random permutation of the negatives every step.

The transforms act on the normalised embeddings and only on the loss of the
current step; the loss formula itself is unchanged. Every draw comes from a
``torch.Generator`` that the caller passes in (the run's seeded stream), and
the number of random numbers consumed per draw is fixed, so a resumed run
repeats the same draws.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.config.method_checks import check_ft

_GAMMA_ROUNDS = 12  # Marsaglia–Tsang accepts ≥ 95 % per try: P(no accept in 12) < 1e-15


def extrapolate_positives(q: Tensor, k: Tensor, lam: float | Tensor) -> tuple[Tensor, Tensor]:
    """``(q_hat, k_hat)`` with q_hat = λ q + (1 − λ) k and k_hat = λ k + (1 − λ) q.

    ``q, k``: (N, d); ``lam`` a float or a tensor broadcastable to ``q``: a
    scalar (one per batch), (N, 1) (per sample) or (N, d) (per dimension).
    λ ≥ 1 extrapolates (harder positives); λ < 1 interpolates (easier ones).
    """
    q_hat = lam * q + (1 - lam) * k  # N x d
    k_hat = lam * k + (1 - lam) * q  # N x d
    return q_hat, k_hat


def interpolate_negatives(negatives: Tensor, mu: float | Tensor, perm: Tensor) -> Tensor:
    """μ Z_neg + (1 − μ) Z_neg[perm]; ``negatives`` (K, d), ``perm`` (K,), μ broadcastable."""
    return mu * negatives + (1 - mu) * negatives[perm]  # K x d


def sample_log_gamma(alpha: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """log X for X ~ Gamma(α, 1), float32, on ``generator``'s device.

    Marsaglia & Tsang (2000): d = α − 1/3, c = 1/√(9d); x ~ N(0, 1),
    v = (1 + cx)³, u ~ U(0, 1); accept d·v when v > 0 and
    log u < x²/2 + d − dv + d log v. Vectorised with a fixed number of tries
    per sample (the first accepted one is kept), so no host sync and a fixed
    number of draws. For α < 1: Gamma(α) = Gamma(α + 1) · U^(1/α), kept in log
    space so that tiny α does not underflow.
    """
    if not alpha > 0:
        raise ValueError(f"Gamma shape alpha must be > 0, got {alpha}")
    dev = generator.device
    a = alpha + 1.0 if alpha < 1 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn((_GAMMA_ROUNDS, *shape), generator=generator, device=dev)  # R x shape
    u = torch.rand((_GAMMA_ROUNDS, *shape), generator=generator, device=dev)  # R x shape
    v = (1.0 + c * x) ** 3  # R x shape
    log_v = torch.log(v.clamp_min(1e-30))
    ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)  # R x shape
    first = ok.to(torch.uint8).argmax(0, keepdim=True)  # 1 x shape: first accepted try
    log_g = math.log(d) + log_v.gather(0, first).squeeze(0)  # shape
    log_g = torch.where(ok.any(0), log_g, torch.full_like(log_g, math.log(d)))  # never in practice
    if alpha < 1:
        u2 = torch.rand(shape, generator=generator, device=dev)  # shape
        log_g = log_g + torch.log(u2.clamp_min(1e-38)) / alpha
    return log_g


def sample_beta(alpha: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Beta(α, α) samples in [0, 1] as X / (X + Y) = sigmoid(log X − log Y), X, Y ~ Gamma(α)."""
    log_x = sample_log_gamma(alpha, shape, generator)
    log_y = sample_log_gamma(alpha, shape, generator)
    return torch.sigmoid(log_x - log_y)


@dataclass
class FeatureTransform:
    """The FT settings of one method, and the draws they imply.

    ``granularity``: ``"batch"`` draws one scalar per step (the authors'
    default), ``"sample"`` one per row ((N, 1)), ``"dim"`` one per entry
    ((N, d); the authors' option "dim_mask"). ``lambda_pos`` replaces the
    Beta draw of λ_ex with a fixed value ≥ 1. ``renormalize`` L2-normalises
    the mixed features again (the authors do not). FT applies from
    ``start_epoch`` on.
    """

    extrapolate: bool = False
    interpolate: bool = False
    alpha_pos: float = 2.0
    alpha_neg: float = 1.6
    lambda_pos: float | None = None
    granularity: str = "batch"
    renormalize: bool = False
    start_epoch: float = 0.0

    def __post_init__(self) -> None:
        check_ft(self)  # the checks and messages of method.ft in a config

    @classmethod
    def from_config(cls, settings: Any) -> FeatureTransform:
        """From ``cfg.method.ft`` (a :class:`~selfsup.config.FTConfig`: the same fields)."""
        return cls(**dataclasses.asdict(settings))

    @property
    def enabled(self) -> bool:
        return self.extrapolate or self.interpolate

    def active(self, epoch: float) -> bool:
        """Whether FT applies at ``epoch`` (a float: step / steps per epoch)."""
        return self.enabled and epoch >= self.start_epoch

    def _shape(self, x: Tensor) -> tuple[int, ...]:
        n, d = x.shape
        return {"batch": (), "sample": (n, 1), "dim": (n, d)}[self.granularity]

    def draw_lambda_pos(self, q: Tensor, generator: torch.Generator) -> Tensor:
        """λ_ex = 1 + Beta(α_pos, α_pos) (or the fixed ``lambda_pos``): (), (N, 1) or (N, d)."""
        shape = self._shape(q)
        if self.lambda_pos is not None:
            return torch.full(shape, self.lambda_pos, dtype=q.dtype, device=q.device)
        lam = 1.0 + sample_beta(self.alpha_pos, shape, generator)
        return lam.to(device=q.device, dtype=q.dtype)

    def draw_lambda_neg(self, negatives: Tensor, generator: torch.Generator) -> Tensor:
        """λ_in ~ Beta(α_neg, α_neg): (), (K, 1) or (K, d)."""
        mu = sample_beta(self.alpha_neg, self._shape(negatives), generator)
        return mu.to(device=negatives.device, dtype=negatives.dtype)

    @staticmethod
    def draw_perm(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """A fresh random permutation of ``n`` rows: (n,) long on ``device``."""
        return torch.randperm(n, generator=generator, device=generator.device).to(device)

    def positives(self, q: Tensor, k: Tensor, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
        """Extrapolated (q_hat, k_hat) with a fresh λ_ex; (N, d) each."""
        q_hat, k_hat = extrapolate_positives(q, k, self.draw_lambda_pos(q, generator))
        if self.renormalize:
            q_hat, k_hat = F.normalize(q_hat, dim=1), F.normalize(k_hat, dim=1)
        return q_hat, k_hat

    def negatives(self, negatives: Tensor, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
        """``(mixed, perm)``: interpolated negatives (K, d) and the permutation used (K,)."""
        mu = self.draw_lambda_neg(negatives, generator)
        perm = self.draw_perm(negatives.shape[0], generator, negatives.device)  # K
        mixed = interpolate_negatives(negatives, mu, perm)  # K x d
        if self.renormalize:
            mixed = F.normalize(mixed, dim=1)
        return mixed, perm

