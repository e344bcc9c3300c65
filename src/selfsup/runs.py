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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from selfsup.config import Config
from selfsup.errors import ConfigError


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

    def checkpoint(self, name: str = "last.pt") -> Path:
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


def check_run_name(name: str | None) -> None:
    """``run.name`` must be one plain path component: the run stays inside ``run.out_dir``."""
    if not name:
        return  # the default name, <method>-<dataset>-<time>
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"run.name {name!r} is not a plain folder name (no '/', '\\', "
                          f"'.' or '..'); the run folder is always run.out_dir/run.name")


def new_run_dir(cfg: Config) -> Path:
    """Create and return ``out_dir/name``; a name already taken gets a suffix (quickstart-2, ...).

    The folder is created with an exclusive ``mkdir``, so two runs started at once with the
    same name cannot share a folder: the second gets the next suffix.
    """
    name = cfg.run.name or (
        f"{cfg.method.name}-{cfg.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    out_dir = Path(cfg.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, n = out_dir / name, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = out_dir / f"{name}-{n}"
