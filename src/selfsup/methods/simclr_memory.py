"""SimCLR v2's optional MoCo-style memory: NT-Xent with extra negatives from a queue.

Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are
Strong Semi-Supervised Learners" (arXiv 2006.10029), §2: "we also
incorporate the memory mechanism from MoCo, which designates a memory
network (with a moving average of weights for stabilization) whose output
will be buffered as negative examples"; it gives about +1 % on ImageNet.

The positives and in-batch negatives are SimCLR's (both views through the
online encoder, with gradient); every anchor also meets the K keys of the
queue. The momentum encoder encodes both views of the batch after the loss
and the 2N keys are enqueued, so K must hold two global batches. The
momentum network, its EMA (after the optimiser step) and the FIFO queue are
MoCo's own (:class:`~selfsup.methods.moco.MoCo`); no shuffle BN is needed,
as this step's keys are never its positives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.ntxent import nt_xent
from selfsup.methods.moco import MoCo
from selfsup.methods.score_stats import score_stats


class SimCLRMemory(MoCo):
    """Backbone f, head g, NT-Xent at τ over the batch plus a queue of momentum keys."""

    def __init__(self, backbone: nn.Module, head: nn.Module, *, temperature: float,
                 momentum: float, queue_size: int, momentum_schedule: str = "constant",
                 out_dim: int | None = None, score_bins: int = 40) -> None:
        # symmetric=True: K is checked against the 2N keys enqueued per step
        super().__init__(backbone, head, temperature=temperature, momentum=momentum,
                         queue_size=queue_size, symmetric=True,
                         momentum_schedule=momentum_schedule, shuffle_bn="off",
                         out_dim=out_dim, score_bins=score_bins)

    @property
    def temperature(self) -> float:
        return self.T

    def forward(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if len(views) != 2:
            raise ValueError(f"SimCLR takes 2 views, got {len(views)}")
        n = views[0].shape[0]
        if self.training:
            self.check_batch_size(n)
        x = torch.cat(views)  # 2N x C x H x W
        z = F.normalize(self.head(self.backbone(x)), dim=1)  # 2N x d
        queue = self.queue.clone().detach()  # K x d; the enqueue below must not touch it
        loss = nt_xent(z[:n], z[n:], self.T, normalize=False, negatives=queue)
        with torch.no_grad():
            zd = z.detach().float()
            l_pos = (zd[:n] * zd[n:]).sum(1).repeat(2)  # 2N: both anchors of each pair
            l_neg = zd @ queue.float().T  # 2N x K: the memory's scores
            if self.training:
                self._dequeue_and_enqueue(F.normalize(self._encode_k(x), dim=1))  # 2N keys
        return loss, {"loss": loss.detach(), **score_stats(l_pos, l_neg, self.score_bins)}

    def extra_repr(self) -> str:
        return (f"K={self.K}, m={self.m}, T={self.T}, "
                f"momentum_schedule={self.momentum_schedule!r}")
