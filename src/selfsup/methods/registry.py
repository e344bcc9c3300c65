"""Methods built by name: ``@register_method("name")`` on a factory ``(cfg, backbone) -> Method``.

The built-in methods register their factories in their own files (simclr.py, moco.py,
jigsaw.py), so a new method is one file: a :class:`~selfsup.methods.base.Method` and its
registered factory; ``method.name`` then selects it in every config, preset and CLI call.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.methods.base import Method
from selfsup.registry import registrar

MethodFactory = Callable[[Config, nn.Module], Method]
METHODS: dict[str, MethodFactory] = {}  # name -> factory


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    """Decorator: register ``factory(cfg, backbone) -> Method`` as ``method.name: name``.

    Registering a different function under a taken name is an error; re-running the same
    definition (same module and qualified name, e.g. a notebook cell) replaces it.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"method name must be a non-empty string, got {name!r}")

    return registrar(METHODS, "method", name)


def list_methods() -> list[str]:
    return sorted(METHODS)


def build_method(cfg: Config, backbone: nn.Module) -> Method:
    """The method ``cfg.method.name`` around ``backbone`` (its factory builds the head)."""
    try:
        factory = METHODS[cfg.method.name]
    except KeyError:
        raise ConfigError(f"unknown method.name {cfg.method.name!r}; known: "
                          f"{', '.join(list_methods())}") from None
    return factory(cfg, backbone)
