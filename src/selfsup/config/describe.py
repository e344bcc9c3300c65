"""Every config key with its value and meaning, as YAML a user can read and copy.

``selfsup config show [--config NAME] [--section.key value ...]`` prints the resolved config
of a preset (defaults without one), each key followed by the comment that documents it in the
dataclasses (:mod:`selfsup.config.schema`, :mod:`selfsup.config.method`): one source of
truth for the reference, the defaults and the validation.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

import yaml

from selfsup.config.schema import Config

_FIELD = re.compile(r"^\s+(\w+):[^#]*?(?:#\s*(.*))?$")


def _comments(cls: type) -> dict[str, str]:
    """``field -> comment`` from the dataclass's source lines."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = _FIELD.match(line)
        if m and m.group(2):
            out[m.group(1)] = m.group(2).strip()
    return out


def _lines(obj, cls: type, indent: int) -> list[str]:
    hints, notes, pad = typing.get_type_hints(cls), _comments(cls), " " * indent
    lines = []
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            doc = (hints[f.name].__doc__ or "").strip().splitlines()[0]
            lines.append(f"{pad}{f.name}:{'  # ' + doc if doc else ''}")
            lines += _lines(value, hints[f.name], indent + 2)
            continue
        if isinstance(value, tuple):
            value = list(value)
        text = yaml.safe_dump({f.name: value}, default_flow_style=True, width=1000).strip()
        text = text.removeprefix("{").removesuffix("}")
        note = f"  # {notes[f.name]}" if f.name in notes else ""
        lines.append(f"{pad}{text}{note}")
    return lines


def describe_config(cfg: Config) -> str:
    """``cfg`` as commented YAML: every section, every key, its value and its meaning."""
    hints = typing.get_type_hints(Config)
    out = []
    for f in dataclasses.fields(Config):
        out.append(f"{f.name}:")
        out += _lines(getattr(cfg, f.name), hints[f.name], 2)
    return "\n".join(out) + "\n"
