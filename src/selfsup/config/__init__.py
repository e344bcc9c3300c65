"""Typed configuration: dataclasses, YAML presets, ``--section.key value`` overrides.

A run is fully described by one :class:`Config`; its resolved form is written
to ``config.yaml`` in every run folder, so any run can be repeated or resumed.

- :mod:`.schema`: the sections (``data``, ``augment``, ``model``, ``optim``, ``train``,
  ``eval``, ``run``) and :class:`Config`;
- :mod:`.method`: ``method.*`` with its ``moco``, ``ft`` and ``jigsaw`` sections, and the
  flat keys of earlier versions;
- :mod:`.loading`: presets, YAML files, overrides, :func:`load_config`, :func:`save_config`;
- :mod:`.checks`, :mod:`.method_checks`: value checks, one place each.
"""

from selfsup.config.checks import base_lr_for, validate
from selfsup.config.loading import load_config, parse_overrides, preset_names, save_config
from selfsup.config.method import (
    FLAT_KEYS,
    FTConfig,
    JigsawConfig,
    MethodConfig,
    MoCoConfig,
    method_sections,
    upgrade_flat_keys,
)
from selfsup.config.method_checks import JIGSAW_MAX_PERMUTATIONS
from selfsup.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "FLAT_KEYS",
    "JIGSAW_MAX_PERMUTATIONS",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "FTConfig",
    "JigsawConfig",
    "MethodConfig",
    "MoCoConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "base_lr_for",
    "load_config",
    "method_sections",
    "parse_overrides",
    "preset_names",
    "save_config",
    "upgrade_flat_keys",
    "validate",
]
