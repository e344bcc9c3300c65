"""Value checks that types alone cannot express; each names the key and value."""

from __future__ import annotations

import re

from selfsup.config.method_checks import (
    _require,
    check_ft,
    check_jigsaw,
    check_momentum,
    check_queue_size,
    check_shuffle_bn,
    check_temperature,
)
from selfsup.config.schema import Config
from selfsup.errors import ConfigError


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express; each names the key and value."""
    t, o, m = cfg.train, cfg.optim, cfg.model
    _require(t.batch_size >= 2, f"train.batch_size must be >= 2 (negatives), got {t.batch_size}")
    _require(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    # the augmentation seed (seed * 1_000_003 + step) * 64 + rank must fit torch's int64
    _require(0 <= t.seed < 2**31, f"train.seed must be in [0, 2**31), got {t.seed}")
    _require(t.steps is None or t.steps >= 1, f"train.steps must be >= 1, got {t.steps}")
    _require(t.precision in ("auto", "bf16", "fp32"),
             f"train.precision must be auto, bf16 or fp32, got {t.precision!r}")
    _require(t.channels_last in (True, False, "auto"),
             f"train.channels_last must be auto, true or false, got {t.channels_last!r}")
    _require(t.max_time_s is None or t.max_time_s > 0,
             f"train.max_time_s must be > 0, got {t.max_time_s}")
    _require(o.lr is None or o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _require(o.base_lr > 0, f"optim.base_lr must be > 0, got {o.base_lr}")
    _require(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _require(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    _require(o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    _require(o.optimizer in ("lars", "sgd", "adamw"),
             f"optim.optimizer must be lars, sgd or adamw, got {o.optimizer!r}")
    _require(o.schedule in ("warmup_cosine", "step", "constant"),
             f"optim.schedule must be warmup_cosine, step or constant, got {o.schedule!r}")
    _require(o.lr_scaling in ("linear", "sqrt", "none"),
             f"optim.lr_scaling must be linear, sqrt or none, got {o.lr_scaling!r}")
    check_lr_bound(cfg)
    me, ft = cfg.method, cfg.method.ft
    check_temperature(me.temperature)
    check_momentum(me.moco.momentum, me.moco.momentum_schedule)
    check_queue_size(me.moco.queue_size)
    check_shuffle_bn(me.moco.shuffle_bn, me.moco.bn_groups)
    check_ft(ft)
    ft_on = ft.extrapolate or ft.interpolate
    _require(t.steps is not None or not ft_on or ft.start_epoch < t.epochs,
             f"method.ft.start_epoch {ft.start_epoch} is not before the end of the run "
             f"(train.epochs {t.epochs}): Feature Transformation would never start")
    _require(not me.memory or me.name == "simclr",
             f"method.memory is SimCLR v2's option; {me.name} has its own negatives")
    _require(not me.memory or not ft_on,
             "method.memory with Feature Transformation is not supported; turn one off")
    j = me.jigsaw
    check_jigsaw(j.permutations, j.grayscale, j.gap, j.hidden)
    _require(not j.plus or me.name == "jigsaw",
             f"method.jigsaw.plus is a Jigsaw option; method.name is {me.name!r}")
    _require(m.width > 0, f"model.width must be > 0, got {m.width}")
    _require(m.head_layers >= 1, f"model.head_layers must be >= 1, got {m.head_layers}")
    _require(m.out_dim >= 1, f"model.out_dim must be >= 1, got {m.out_dim}")
    d = cfg.data
    _require(d.size is None or d.size >= 8, f"data.size must be >= 8, got {d.size}")
    _require(d.pack_size is None or d.pack_size >= 8,
             f"data.pack_size must be >= 8, got {d.pack_size}")
    _require(d.dataset != "folder" or d.size is None or d.pack_size is None
             or d.size <= d.pack_size,
             f"data.size {d.size} is larger than data.pack_size {d.pack_size}: the stored "
             "images would be upsampled; pack at least at the training side")
    _require(d.on_device in (True, False, "auto"),
             f"data.on_device must be auto, true or false, got {d.on_device!r}")
    _require(d.pack_workers is None or d.pack_workers >= 0,
             f"data.pack_workers must be >= 0, got {d.pack_workers}")
    _require(d.verify in (True, False, "warn"),
             f"data.verify must be true, warn or false, got {d.verify!r}")
    _require(d.decoder in ("pil", "simplejpeg"),
             f"data.decoder must be pil or simplejpeg, got {d.decoder!r}")
    _require(cfg.data.limit is None or cfg.data.limit >= 2,
             f"data.limit must be >= 2, got {cfg.data.limit}")
    _require(cfg.eval.knn_k >= 1, f"eval.knn_k must be >= 1, got {cfg.eval.knn_k}")
    _require(cfg.eval.knn_temperature > 0,
             f"eval.knn_temperature must be > 0, got {cfg.eval.knn_temperature}")
    _require(cfg.eval.split in ("test", "val"),
             f"eval.split must be test or val, got {cfg.eval.split!r}")
    _require(cfg.eval.split == "test" or d.train_split == "train",
             f"eval.split val holds out part of the train split; data.train_split "
             f"{d.train_split!r} pretrains on other images too (use eval.split test)")
    _require(cfg.run.log_every >= 1, f"run.log_every must be >= 1, got {cfg.run.log_every}")
    _require(t.num_threads is None or t.num_threads >= 1,
             f"train.num_threads must be >= 1, got {t.num_threads}")
    _require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", t.device) is not None,
             f"train.device must be auto, cpu, cuda, cuda:N or mps, got {t.device!r}")
    _require(o.final_lr >= 0, f"optim.final_lr must be >= 0, got {o.final_lr}")
    _require(m.head_hidden is None or m.head_hidden >= 1,
             f"model.head_hidden must be >= 1, got {m.head_hidden}")
    _require(0 <= m.sk_ratio < 1, f"model.sk_ratio must be in [0, 1), got {m.sk_ratio}")
    _require(cfg.eval.batch_size >= 1,
             f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    _require(cfg.eval.knn_every >= -1,
             f"eval.knn_every must be >= -1 (-1: never), got {cfg.eval.knn_every}")
    _require(cfg.run.score_bins >= 1, f"run.score_bins must be >= 1, got {cfg.run.score_bins}")
    _require(cfg.run.checkpoint_steps >= 0,
             f"run.checkpoint_steps must be >= 0, got {cfg.run.checkpoint_steps}")
    _require(cfg.run.checkpoint_every >= 0,
             f"run.checkpoint_every must be >= 0, got {cfg.run.checkpoint_every}")
    _require(cfg.augment.strength >= 0,
             f"augment.strength must be >= 0, got {cfg.augment.strength}")
    _require(cfg.augment.size is None or cfg.augment.size >= 8,
             f"augment.size must be >= 8, got {cfg.augment.size}")
    cs = cfg.augment.crop_scale
    _require(cs is None or 0 < cs[0] <= cs[1] <= 1,
             f"augment.crop_scale must be [min, max] with 0 < min <= max <= 1, got {cs}")
    _require(cfg.run.resume in (True, False, "auto"),
             f"run.resume must be auto, true or false, got {cfg.run.resume!r}")
    _require(t.timeout_s > 0, f"train.timeout_s must be > 0, got {t.timeout_s}")


# The largest learning rate each optimiser takes, ten times what published recipes use at
# their largest batches: SimCLR's LARS runs at 0.3 x 8192/256 = 9.6 (Chen et al. 2020, B.1),
# Goyal et al.'s SGD at 0.1 x 8192/256 = 3.2; AdamW steps each weight by about lr whatever
# the gradient's scale, and its recipes use 1e-4 to 1e-2. Above these a run does not even
# fail: batch norm makes the loss blind to the weights' scale, so SGD at lr 1e6 and LARS at
# 1e4 "trained" to a loss near chance (measured on quickstart, 24 steps; lr 50 no NaN either).
MAX_LR = {"lars": (100.0, "SimCLR's LARS: 9.6 at batch 8192"),
          "sgd": (100.0, "Goyal et al.'s SGD: 3.2 at batch 8192"),
          "adamw": (1.0, "AdamW recipes: 1e-4 to 1e-2")}


def check_lr_bound(cfg: Config) -> None:
    """The learning rate the run will use (``optim.lr``, or ``optim.base_lr`` scaled by the
    batch) is refused above :data:`MAX_LR`, naming the key the user set."""
    o = cfg.optim
    if o.optimizer not in MAX_LR:
        return  # validate() names the unknown optimiser
    (bound, usual), lr = MAX_LR[o.optimizer], base_lr_for(cfg)
    if lr > bound:
        what = (f"optim.lr {o.lr:g}" if o.lr is not None else
                f"optim.base_lr {o.base_lr:g} (lr {lr:g} with {o.lr_scaling} scaling at batch "
                f"{cfg.train.batch_size})")
        raise ConfigError(f"{what} is above {bound:g}, the most optim.optimizer {o.optimizer} "
                          f"takes ({usual}); a wrong exponent?")


def base_lr_for(cfg: Config) -> float:
    """SimCLR's rule: lr = 0.3 x B/256 (linear) or 0.075 x sqrt(B) (sqrt, SimCLR v2)."""
    o = cfg.optim
    if o.lr is not None:
        return o.lr
    b = cfg.train.batch_size
    if o.lr_scaling == "linear":
        return o.base_lr * b / 256
    if o.lr_scaling == "sqrt":
        return o.base_lr * b**0.5
    return o.base_lr
