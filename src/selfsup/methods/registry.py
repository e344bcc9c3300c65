"""Build a method from the config by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.methods.simclr import SimCLR
from selfsup.models import ProjectionHead


def _simclr(cfg: Config, backbone: nn.Module) -> nn.Module:
    m = cfg.model
    d = backbone.feature_dim
    head = ProjectionHead(d, m.head_hidden or d, m.out_dim, num_layers=m.head_layers)
    return SimCLR(backbone, head, temperature=cfg.method.temperature)


METHODS: dict[str, Callable[[Config, nn.Module], nn.Module]] = {"simclr": _simclr}


def build_method(cfg: Config, backbone: nn.Module) -> nn.Module:
    try:
        factory = METHODS[cfg.method.name]
    except KeyError:
        raise ConfigError(
            f"unknown method.name {cfg.method.name!r}; known: {', '.join(sorted(METHODS))}"
        ) from None
    return factory(cfg, backbone)
