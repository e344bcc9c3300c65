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
momentum network and its EMA (after the optimiser step) are a
:class:`~selfsup.methods.momentum.MomentumEncoder`, the FIFO queue a
:class:`~selfsup.methods.queue.KeyQueue`, as in MoCo; no shuffle BN is
needed, as this step's keys are never its positives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config.method_checks import check_temperature
from selfsup.distributed import world_size
from selfsup.errors import ConfigError
from selfsup.losses.ntxent import nt_xent_scores
from selfsup.methods.base import Method
from selfsup.methods.moco import RENAMED_STATE
from selfsup.methods.momentum import KeyEncoderViews, MomentumEncoder
from selfsup.methods.queue import KeyQueue
from selfsup.methods.score_stats import score_stats
from selfsup.methods.simclr import TEMPERATURE


class SimCLRMemory(KeyEncoderViews, Method):
    """Backbone f, head g, NT-Xent at τ over the batch plus a queue of momentum keys.

    ``encoder_k``: the momentum copy of (f, g); ``dictionary``: the K keys.
    ``temperature`` None: SimCLR's 0.5.
    """

    renamed_state = RENAMED_STATE  # it was a MoCo subclass: MoCo's earlier names

    def __init__(self, backbone: nn.Module, head: nn.Module, *,
                 temperature: float | None = None, momentum: float, queue_size: int,
                 momentum_schedule: str = "constant", out_dim: int | None = None,
                 score_bins: int = 40) -> None:
        super().__init__()
        check_temperature(temperature)
        out_dim = out_dim if out_dim is not None else getattr(head, "out_dim", None)
        if out_dim is None:
            raise ConfigError("SimCLRMemory needs out_dim (the head's output size) for the queue")
        self.backbone, self.head = backbone, head
        self.encoder_k = MomentumEncoder(self.encoder_q, momentum, momentum_schedule)
        self.dictionary = KeyQueue(queue_size, out_dim)
        self.temperature = TEMPERATURE if temperature is None else float(temperature)
        self.score_bins = int(score_bins)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Momentum update of the memory network, after ``optimizer.step()``."""
        self.encoder_k.update(self.encoder_q, step, total_steps)

    def check_dataset_size(self, n: int) -> None:
        self.dictionary.check_dataset_size(n)

    def forward(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if len(views) != 2:
            raise ValueError(f"SimCLR takes 2 views, got {len(views)}")
        n = views[0].shape[0]
        if self.training:
            b = n * world_size()
            self.dictionary.check_room(2 * b, f"2 x the global batch {b}")
        x = torch.cat(views)  # 2N x C x H x W
        z = F.normalize(self.head(self.backbone(x)), dim=1)  # 2N x d
        queue = self.dictionary.snapshot()  # K x d; the enqueue below must not touch it
        loss, scores, _, pos_idx = nt_xent_scores(z[:n], z[n:], self.temperature,
                                                  normalize=False, negatives=queue)
        with torch.no_grad():  # the statistics read the loss's own product: no second 2N x K
            s = scores.detach().float()  # 2N x (2M + K)
            l_pos = s[torch.arange(s.shape[0], device=s.device), pos_idx]  # 2N
            l_neg = s[:, s.shape[1] - queue.shape[0]:]  # 2N x K: the memory's scores
            if self.training:
                self.dictionary.enqueue(F.normalize(self.encoder_k(x), dim=1))  # 2N keys
        return loss, {"loss": loss.detach(), **score_stats(l_pos, l_neg, self.score_bins)}

    def extra_repr(self) -> str:
        return f"T={self.temperature}"
