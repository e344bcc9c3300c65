"""Registries by name (backbones, methods): the one decorator both use, as timm registers
models: a new entry is one decorated function in any module."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from selfsup.errors import ConfigError

F = TypeVar("F", bound=Callable)


def registrar(table: dict[str, Callable], kind: str, name: str) -> Callable[[F], F]:
    """A decorator that enters a function into ``table`` under ``name``.

    Registering a different function under a taken name is an error; re-running the same
    definition (same module and qualified name, e.g. a notebook cell) replaces it.
    """

    def decorator(fn: F) -> F:
        old = table.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise ConfigError(f"{kind} {name!r} is already registered (by {old.__qualname__})")
        table[name] = fn
        return fn

    return decorator
