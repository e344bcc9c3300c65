"""One pretraining step and what it is made of: data, views, the update, the schedules.

Shared by the loop (:mod:`selfsup.train.pretrain`) and the benchmarks, which time these same
pieces against the bare model step.
"""

from __future__ import annotations

import torch

from selfsup.config import Config, base_lr_for
from selfsup.data.loader import MappedLoader, ResidentLoader, make_loader
from selfsup.distributed import rank, world_size
from selfsup.errors import ConfigError
from selfsup.experiment import (
    eval_augmentation,
    load_data,
    make_backbone,
    train_augmentation,
)
from selfsup.methods import build_method
from selfsup.methods.base import Method
from selfsup.train.optim import build_optimizer
from selfsup.train.precision import precision_dtype, resolve_numerics  # noqa: F401
from selfsup.train.schedule import step_decay, warmup_cosine


def lr_at(cfg: Config, step: int, total: int, steps_per_epoch: int) -> float:
    base = base_lr_for(cfg)
    o = cfg.optim
    if o.schedule == "warmup_cosine":
        warmup = int(o.warmup_epochs * steps_per_epoch)
        return warmup_cosine(step, total, min(warmup, total), base, o.final_lr)
    if o.schedule == "step":
        return step_decay(step, total, base)
    return base


def build_training(cfg: Config, device: torch.device):
    """Data, augmentations, loader, method and optimiser of ``cfg`` (shared with benchmarks)."""
    t = cfg.train
    data = load_data(cfg, need_test=cfg.eval.knn_every >= 0)
    augment, eval_tf = train_augmentation(cfg, data), eval_augmentation(data)
    loader = make_loader(data.train, t.batch_size, seed=t.seed, rank=rank(), world=world_size(),
                         device=device, on_device=cfg.data.on_device)
    model = build_method(cfg, make_backbone(cfg, data.channels)).to(device)
    if not isinstance(model, Method):
        raise ConfigError(f"method {cfg.method.name!r} builds a {type(model).__name__}, not a "
                          "selfsup.methods.Method (the contract the loop relies on)")
    if resolve_numerics(cfg, device).channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim.optimizer, model, base_lr_for(cfg),
                                cfg.optim.weight_decay, cfg.optim.momentum)
    return data, augment, eval_tf, loader, model, optimizer


def make_views(loader: ResidentLoader | MappedLoader, augment, gen: torch.Generator, step: int,
               seed: int, n_views: int = 2, channels_last: bool = False) -> list[torch.Tensor]:
    """This rank's batch of ``step``, augmented ``n_views`` times on the device."""
    x = loader.batch(step)  # B/world x C x H x W uint8 on the device
    # augmentation randomness is a pure function of (seed, rank, step): exact resume
    gen.manual_seed((seed * 1_000_003 + step) * 64 + rank())
    views = [augment(x, gen) for _ in range(n_views)]
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return views


def optimisation_step(step_fn, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
                      lr: float, autocast_dtype: torch.dtype | None, device: torch.device):
    """Forward (under autocast), backward and update; returns the method's metrics."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        loss, metrics = step_fn(views)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return metrics
