"""The run folder: its layout, its creation, and what later stages read from it.

Every stage writes one folder and every later stage needs nothing else::

    runs/<name>/
      config.yaml            the resolved config
      metrics.jsonl          loss, lr, score statistics, images/s, k-NN monitor
      scores.jsonl           score histograms (Feature Transformation's monitor)
      resumes.jsonl          every resume and what it changed
      summary.json           written when the run ends
      checkpoints/last.pt    (+ epoch_NNNN.pt every run.checkpoint_every epochs)
      eval/<protocol>.json   selfsup knn / linear
      export/                model.safetensors + config.json
      plots/*.png
      stage.json             stages after pretraining (finetune, distill, transfer)
      subset.txt             a fine-tuning run's labelled subset

``run_config`` and ``load_run_backbone`` read a run back: its config and trained backbone.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from selfsup.config import Config, load_config
from selfsup.errors import ConfigError, DataError
from selfsup.outputs import nearest_existing, read_only

if TYPE_CHECKING:
    import torch

LAST = "last.pt"  # the checkpoint every stage reads by default


def _file(name: str) -> property:
    return property(lambda self: self.path / name, doc=f"``<run>/{name}``")


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder (nothing is created by asking for a path)."""

    path: Path

    config = _file("config.yaml")
    checkpoints = _file("checkpoints")
    metrics = _file("metrics.jsonl")
    scores = _file("scores.jsonl")
    resumes = _file("resumes.jsonl")
    summary = _file("summary.json")
    stage = _file("stage.json")
    export = _file("export")
    plots = _file("plots")
    subset = _file("subset.txt")  # the labelled subset of a fine-tuning run

    def checkpoint(self, name: str = LAST) -> Path:
        return self.checkpoints / name

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:04d}.pt"

    def eval_file(self, protocol: str) -> Path:
        return self.path / "eval" / f"{protocol}.json"

    def summary_steps(self) -> int | None:
        """The steps recorded in ``summary.json``; None without a readable one."""
        try:
            return int(json.loads(self.summary.read_text())["steps"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


NAME_MAX = 255  # bytes in one file name on ext4, XFS, btrfs, APFS and tmpfs (POSIX NAME_MAX)


def _name_max(folder: str | Path | None) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (else NAME_MAX)."""
    if folder is None:
        return NAME_MAX
    try:
        return int(os.pathconf(nearest_existing(Path(folder)), "PC_NAME_MAX"))
    except (OSError, ValueError):  # no such limit reported (e.g. not POSIX)
        return NAME_MAX


def check_run_name(name: str | None, out_dir: str | Path | None = None) -> None:
    """``run.name`` must be one plain path component that the file system of ``out_dir``
    can hold: the run stays inside ``run.out_dir``, and a name over the limit (ENAMETOOLONG)
    is refused before any data is read, not after."""
    if not name:
        return  # the default name, <method>-<dataset>-<time>
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"run.name {name!r} is not a plain folder name (no '/', '\\', "
                          f"'.' or '..'); the run folder is always run.out_dir/run.name")
    size, limit = len(os.fsencode(name)), _name_max(out_dir)
    if size > limit:
        raise ConfigError(f"run.name {name[:40]!r}... is {size} bytes long; a folder name may "
                          f"have at most {limit} bytes on this file system")


def check_writable_folder(path: str | Path, key: str) -> None:
    """That ``path`` is a folder that exists or can be created, and can be written in;
    checked without writing anything, so a bad ``key`` stops a run before it writes."""
    path = Path(path)
    found = nearest_existing(path)
    if not found.is_dir():
        where = "it is a file" if found == path.absolute() else f"{found} is a file"
        raise DataError(f"{key} {path}: cannot write there ({where}, not a folder)")
    if not os.access(found, os.W_OK | os.X_OK):
        why = "a read-only file system" if read_only(found) else "no write permission"
        raise DataError(f"{key} {path}: cannot write there ({found}: {why})")


def check_run_target(cfg: Config) -> None:
    """``run.out_dir`` and ``run.name`` of a new run, before anything is read or written."""
    check_run_name(cfg.run.name, cfg.run.out_dir)
    check_writable_folder(cfg.run.out_dir, "run.out_dir")


def new_run_dir(cfg: Config) -> Path:
    """Create and return ``out_dir/name``; a name already taken gets a suffix (quickstart-2, ...).

    The folder is created with an exclusive ``mkdir``, so two runs started at once with the
    same name cannot share a folder: the second gets the next suffix.
    """
    check_run_target(cfg)
    name = cfg.run.name or (
        f"{cfg.method.name}-{cfg.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    out_dir = Path(cfg.run.out_dir)
    path, n = out_dir / name, 1
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                path.mkdir()
                return path
            except FileExistsError:
                n += 1
                path = out_dir / f"{name}-{n}"
    except OSError as e:  # read-only (EROFS), no permission, a name too long with its suffix
        why = e.strerror or errno.errorcode.get(e.errno or 0, str(e))
        raise DataError(f"run.out_dir {out_dir}: cannot create the run folder {path.name} "
                        f"({why})") from None


def run_config(run_dir: str | Path, overrides: list[str] | dict | None = None) -> Config:
    path = RunFolder(Path(run_dir)).config
    if not path.is_file():
        raise DataError(f"{run_dir}: not a selfsup run folder (no config.yaml)")
    return load_config(path, overrides)


def check_checkpoint_method(ckpt: dict, cfg: Config, path: str | Path) -> None:
    """The method a checkpoint recorded (its ``config``) must be the run's: a Jigsaw
    ``last.pt`` copied into a SimCLR run has a backbone of the same shape, so it would load
    and be evaluated, and reported, as SimCLR. Checkpoints without a config pass."""
    recorded = ckpt.get("config")
    method = recorded.get("method") if isinstance(recorded, dict) else None
    name = method.get("name") if isinstance(method, dict) else None
    if isinstance(name, str) and name != cfg.method.name:
        raise DataError(f"{path}: a {name} checkpoint, but the run's config says method.name "
                        f"{cfg.method.name}; it belongs to another run")


def load_run_backbone(run_dir: str | Path, cfg: Config | None = None,
                      checkpoint: str = LAST) -> tuple[torch.nn.Module, Config, dict]:
    """The trained backbone of a run (CPU, eval mode), its config and checkpoint metadata."""
    from selfsup.experiment import make_backbone  # torch: only when a backbone is asked for
    from selfsup.train.checkpoint import load_checkpoint

    cfg = cfg or run_config(run_dir)
    path = RunFolder(Path(run_dir)).checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    check_checkpoint_method(ckpt, cfg, path)
    in_channels = int(ckpt.get("in_channels", 3))
    backbone = make_backbone(cfg, in_channels)
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ: another width, depth or input channels
        detail = next((x.strip() for x in str(e).splitlines() if "size mismatch" in x), str(e))
        raise DataError(f"{run_dir}: checkpoint does not fit model.backbone "
                        f"{cfg.model.backbone} w{cfg.model.width:g} ({detail[:200]})") from None
    if missing or unexpected:
        raise DataError(f"{run_dir}: checkpoint does not match model.backbone "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    backbone.eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng")}
    return backbone, cfg, meta
