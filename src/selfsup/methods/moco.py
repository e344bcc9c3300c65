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

- The EMA update runs in :meth:`MoCo.after_step`, which the loop calls after
  ``optimizer.step()``; the builder runs it at the start of ``forward``,
  before computing the keys. The update after step t is the update the builder
  makes at the start of step t + 1, so the keys are the same; the builder's
  update before the very first step is a no-op because the key encoder starts
  as an exact copy (``copy.deepcopy``) of the query encoder.
- Like the builder, only parameters are averaged; the key encoder's BN
  buffers evolve from its own forward passes in train mode.
- The queue is (K, d) and written with wrap-around indices on the device, so K
  need not be a multiple of the batch and no host sync (``int(queue_ptr)``) occurs.
- ``symmetric``: the loss is the mean of ctr(q1, k2) and ctr(q2, k1), and both
  key batches are enqueued (as the MoCo CIFAR-10 demo does; it *sums* the two
  losses, which only scales the learning rate by 2). K must then hold 2 x the
  global batch.

Feature Transformation (Zhu et al., ICCV 2021, arXiv 2108.02982), optional
(``ft``): the normalised pair (q, k+) is extrapolated and a clone of the queue
is interpolated with a fresh permutation of itself, for this step's loss
only; the queue is refilled with the original, un-mixed keys. In symmetric
mode each direction draws its own λ_ex, λ_in and permutation.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.distributed import gather, is_distributed, world_size
from selfsup.errors import ConfigError
from selfsup.losses.infonce import info_nce_logits
from selfsup.methods.feature_transform import FeatureTransform, private_generator
from selfsup.methods.score_stats import score_stats
from selfsup.methods.shuffle_bn import ddp_key_forward, grouped_key_forward
from selfsup.train.schedule import cosine_momentum

SHUFFLE_BN = ("auto", "ddp", "groups", "off")


class MoCo(nn.Module):
    """Query encoder (``backbone``, ``head``), key encoder (``backbone_k``, ``head_k``), queue.

    ``forward(views)`` takes two views (query, key) and returns ``(loss, metrics)``
    with metrics ``loss`` and :func:`score_stats` of this step's scores: ``pos_sim``
    (mean q·k+), ``neg_sim`` (mean q·queue), ``neg_var`` (variance of the q·queue
    scores) and ``pos_hist`` / ``neg_hist`` (``score_bins`` bins over [-1, 1]): the
    score monitor of Zhu et al. (ICCV 2021), read from the scores the loss already
    computed, i.e. after FT when FT applies (extrapolated q̂·k̂, q̂·mixed queue).

    ``ft``: Feature Transformation settings (off by default); it applies in
    training mode from ``ft.start_epoch`` on, reading :attr:`epoch` (set by
    the loop before each step) and drawing from :attr:`generator` (the run's
    seeded generator; if None, a private one seeded 0 is made on first use).

    ``shuffle_bn``: ``"ddp"`` shuffles the key batch across ranks, ``"groups"``
    computes the key encoder's BN statistics per group of ``bn_groups`` (one
    device), ``"auto"`` picks ddp under a process group and groups otherwise,
    ``"off"`` is plain BN (the positive can then leak through BN statistics).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, temperature: float,
                 momentum: float, queue_size: int, symmetric: bool = False,
                 momentum_schedule: str = "constant", shuffle_bn: str = "auto",
                 bn_groups: int = 8, out_dim: int | None = None,
                 ft: FeatureTransform | None = None, score_bins: int = 40) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"method.momentum must be in [0, 1], got {momentum}")
        if isinstance(queue_size, bool) or int(queue_size) != queue_size or queue_size < 1:
            raise ConfigError(f"method.queue_size must be an integer >= 1, got {queue_size}")
        if momentum_schedule not in ("constant", "cosine"):
            raise ConfigError(f"method.momentum_schedule must be constant or cosine, "
                              f"got {momentum_schedule!r}")
        if shuffle_bn not in SHUFFLE_BN:
            raise ConfigError(f"method.shuffle_bn must be one of {', '.join(SHUFFLE_BN)}, "
                              f"got {shuffle_bn!r}")
        if bn_groups < 1:
            raise ConfigError(f"method.bn_groups must be >= 1, got {bn_groups}")
        out_dim = out_dim if out_dim is not None else getattr(head, "out_dim", None)
        if out_dim is None:
            raise ConfigError("MoCo needs out_dim (the head's output size) for the queue")
        self.backbone, self.head = backbone, head  # f_q = head ∘ backbone
        # "the key encoder ... initialised as the query encoder": exact copies, no gradient
        self.backbone_k, self.head_k = copy.deepcopy(backbone), copy.deepcopy(head)
        for p in self._params_k():
            p.requires_grad_(False)
        self.T, self.m, self.K = float(temperature), float(momentum), int(queue_size)
        self.symmetric, self.momentum_schedule = bool(symmetric), momentum_schedule
        self.shuffle_bn, self.bn_groups = shuffle_bn, int(bn_groups)
        # the queue of normalised keys: K x d, and the position of its oldest entry
        self.register_buffer("queue", F.normalize(torch.randn(self.K, out_dim), dim=1))  # K x d
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))  # 1
        self.ft = ft if ft is not None else FeatureTransform()
        self.score_bins = int(score_bins)
        self.generator: torch.Generator | None = None  # the loop sets the run's generator
        self.epoch: float = 0.0  # the loop sets step / steps_per_epoch before each step

    # -- the two encoders -------------------------------------------------------------
    @property
    def encoder_q(self) -> nn.Sequential:
        """f_q as one module (a view of ``backbone`` and ``head``; nothing is copied)."""
        return nn.Sequential(self.backbone, self.head)

    @property
    def encoder_k(self) -> nn.Sequential:
        """f_k as one module (a view of ``backbone_k`` and ``head_k``)."""
        return nn.Sequential(self.backbone_k, self.head_k)

    def _params_q(self) -> list[Tensor]:
        return [*self.backbone.parameters(), *self.head.parameters()]

    def _params_k(self) -> list[Tensor]:
        return [*self.backbone_k.parameters(), *self.head_k.parameters()]

    def _encode_k(self, x: Tensor) -> Tensor:
        return self.head_k(self.backbone_k(x))

    # -- state updates ----------------------------------------------------------------
    def momentum_at(self, step: int, total_steps: int) -> float:
        """m for the update after ``step``: constant, or rising to 1 on a half cosine."""
        if self.momentum_schedule == "cosine":
            return cosine_momentum(step, total_steps, self.m)
        return self.m

    @torch.no_grad()
    def _momentum_update_key_encoder(self, m: float) -> None:
        """θ_k ← m θ_k + (1 − m) θ_q, i.e. ``lerp(θ_k, θ_q, 1 − m)`` (one fused call)."""
        torch._foreach_lerp_(self._params_k(), self._params_q(), 1.0 - m)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Momentum update of the key encoder; the loop calls it after ``optimizer.step()``."""
        self._momentum_update_key_encoder(self.momentum_at(step, total_steps))

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: Tensor) -> None:
        """Write the global batch of keys over the oldest entries (FIFO, wrapping around)."""
        keys = gather(keys)  # B x d, B = world * keys per rank
        batch_size = keys.shape[0]
        idx = (self.queue_ptr + torch.arange(batch_size, device=keys.device)) % self.K  # B
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))  # K x d
        self.queue_ptr.add_(batch_size).remainder_(self.K)  # move pointer

    # -- checks -----------------------------------------------------------------------
    def check_batch_size(self, batch: int) -> None:
        """ConfigError when one step's keys (global batch, x2 if symmetric) overflow the queue."""
        global_batch = batch * world_size()
        per_step = global_batch * (2 if self.symmetric else 1)
        if self.K < per_step:
            what = f"2 x the global batch {global_batch}" if self.symmetric else (
                f"the global batch {global_batch}")
            raise ConfigError(f"method.queue_size K={self.K} is smaller than {what} "
                              f"(train.batch_size); K must hold one step's {per_step} keys")

    def check_dataset_size(self, n_images: int) -> None:
        """Warn when the queue holds more keys than there are images (repeats as negatives)."""
        if self.K > n_images:
            warnings.warn(f"method.queue_size K={self.K} exceeds the {n_images} training images: "
                          "the queue holds older keys of the current images, which act as "
                          "false negatives; use a smaller queue_size", stacklevel=2)

    def _shuffle_mode(self) -> str:
        mode = self.shuffle_bn
        if mode == "auto":
            mode = "ddp" if world_size() > 1 else "groups"
        if mode == "ddp" and not is_distributed():
            raise ConfigError("method.shuffle_bn 'ddp' needs a process group (torchrun); "
                              "use 'auto' or 'groups' on one process")
        return mode

    # -- the step ---------------------------------------------------------------------
    @torch.no_grad()
    def _keys(self, im_k: Tensor) -> Tensor:
        """Keys of ``im_k`` (N x d, normalised) with shuffled BN; no gradient."""
        mode = self._shuffle_mode() if self.training else "off"
        if mode == "ddp":
            k = ddp_key_forward(self._encode_k, im_k)  # N x d
        elif mode == "groups":
            k = grouped_key_forward(self._encode_k, im_k, self.bn_groups)  # N x d
        else:
            k = self._encode_k(im_k)  # N x d
        return F.normalize(k, dim=1)  # N x d

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.generator is None:
            self.generator = private_generator(device)
        return self.generator

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
        queue = self.queue.clone().detach()  # K x d; the enqueue below must not touch it
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
            self._dequeue_and_enqueue(keys)
        return loss, {"loss": loss.detach(), **score_stats(l_pos, l_neg, self.score_bins)}

    def extra_repr(self) -> str:
        return (f"K={self.K}, m={self.m}, T={self.T}, symmetric={self.symmetric}, "
                f"momentum_schedule={self.momentum_schedule!r}, shuffle_bn={self.shuffle_bn!r}, "
                f"bn_groups={self.bn_groups}, ft={self.ft}")

