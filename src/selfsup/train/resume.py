"""Which run a launch continues, and what a resume may change.

A resumed run must end where the uninterrupted one would have: the settings that shape its
trajectory (model, method, data order, optimiser, schedule, augmentation) are those in its
``config.yaml``, and a resume that would change one is refused. Settings that only change how
far it goes or how it reports (``train.epochs``, ``train.steps``, ``train.max_time_s``,
evaluation, logging, threads, where the data now lives) may change; every resume and what it
changed is appended to ``resumes.jsonl`` in the run folder. ``data.root`` may change (the data
moved), the images may not: each checkpoint records a :func:`data_identity` that does not
depend on where the files are, and :func:`check_same_data` refuses a resume on other images.

Elastic restarts (``torchrun --max-restarts N``) launch the same command line again: with a
fixed ``run.name`` and ``run.resume: auto`` the restarted workers continue the run they were
in, from its last checkpoint, instead of starting ``NAME-2`` from step 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import yaml

from selfsup.config import Config, upgrade_flat_keys
from selfsup.errors import ConfigError, DataError
from selfsup.runs import RunFolder

# prefixes of the keys a resume may change (how far, how reported, where the data is)
MAY_CHANGE = ("train.epochs", "train.steps", "train.max_time_s", "train.num_threads",
              "train.device", "train.timeout_s", "eval.", "run.", "data.root", "data.download",
              "data.cache_dir", "data.pack_workers")
# ...except these: eval.split decides which images are pretrained on (val holds 10 % out)
MAY_NOT_CHANGE = ("eval.split",)


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
        if not key.startswith(MAY_CHANGE) or key in MAY_NOT_CHANGE:
            raise ConfigError(
                f"resume: {key} is {old!r} in the run, {new!r} now; a resumed run keeps the "
                f"settings that shape its training (start a new run to change them; a resume "
                f"may change train.epochs, train.steps, train.max_time_s, eval.* but eval.split, "
                f"run.*, data.root)")


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


def data_identity(cfg: Config, train) -> dict:
    """What the run trains on (``train``: the loaded, limited split), wherever it lives.

    Not absolute paths or modification times, which a move changes: for an image folder its
    listing (relative paths, file sizes, labels) and the bytes of 64 of its files spread over
    it (same-sized files under the same names are common: PNGs of noise, BMPs); for a packed
    store its listing and 64 of its rows (hashing all would read the whole store); for a
    built-in data set whose official checksums were verified on load, those checksums;
    otherwise the pixels and labels themselves, in memory anyway. ``root`` only names it.
    """
    from selfsup.data.registry import DATASETS

    d = cfg.data
    h = hashlib.sha256(f"{d.dataset}|{d.train_split}|{len(train)}|{train.classes}".encode())
    info = DATASETS.get(d.dataset)
    official = {f.name: f.sha256 or f.md5 for f in info.files} if info else {}
    names = info.splits.get(d.train_split, ()) if info else ()
    n = len(train)
    sample = sorted({i * (n - 1) // 63 for i in range(64)}) if n else []
    if d.dataset in ("folder", "store"):
        kind, root = "files", Path(d.root or ".").expanduser()
        labels = [] if train.labels is None else train.labels.tolist()
        folder = d.dataset == "folder"
        for i, rel in enumerate(train.files or []):
            size = _read(root / rel, stat=True) if folder else ""
            h.update(f"{rel}\t{size}\t{labels[i] if labels else ''}\n".encode())
        for i in sample:  # the content itself, sampled: the source files' or the store's rows
            h.update(_read(root / train.files[i]) if folder and train.files else
                     train.read(torch.tensor([i])).numpy().tobytes())
    elif d.verify is True and names and all(official.get(n) for n in names):
        kind = "official files"  # the load verified them: these files are the official ones
        h.update("".join(f"{n}:{official[n]}\n" for n in names).encode())
    else:
        kind = "pixels"
        h.update(train.images.numpy().data)  # uint8, contiguous
        if train.labels is not None:
            h.update(train.labels.numpy().tobytes())
    root = str(Path(d.root).expanduser().resolve()) if d.root else None
    return {"dataset": d.dataset, "split": d.train_split, "images": n, "kind": kind,
            "sha256": h.hexdigest(), "root": root}


def _read(path: Path, stat: bool = False):
    """The size (``stat``) or the bytes of a listed file; DataError if it is gone."""
    try:
        return path.stat().st_size if stat else path.read_bytes()
    except OSError as e:  # deleted since it was packed
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def check_same_data(run_dir: Path, recorded: dict | None, now: dict) -> None:
    """DataError when the data the run trained on (``recorded`` in its checkpoint; None in runs
    of earlier versions, which resume unchecked) differs from what this launch loaded."""
    keys = ("dataset", "split", "images", "sha256")
    if not recorded or all(recorded.get(k) == now.get(k) for k in keys):
        return
    was, is_ = (f"{r.get('images')} images in {r.get('root') or r.get('dataset')}"
                for r in (recorded, now))
    what = "another number of images" if recorded.get("images") != now.get("images") else \
        f"the same number, other {now['kind']}"
    raise DataError(f"resume: {run_dir} trained on {was}; data.root now holds {is_} ({what}); "
                    "point data.root at the run's data (it may move, not change)")
