"""``method.*``: the method's name and temperature, then one section per method family.

``method.moco`` (MoCo; also SimCLR v2's memory), ``method.ft`` (Feature Transformation, for
SimCLR and MoCo) and ``method.jigsaw``. A run's ``config.yaml`` carries only the sections its
method reads (:func:`method_sections`); the others are reset to their defaults on load, so a
saved file loads back to the same :class:`Config`.

The flat keys of earlier versions (``method.queue_size``, ``method.ft_extrapolate``,
``method.jigsaw_plus``, ...) still work in YAML files, ``--method.key`` overrides, run
folders' ``config.yaml`` and as attributes, each with one :class:`FutureWarning` per key
naming its new place (:data:`FLAT_KEYS`).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from selfsup.errors import ConfigError


@dataclass
class MoCoConfig:
    """MoCo (He et al., CVPR 2020): key encoder EMA, queue of negatives, shuffle BN."""

    momentum: float = 0.99  # m in theta_k <- m theta_k + (1 - m) theta_q
    momentum_schedule: str = "constant"  # constant | cosine (m -> 1, BYOL)
    queue_size: int = 4096  # K, any K >= global batch
    symmetric: bool = False  # loss on (q1, k2) and (q2, k1)
    shuffle_bn: str = "auto"  # auto | ddp | groups | off
    bn_groups: int = 8  # single-device shuffle-BN equivalent: BN statistics per group


@dataclass
class FTConfig:
    """Feature Transformation (Zhu et al., ICCV 2021), for moco and simclr."""

    extrapolate: bool = False  # hard positives: lambda_ex = 1 + Beta(a_pos, a_pos)
    interpolate: bool = False  # diverse negatives: lambda_in ~ Beta(a_neg, a_neg)
    alpha_pos: float = 2.0  # Beta(a, a) of the extrapolation
    alpha_neg: float = 1.6  # Beta(a, a) of the interpolation
    lambda_pos: float | None = None  # a fixed lambda_ex instead of the Beta draw (>= 1)
    granularity: str = "batch"  # batch (one draw per step) | sample | dim
    renormalize: bool = False  # L2-normalise the mixed features again
    start_epoch: float = 0.0  # FT is applied from this epoch on


@dataclass
class JigsawConfig:
    """Jigsaw (Noroozi & Favaro, ECCV 2016); Jigsaw++ (Noroozi et al., CVPR 2018)."""

    permutations: int | None = None  # classes; None: 100, or 701 with plus
    plus: bool = False  # Jigsaw++: 0-2 tiles from another image, more grayscale
    grayscale: float | None = None  # extra grayscale p in the method; None: 0.6 / 0
    gap: int = 2  # cell side - tile side: each tile moves 0..gap px in its cell
    hidden: int = 512  # width of fc6 (per tile) and fc7


# flat key of earlier versions -> its place now
FLAT_KEYS: dict[str, str] = {
    **{k: f"moco.{k}" for k in ("momentum", "momentum_schedule", "queue_size", "symmetric",
                                "shuffle_bn", "bn_groups")},
    **{f"ft_{k}": f"ft.{k}" for k in ("extrapolate", "interpolate", "alpha_pos", "alpha_neg",
                                      "lambda_pos", "granularity", "renormalize",
                                      "start_epoch")},
    **{f"jigsaw_{k}": f"jigsaw.{k}" for k in ("permutations", "plus", "grayscale", "gap",
                                              "hidden")},
}
SECTIONS = ("moco", "ft", "jigsaw")
_warned: set[str] = set()


def _deprecated(flat: str, stacklevel: int) -> None:
    if flat not in _warned:  # once per key and process
        _warned.add(flat)
        warnings.warn(f"method.{flat} is deprecated; use method.{FLAT_KEYS[flat]}",
                      FutureWarning, stacklevel=stacklevel + 1)


@dataclass
class MethodConfig:
    name: str = "simclr"  # simclr | moco | jigsaw | a name from register_method
    temperature: float | None = None  # None: the method's own (SimCLR 0.5, MoCo v2 0.2)
    # SimCLR v2 (Chen et al. 2020): MoCo-style memory (momentum encoder + queue) for simclr
    memory: bool = False  # uses moco.momentum, moco.momentum_schedule and moco.queue_size
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    ft: FTConfig = field(default_factory=FTConfig)
    jigsaw: JigsawConfig = field(default_factory=JigsawConfig)

    def __getattr__(self, name: str) -> Any:
        """``cfg.method.queue_size`` and the other flat names of earlier versions (read only)."""
        new = FLAT_KEYS.get(name)
        if new is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        _deprecated(name, 2)
        section, key = new.split(".")
        return getattr(getattr(self, section), key)

    def sections(self) -> tuple[str, ...]:
        return method_sections(self.name, self.memory)

    def to_dict(self) -> dict[str, Any]:
        """Plain data with only the settings this method reads (``memory``: SimCLR's)."""
        d = dataclasses.asdict(self)
        if self.name in ("moco", "jigsaw"):  # validate() refuses memory for them
            del d["memory"]
        return {k: v for k, v in d.items() if k not in SECTIONS or k in self.sections()}

    def drop_unused(self) -> None:
        """Reset the sections this method does not read to their defaults (as a saved file)."""
        for s in SECTIONS:
            if s not in self.sections():
                setattr(self, s, type(getattr(self, s))())


def method_sections(name: str, memory: bool = False) -> tuple[str, ...]:
    """The ``method.*`` sections ``name`` reads; every section for a method registered
    elsewhere (``register_method``), whose settings the config cannot know."""
    known = {"simclr": ("moco", "ft") if memory else ("ft",), "moco": ("moco", "ft"),
             "jigsaw": ("jigsaw",)}
    return known.get(name, SECTIONS)


def upgrade_flat_keys(data: dict) -> dict:
    """``data`` (a config mapping) with ``method``'s flat keys moved into their sections."""
    method = data.get("method") if isinstance(data, dict) else None
    if not isinstance(method, dict) or not any(k in FLAT_KEYS for k in method):
        return data
    out = {k: v for k, v in method.items() if k not in FLAT_KEYS}
    for flat, value in method.items():
        if flat not in FLAT_KEYS:
            continue
        _deprecated(flat, 3)  # the caller of load_config
        section, key = FLAT_KEYS[flat].split(".")
        group = out.get(section, {})
        if not isinstance(group, dict):
            raise ConfigError(f"config section method.{section} must be a mapping")
        if key in group and group[key] != value:
            raise ConfigError(f"method.{flat} ({value!r}) and method.{section}.{key} "
                              f"({group[key]!r}) are the same setting; give only the second")
        out[section] = {**group, key: value}
    return {**data, "method": out}
