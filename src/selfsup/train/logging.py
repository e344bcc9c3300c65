"""Run logging: JSONL always, TensorBoard when asked, on rank 0 only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from selfsup.distributed import is_main_process


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl`` (and TensorBoard scalars).

    Appending keeps earlier records when a run is resumed; records carry the
    step, so a reader can drop anything logged after the resumed step.
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
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
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
