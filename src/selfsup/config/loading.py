"""Loading a :class:`Config`: defaults, a preset or YAML file, ``--section.key value``
overrides; each layer's flat ``method.*`` keys of earlier versions are moved to their
sections first, so a later layer's flat key overrides an earlier layer's grouped one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from selfsup.config.checks import validate
from selfsup.config.method import upgrade_flat_keys
from selfsup.config.schema import Config
from selfsup.errors import ConfigError, read_text_file


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints pass for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(
                f"config key {key} expects a list of {len(args)} values, got {value!r}"
            )
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # one place for every float setting
                raise ConfigError(f"config key {key} must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used in the dataclasses
        return value
    raise ConfigError(f"config key {key} expects {tp.__name__}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_names() -> list[str]:
    """Names of the YAML presets shipped inside the package."""
    folder = resources.files("selfsup") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str | Path) -> dict:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = read_text_file(path, "a YAML config")
    else:
        preset = resources.files("selfsup") / "configs" / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"unknown config {name_or_path!r}: not a file and not a preset "
                f"({', '.join(preset_names())})"
            )
        text = preset.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{name_or_path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: a config must be a YAML mapping")
    _check_sections(data, Config, "", name_or_path)
    return data


def _check_sections(data: dict, cls: type, prefix: str, source: str | Path) -> None:
    """Every section of ``data`` (``train``, ``method.moco``, ...) is a mapping: ``train: 5``
    would otherwise be replaced, silently, by the first ``--train.KEY`` override. An empty
    section (``train:`` with every key commented out) reads as null and means no keys."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data or not dataclasses.is_dataclass(hints[f.name]):
            continue
        value = data[f.name]
        if value is None:
            data[f.name] = {}
        elif not isinstance(value, dict):
            raise ConfigError(f"{source}: config section {prefix}{f.name} must be a mapping of "
                              f"keys, got {value!r}")
        else:
            _check_sections(value, hints[f.name], f"{prefix}{f.name}.", source)


def parse_overrides(pairs: list[str]) -> dict:
    """``["--train.epochs", "5", "--data.root=/x"]`` -> nested dict with YAML-typed values."""
    out: dict = {}
    i = 0
    while i < len(pairs):
        arg = pairs[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"expected --section.key value, got {arg!r}")
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(pairs):
                raise ConfigError(f"missing value for --{key}")
            raw = pairs[i + 1]
            i += 1
        i += 1
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for i_part, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # --train 5 --train.epochs 3
                _section_clash(".".join(parts[: i_part + 1]))
        if isinstance(node.get(parts[-1]), dict):  # --train.epochs 3 --train 5
            _section_clash(key)
        node[parts[-1]] = value
    return out


def _section_clash(section: str):
    raise ConfigError(f"--{section} is a section: give its keys as --{section}.KEY value, "
                      "not a value of its own")


def load_config(
    name_or_path: str | Path | None = None,
    overrides: dict | list[str] | None = None,
) -> Config:
    """Defaults, then a preset or YAML file, then overrides; validated."""
    data: dict = {}
    if name_or_path is not None:
        data = upgrade_flat_keys(_read_yaml(name_or_path))
    if overrides:
        upd = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        data = _merge(data, upgrade_flat_keys(upd))
    cfg = _build(Config, data, "")
    validate(cfg)  # every section, also those this method does not read
    cfg.method.drop_unused()  # as save_config writes it: the file loads back to this Config
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
