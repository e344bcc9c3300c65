"""Run logging: JSONL always, TensorBoard when asked, on rank 0 only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from selfsup.distributed import is_main_process
from selfsup.errors import DataError
from selfsup.train.checkpoint import atomic_write_text


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl`` (and TensorBoard scalars).

    Appending keeps earlier records when a run is resumed; the resumed run first
    drops the records logged after its checkpoint (:func:`keep_records`), so each
    step is logged once.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = False,
                 filename: str = "metrics.jsonl", writer=None) -> None:
        self.enabled = is_main_process()
        self.path = Path(run_dir) / filename
        self._tb, self._owns_tb = writer, False
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                import warnings

                warnings.warn("run.tensorboard needs tensorboard: pip install 'selfsup[tb]'",
                              stacklevel=2)
            else:
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
                self._owns_tb = True

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record, default=_jsonable) + "\n")
        except OSError as e:  # e.g. the disk is full: one line, not a traceback mid-run
            raise DataError(f"{self.path}: cannot write ({e.strerror or e})") from None
        if self._tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time") and math.isfinite(v):
                    self._tb.add_scalar(k, v, record["step"])
                elif k.endswith("_hist") and isinstance(v, list) and sum(v) > 0:
                    self._add_histogram(k, v, record["step"])

    def _add_histogram(self, name: str, counts: list, step: int) -> None:
        n = len(counts)
        edges = [-1.0 + 2.0 * (i + 1) / n for i in range(n)]  # right edges over [-1, 1]
        centers = [e - 1.0 / n for e in edges]
        total = sum(counts)
        mean = sum(c * x for c, x in zip(counts, centers)) / total
        self._tb.add_histogram_raw(
            name, min=-1.0, max=1.0, num=total, sum=mean * total,
            sum_squares=sum(c * x * x for c, x in zip(counts, centers)),
            bucket_limits=edges, bucket_counts=counts, global_step=step)

    @property
    def writer(self):
        return self._tb

    def close(self) -> None:
        if self._tb is not None and self._owns_tb:
            self._tb.close()


def _jsonable(x: Any) -> Any:
    return float(x) if hasattr(x, "__float__") else str(x)


def keep_records(path: str | Path, keep: Callable[[dict], bool]) -> int:
    """Rewrite a JSONL file atomically with only the records ``keep`` accepts; return how many
    records went. A torn line is dropped too (the next append would otherwise continue it)."""
    p = Path(path)
    if not p.exists():
        return 0
    lines = p.read_text().splitlines()
    records = read_jsonl(p)
    kept = [r for r in records if keep(r)]
    if len(kept) < len(lines):
        atomic_write_text(p, "".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file; a torn last line (killed mid-write) is skipped."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
