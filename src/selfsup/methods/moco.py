"""MoCo v1 / v2: a query encoder, a momentum key encoder and a queue of negative keys.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR 2020 (arXiv 1911.05722): "we maintain the
dictionary as a queue of data samples ... the encoded keys of the current
mini-batch are enqueued, and the oldest are removed", and "the keys in the
queue are encoded by a slowly progressing encoder": θ_k ← m θ_k + (1 − m) θ_q.
Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive
Learning" (arXiv 2003.04297): MoCo v2 = v1 + an MLP head, blur, cosine lr, τ = 0.2.

The module follows the reference code (facebookresearch/moco ``builder.py``)
with these differences, each for a reason:

- The key encoder is a :class:`~selfsup.methods.momentum.MomentumEncoder`
  (``encoder_k``) and the queue a :class:`~selfsup.methods.queue.KeyQueue`
  (``dictionary``), shared with SimCLR v2's memory.
- The EMA update runs in :meth:`MoCo.after_step`, which the loop calls after
  ``optimizer.step()``; the builder runs it at the start of ``forward``,
  before computing the keys. The update after step t is the update the builder
  makes at the start of step t + 1, so the keys are the same; the builder's
  update before the very first step is a no-op because the key encoder starts
  as an exact copy (``copy.deepcopy``) of the query encoder.
- Like the builder, only parameters are averaged; the key encoder's BN
  buffers evolve from its own forward passes in train mode.
- ``symmetric``: the loss is the mean of ctr(q1, k2) and ctr(q2, k1), and both
  key batches are enqueued (as the MoCo CIFAR-10 demo does; it *sums* the two
  losses, which only scales the learning rate by 2). K must then hold 2 x the
  global batch.
- ``temperature`` None is MoCo v2's τ = 0.2 (the reference code's ``--moco-t 0.2``).

Feature Transformation (Zhu et al., ICCV 2021, arXiv 2108.02982), optional
(``ft``): the normalised pair (q, k+) is extrapolated and a clone of the queue
is interpolated with a fresh permutation of itself, for this step's loss
only; the queue is refilled with the original, un-mixed keys. In symmetric
mode each direction draws its own λ_ex, λ_in and permutation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config import Config
from selfsup.config.method_checks import check_shuffle_bn, check_temperature
from selfsup.distributed import is_distributed, world_size
from selfsup.errors import ConfigError
from selfsup.losses.infonce import info_nce_logits
from selfsup.methods.base import Method
from selfsup.methods.feature_transform import FeatureTransform
from selfsup.methods.momentum import KeyEncoderViews, MomentumEncoder
from selfsup.methods.queue import KeyQueue
from selfsup.methods.registry import register_method
from selfsup.methods.score_stats import score_stats
from selfsup.methods.shuffle_bn import ddp_key_forward, grouped_key_forward
from selfsup.models import ProjectionHead

TEMPERATURE = 0.2  # MoCo v2 (Chen et al. 2020): τ = 0.2
# state-dict names of earlier versions (key encoder and queue were attributes of the method)
RENAMED_STATE = {"backbone_k.": "encoder_k.encoder.backbone.",
                 "head_k.": "encoder_k.encoder.head.",
                 "queue": "dictionary.queue", "queue_ptr": "dictionary.ptr"}


class MoCo(KeyEncoderViews, Method):
    """Query encoder (``backbone``, ``head``), key encoder (``backbone_k``, ``head_k``), queue.

    ``forward(views)`` takes two views (query, key) and returns ``(loss, metrics)``
    with metrics ``loss`` and :func:`score_stats` of this step's scores: ``pos_sim``
    (mean q·k+), ``neg_sim`` (mean q·queue), ``neg_var`` (variance of the q·queue
    scores) and ``pos_hist`` / ``neg_hist`` (``score_bins`` bins over [-1, 1]): the
    score monitor of Zhu et al. (ICCV 2021), read from the scores the loss already
    computed, i.e. after FT when FT applies (extrapolated q̂·k̂, q̂·mixed queue).

    ``ft``: Feature Transformation settings (off by default); it applies in
    training mode from ``ft.start_epoch`` on, reading :attr:`epoch` (the loop's
    :meth:`set_epoch` before each step) and drawing from :attr:`generator` (the run's
    seeded generator; if None, a private one seeded 0 is made on first use).

    ``shuffle_bn``: ``"ddp"`` shuffles the key batch across ranks, ``"groups"``
    computes the key encoder's BN statistics per group of ``bn_groups`` (one
    device), ``"auto"`` picks ddp under a process group and groups otherwise,
    ``"off"`` is plain BN (the positive can then leak through BN statistics).
    """

    renamed_state = RENAMED_STATE  # checkpoints of earlier versions: backbone_k., queue, ...

    def __init__(self, backbone: nn.Module, head: nn.Module, *,
                 temperature: float | None = None, momentum: float, queue_size: int,
                 symmetric: bool = False, momentum_schedule: str = "constant",
                 shuffle_bn: str = "auto", bn_groups: int = 8, out_dim: int | None = None,
                 ft: FeatureTransform | None = None, score_bins: int = 40) -> None:
        super().__init__()
        check_temperature(temperature)
        check_shuffle_bn(shuffle_bn, bn_groups)
        out_dim = out_dim if out_dim is not None else getattr(head, "out_dim", None)
        if out_dim is None:
            raise ConfigError("MoCo needs out_dim (the head's output size) for the queue")
        self.backbone, self.head = backbone, head  # f_q = head ∘ backbone
        # f_k: "initialised as the query encoder", then θ_k ← m θ_k + (1 − m) θ_q, no gradient
        self.encoder_k = MomentumEncoder(self.encoder_q, momentum, momentum_schedule)
        self.dictionary = KeyQueue(queue_size, out_dim)  # K x d normalised keys, FIFO
        self.T = TEMPERATURE if temperature is None else float(temperature)
        self.symmetric = bool(symmetric)
        self.shuffle_bn, self.bn_groups = shuffle_bn, int(bn_groups)
        self.ft = ft if ft is not None else FeatureTransform()
        self.score_bins = int(score_bins)

    # -- the two encoders and the queue (MoCo's names: KeyEncoderViews) ----------------
    @property
    def momentum_schedule(self) -> str:
        return self.encoder_k.schedule

    def momentum_at(self, step: int, total_steps: int) -> float:
        """m for the update after ``step``: constant, or rising to 1 on a half cosine."""
        return self.encoder_k.momentum_at(step, total_steps)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Momentum update of the key encoder; the loop calls it after ``optimizer.step()``."""
        self.encoder_k.update(self.encoder_q, step, total_steps)

    # -- checks -----------------------------------------------------------------------
    def check_batch_size(self, batch: int) -> None:
        """ConfigError when one step's keys (global batch, x2 if symmetric) overflow the queue."""
        global_batch = batch * world_size()
        if self.symmetric:
            self.dictionary.check_room(2 * global_batch, f"2 x the global batch {global_batch}")
        else:
            self.dictionary.check_room(global_batch, f"the global batch {global_batch}")

    def check_dataset_size(self, n_images: int) -> None:
        """Warn when the queue holds more keys than there are images (repeats as negatives)."""
        self.dictionary.check_dataset_size(n_images)

    def _shuffle_mode(self) -> str:
        mode = self.shuffle_bn
        if mode == "auto":
            mode = "ddp" if world_size() > 1 else "groups"
        if mode == "ddp" and not is_distributed():
            raise ConfigError("method.moco.shuffle_bn 'ddp' needs a process group (torchrun); "
                              "use 'auto' or 'groups' on one process")
        return mode

    # -- the step ---------------------------------------------------------------------
    @torch.no_grad()
    def _keys(self, im_k: Tensor) -> Tensor:
        """Keys of ``im_k`` (N x d, normalised) with shuffled BN; no gradient."""
        mode = self._shuffle_mode() if self.training else "off"
        if mode == "ddp":
            k = ddp_key_forward(self.encoder_k, im_k)  # N x d
        elif mode == "groups":
            k = grouped_key_forward(self.encoder_k, im_k, self.bn_groups)  # N x d
        else:
            k = self.encoder_k(im_k)  # N x d
        return F.normalize(k, dim=1)  # N x d

    def _contrast(self, im_q: Tensor, k: Tensor, queue: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q = F.normalize(self.head(self.backbone(im_q)), dim=1)  # N x d
        if self.training and self.ft.active(self.epoch):
            gen = self._generator(q.device)
            if self.ft.extrapolate:  # hard positives: q̂ = λq + (1-λ)k, k̂ = λk + (1-λ)q
                q, k = self.ft.positives(q, k.to(q.dtype), gen)  # N x d, N x d
            if self.ft.interpolate:  # diverse negatives: a mixed copy of the queue
                queue, _ = self.ft.negatives(queue, gen)  # K x d
        return info_nce_logits(q, k, queue, self.T, normalize=False)  # [], N, N x K

    def forward(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if len(views) != 2:
            raise ValueError(f"MoCo takes 2 views (query, key), got {len(views)}")
        im_q, im_k = views
        if self.training:
            self.check_batch_size(im_q.shape[0])
        queue = self.dictionary.snapshot()  # K x d; the enqueue below must not touch it
        k2 = self._keys(im_k)  # N x d
        loss, l_pos, l_neg = self._contrast(im_q, k2, queue)  # [], N, N x K
        keys = k2
        if self.symmetric:
            k1 = self._keys(im_q)  # N x d
            loss_21, l_pos_21, l_neg_21 = self._contrast(im_k, k1, queue)
            loss = (loss + loss_21) / 2
            l_pos, l_neg = torch.cat([l_pos, l_pos_21]), torch.cat([l_neg, l_neg_21])  # 2N, 2N x K
            keys = torch.cat([k1, k2])  # 2N x d
        if self.training:
            self.dictionary.enqueue(keys)  # the un-mixed keys
        return loss, {"loss": loss.detach(), **score_stats(l_pos, l_neg, self.score_bins)}

    def extra_repr(self) -> str:
        return (f"K={self.K}, m={self.m}, T={self.T}, symmetric={self.symmetric}, "
                f"momentum_schedule={self.momentum_schedule!r}, shuffle_bn={self.shuffle_bn!r}, "
                f"bn_groups={self.bn_groups}, ft={self.ft}")



@register_method("moco")
def build_moco(cfg: Config, backbone: nn.Module) -> Method:
    """MoCo v1 (``model.head_layers: 1``, a linear fc) or v2 (2: Linear-ReLU-Linear, no BN)."""
    m, me, mo = cfg.model, cfg.method, cfg.method.moco
    d = backbone.feature_dim
    head = ProjectionHead(d, m.head_hidden or d, m.out_dim, num_layers=m.head_layers,
                          hidden_bn=False)
    return MoCo(backbone, head, temperature=me.temperature, momentum=mo.momentum,
                queue_size=mo.queue_size, symmetric=mo.symmetric,
                momentum_schedule=mo.momentum_schedule, shuffle_bn=mo.shuffle_bn,
                bn_groups=mo.bn_groups, out_dim=m.out_dim,
                ft=FeatureTransform.from_config(me.ft), score_bins=cfg.run.score_bins)
