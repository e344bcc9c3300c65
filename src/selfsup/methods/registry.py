"""Build a method from the config by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.methods.feature_transform import FeatureTransform
from selfsup.methods.jigsaw import Jigsaw
from selfsup.methods.moco import MoCo
from selfsup.methods.simclr import SimCLR
from selfsup.methods.simclr_memory import SimCLRMemory
from selfsup.models import ProjectionHead


def feature_transform(cfg: Config) -> FeatureTransform:
    """The FT settings of ``cfg.method`` (Zhu et al., ICCV 2021); off unless asked for."""
    me = cfg.method
    return FeatureTransform(
        extrapolate=me.ft_extrapolate, interpolate=me.ft_interpolate,
        alpha_pos=me.ft_alpha_pos, alpha_neg=me.ft_alpha_neg, lambda_pos=me.ft_lambda_pos,
        granularity=me.ft_granularity, renormalize=me.ft_renormalize,
        start_epoch=me.ft_start_epoch)


def _simclr(cfg: Config, backbone: nn.Module) -> nn.Module:
    m = cfg.model
    d = backbone.feature_dim
    head = ProjectionHead(d, m.head_hidden or d, m.out_dim, num_layers=m.head_layers)
    if cfg.method.memory:  # SimCLR v2's MoCo-style memory
        me = cfg.method
        return SimCLRMemory(backbone, head, temperature=me.temperature, momentum=me.momentum,
                            queue_size=me.queue_size, momentum_schedule=me.momentum_schedule,
                            out_dim=m.out_dim, score_bins=cfg.run.score_bins)
    return SimCLR(backbone, head, temperature=cfg.method.temperature,
                  ft=feature_transform(cfg), score_bins=cfg.run.score_bins)


def _moco(cfg: Config, backbone: nn.Module) -> nn.Module:
    """MoCo v1 (``model.head_layers: 1``, a linear fc) or v2 (2: Linear-ReLU-Linear, no BN)."""
    m, me = cfg.model, cfg.method
    d = backbone.feature_dim
    head = ProjectionHead(d, m.head_hidden or d, m.out_dim, num_layers=m.head_layers,
                          hidden_bn=False)
    return MoCo(backbone, head, temperature=me.temperature, momentum=me.momentum,
                queue_size=me.queue_size, symmetric=me.symmetric,
                momentum_schedule=me.momentum_schedule, shuffle_bn=me.shuffle_bn,
                bn_groups=me.bn_groups, out_dim=m.out_dim, ft=feature_transform(cfg),
                score_bins=cfg.run.score_bins)


def _jigsaw(cfg: Config, backbone: nn.Module) -> nn.Module:
    """Jigsaw (Noroozi & Favaro, ECCV 2016) or, with ``jigsaw_plus``, Jigsaw++ (CVPR 2018)."""
    me = cfg.method
    return Jigsaw(backbone, me.jigsaw_permutations, plus=me.jigsaw_plus,
                  grayscale=me.jigsaw_grayscale, gap=me.jigsaw_gap, hidden=me.jigsaw_hidden)


METHODS: dict[str, Callable[[Config, nn.Module], nn.Module]] = {
    "simclr": _simclr, "moco": _moco, "jigsaw": _jigsaw}


def build_method(cfg: Config, backbone: nn.Module) -> nn.Module:
    try:
        factory = METHODS[cfg.method.name]
    except KeyError:
        raise ConfigError(
            f"unknown method.name {cfg.method.name!r}; known: {', '.join(sorted(METHODS))}"
        ) from None
    return factory(cfg, backbone)
