"""SimCLR: two augmented views, a projection head and NT-Xent.

Chen, Kornblith, Norouzi, Hinton, ICML 2020 (arXiv 2002.05709). "We use
h_i = f(x_i) ... after the average pooling layer" as the representation and
"z_i = g(h_i)" only for the loss (§2.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses import nt_xent


class SimCLR(nn.Module):
    """Backbone f, head g and NT-Xent at temperature τ; returns ``(loss, metrics)``.

    Both views go through the backbone as one batch of 2N images, so batch
    norm sees the whole batch (one call, fewer kernel launches).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, temperature: float = 0.5) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.backbone = backbone
        self.head = head
        self.temperature = temperature

    def forward(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if len(views) != 2:
            raise ValueError(f"SimCLR takes 2 views, got {len(views)}")
        n = views[0].shape[0]
        h = self.backbone(torch.cat(views))  # 2N x D
        z = self.head(h)  # 2N x d
        z1, z2 = z[:n], z[n:]
        loss = nt_xent(z1, z2, self.temperature)
        return loss, _pair_scores(z1.detach(), z2.detach(), loss.detach())


@torch.no_grad()
def _pair_scores(z1: Tensor, z2: Tensor, loss: Tensor) -> dict[str, Tensor]:
    """Mean positive and negative cosine scores of the batch (device tensors, no sync)."""
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    pos = (z1 * z2).sum(1).mean()
    s = z1 @ z2.T  # N x N; off-diagonal entries are cross-view negatives
    n = s.shape[0]
    neg = (s.sum() - s.diagonal().sum()) / max(n * (n - 1), 1)
    return {"loss": loss, "pos_sim": pos, "neg_sim": neg}
