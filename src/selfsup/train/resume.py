"""Which run a launch continues, and what a resume may change.

A resumed run must end where the uninterrupted one would have: the settings that shape its
trajectory (model, method, data order, optimiser, schedule, augmentation) are those in its
``config.yaml``, and a resume that would change one is refused. Settings that only change how
far it goes or how it reports (``train.epochs``, ``train.steps``, ``train.max_time_s``,
evaluation, logging, threads, where the data now lives) may change; every resume and what it
changed is appended to ``resumes.jsonl`` in the run folder.

Elastic restarts (``torchrun --max-restarts N``) launch the same command line again: with a
fixed ``run.name`` and ``run.resume: auto`` the restarted workers continue the run they were
in, from its last checkpoint, instead of starting ``NAME-2`` from step 0.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from selfsup.config import Config, upgrade_flat_keys
from selfsup.errors import ConfigError
from selfsup.runs import RunFolder

# prefixes of the keys a resume may change (how far, how reported, where the data is)
MAY_CHANGE = ("train.epochs", "train.steps", "train.max_time_s", "train.num_threads",
              "train.device", "train.timeout_s", "eval.", "run.", "data.root", "data.download",
              "data.cache_dir", "data.pack_workers")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(run_dir: Path, cfg: Config) -> dict[str, tuple]:
    """``{key: (saved, new)}`` for every setting of ``cfg`` that differs from the run's."""
    path = RunFolder(run_dir).config
    if not path.is_file():
        return {}
    try:
        # an older run's flat method keys, in the sections they have now
        saved = _flat(upgrade_flat_keys(yaml.safe_load(path.read_text()) or {}))
    except yaml.YAMLError:
        return {}
    new = _flat(cfg.to_dict())
    return {k: (saved.get(k), v) for k, v in new.items() if k in saved and saved[k] != v}


def check_resume_changes(changes: dict[str, tuple]) -> None:
    """ConfigError for the first change that would alter the run's trajectory."""
    for key, (old, new) in changes.items():
        if not key.startswith(MAY_CHANGE):
            raise ConfigError(
                f"resume: {key} is {old!r} in the run, {new!r} now; a resumed run keeps the "
                f"settings that shape its training (start a new run to change them; a resume "
                f"may change train.epochs, train.steps, train.max_time_s, eval.*, run.*, "
                f"data.root)")


def record_resume(run_dir: Path, step: int, changes: dict[str, tuple], how: str) -> None:
    """Append this resume, and what it changed, to ``resumes.jsonl``."""
    rec = {"time": round(time.time(), 3), "step": step, "how": how,
           "changes": {k: {"was": old, "now": new} for k, (old, new) in changes.items()}}
    with open(RunFolder(run_dir).resumes, "a") as f:
        f.write(json.dumps(rec) + "\n")


def elastic_restart() -> bool:
    """True in workers that torchrun restarted after a failure of the group."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def auto_resume_dir(cfg: Config) -> Path | None:
    """The folder of the named run this launch continues, or None for a new run.

    ``run.resume``: ``auto`` continues a named run after an elastic restart; ``true`` also
    continues a named run that has a checkpoint when launched by hand; ``false`` never.
    """
    mode, name = cfg.run.resume, cfg.run.name
    if not name or mode is False or (mode == "auto" and not elastic_restart()):
        return None
    path = Path(cfg.run.out_dir) / name
    if mode is True:
        return path if RunFolder(path).checkpoint().is_file() else None
    return path if path.is_dir() else None  # restarted: the folder the first attempt made
