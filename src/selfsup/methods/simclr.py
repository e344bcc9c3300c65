"""SimCLR: two augmented views, a projection head and NT-Xent.

Chen, Kornblith, Norouzi, Hinton, ICML 2020 (arXiv 2002.05709). "We use
h_i = f(x_i) ... after the average pooling layer" as the representation and
"z_i = g(h_i)" only for the loss (§2.1).

Feature Transformation (Zhu et al., ICCV 2021, arXiv 2108.02982) is optional
(``ft``). Its negatives in SimCLR are the other views of the batch, so the
NT-Xent logits are built here (:func:`nt_xent_ft`) instead of by
:func:`~selfsup.losses.nt_xent`; with FT off (or before ``ft.start_epoch``)
the plain ``nt_xent`` is called, so the loss is unchanged bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config import Config
from selfsup.config.method_checks import check_temperature
from selfsup.losses.ntxent import candidates, loss_from_scores, nt_xent_scores
from selfsup.methods.base import Method
from selfsup.methods.feature_transform import FeatureTransform
from selfsup.methods.registry import register_method
from selfsup.methods.score_stats import drop_two_columns, score_stats
from selfsup.models import ProjectionHead

TEMPERATURE = 0.5  # SimCLR's default τ (Chen et al. 2020, §B.9: 0.5 on CIFAR-10)


def nt_xent_ft(z1: Tensor, z2: Tensor, temperature: float, ft: FeatureTransform,
               generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, l_pos, l_neg)``: NT-Xent over 2N anchors with FT on normalised ``z1, z2`` (N, d).

    What is mixed (the loss formula is that of ``nt_xent``):

    - extrapolation (``ft.extrapolate``): each pair (z1_i, z2_i) becomes
      (ẑ1_i, ẑ2_i) = extrapolate_positives(z1, z2, λ_ex). The anchors and their
      positives are the extrapolated views, so the positive score is ẑ1_i·ẑ2_i
      (as q̂·k̂ in MoCo); the negatives are built from the un-extrapolated views.
    - interpolation (``ft.interpolate``): the candidate set z_all (the 2M
      normalised views, M = world x N) is mixed with a fresh permutation of
      itself, ẑ_all = λ_in z_all + (1 − λ_in) z_all[perm], and ẑ_all[j] is the
      negative at column j. The positive column keeps the un-mixed positive
      score, the self column stays excluded. Where perm[j] is the anchor or its
      positive, the negative j is left un-mixed (z_all[j]): no negative holds a
      part of the anchor's own image.

    ``l_pos`` (2N,) and ``l_neg`` (2N, 2M − 2) are the scores the loss uses,
    before /τ: cosines when no FT is applied or with ``ft.renormalize``.
    """
    n = z1.shape[0]
    z_all, self_idx, pos_idx = candidates(z1, z2)  # 2M x d, 2N, 2N
    anchors, partners = torch.cat([z1, z2]), torch.cat([z2, z1])  # 2N x d each
    if ft.extrapolate:
        z1_hat, z2_hat = ft.positives(z1, z2, generator)  # N x d each
        anchors, partners = torch.cat([z1_hat, z2_hat]), torch.cat([z2_hat, z1_hat])  # 2N x d
    l_pos = torch.einsum("nc,nc->n", anchors, partners)  # 2N
    rows = torch.arange(2 * n, device=z1.device)  # 2N
    if ft.interpolate:
        mixed, perm = ft.negatives(z_all, generator)  # 2M x d, 2M
        scores = torch.einsum("nc,mc->nm", anchors, mixed)  # 2N x 2M
        inv = torch.argsort(perm)  # inv[perm[j]] = j: the column mixed with candidate perm[j]
        for own in (self_idx, pos_idx):  # columns whose mix partner is the anchor's image
            col = inv[own]  # 2N
            plain = torch.einsum("nc,nc->n", anchors, z_all[col])  # 2N: un-mixed negative
            scores = scores.index_put((rows, col), plain)
    else:
        scores = torch.einsum("nc,mc->nm", anchors, z_all)  # 2N x 2M
    scores = scores.index_put((rows, pos_idx), l_pos)  # 2N x 2M: the un-mixed positive
    l_neg = drop_two_columns(scores, self_idx, pos_idx)  # 2N x 2(M-1)
    return loss_from_scores(scores, self_idx, pos_idx, temperature), l_pos, l_neg


class SimCLR(Method):
    """Backbone f, head g and NT-Xent at temperature τ; returns ``(loss, metrics)``.

    Both views go through the backbone as one batch of 2N images, so batch
    norm sees the whole batch (one call, fewer kernel launches).

    Metrics: ``loss`` and :func:`score_stats` (``pos_sim``, ``neg_sim``,
    ``neg_var``, ``pos_hist``, ``neg_hist``; ``score_bins`` bins) of this step's
    scores: with FT applied, the scores its loss used (l_pos (2N,), l_neg
    (2N, 2(M − 1))); with FT off, the cosines that the loss's own 2N x 2M product
    gave (:func:`~selfsup.losses.ntxent.nt_xent_scores`), no second product.

    ``ft`` applies in training mode from ``ft.start_epoch`` on, reading
    :attr:`epoch` (:meth:`set_epoch`) and drawing from :attr:`generator` (the
    run's seeded generator; if None, a private one seeded 0 on first use).
    ``temperature`` None: SimCLR's 0.5.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, temperature: float | None = None,
                 ft: FeatureTransform | None = None, score_bins: int = 40) -> None:
        super().__init__()
        check_temperature(temperature)
        self.backbone = backbone
        self.head = head
        self.temperature = TEMPERATURE if temperature is None else float(temperature)
        self.ft = ft if ft is not None else FeatureTransform()
        self.score_bins = int(score_bins)

    def forward(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if len(views) != 2:
            raise ValueError(f"SimCLR takes 2 views, got {len(views)}")
        n = views[0].shape[0]
        h = self.backbone(torch.cat(views))  # 2N x D
        z = self.head(h)  # 2N x d
        z1, z2 = z[:n], z[n:]
        if self.training and self.ft.active(self.epoch):
            if n < 2:
                raise ValueError(f"SimCLR needs at least 2 images for negatives, got N={n}")
            z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)  # N x d each
            gen = self._generator(z.device)
            loss, l_pos, l_neg = nt_xent_ft(z1, z2, self.temperature, self.ft, gen)
        else:
            loss, scores, self_idx, pos_idx = nt_xent_scores(z1, z2, self.temperature)
            l_pos, l_neg = _plain_scores(scores.detach(), self_idx, pos_idx)
        return loss, {"loss": loss.detach(), **score_stats(l_pos, l_neg, self.score_bins)}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, ft={self.ft}"


@torch.no_grad()
def _plain_scores(scores: Tensor, self_idx: Tensor, pos_idx: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine ``l_pos`` (2N,) and ``l_neg`` (2N, 2(M − 1)) from the scores ``nt_xent`` used."""
    s = scores.float()  # 2N x 2M
    rows = torch.arange(s.shape[0], device=s.device)
    return s[rows, pos_idx], drop_two_columns(s, self_idx, pos_idx)  # 2N, 2N x 2(M-1)


@register_method("simclr")
def build_simclr(cfg: Config, backbone: nn.Module) -> Method:
    """SimCLR (``model.head_layers`` 2: v1, 3: v2), with v2's memory if ``method.memory``."""
    m, me = cfg.model, cfg.method
    d = backbone.feature_dim
    head = ProjectionHead(d, m.head_hidden or d, m.out_dim, num_layers=m.head_layers)
    if me.memory:  # SimCLR v2's MoCo-style memory: MoCo's momentum and queue settings
        from selfsup.methods.simclr_memory import SimCLRMemory  # it imports this module

        mo = me.moco
        return SimCLRMemory(backbone, head, temperature=me.temperature, momentum=mo.momentum,
                            queue_size=mo.queue_size, momentum_schedule=mo.momentum_schedule,
                            out_dim=m.out_dim, score_bins=cfg.run.score_bins)
    return SimCLR(backbone, head, temperature=me.temperature,
                  ft=FeatureTransform.from_config(me.ft), score_bins=cfg.run.score_bins)
