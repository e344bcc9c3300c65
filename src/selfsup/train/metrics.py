"""A method's metrics between host syncs: summed on the device, averaged over steps and ranks
in one all-reduce.

Per-step ``.item()`` calls would stall the device every step; instead each step adds its
metric tensors here, and every ``run.log_every`` steps :meth:`MetricAccumulator.sync` packs
the scalar means, the score-histogram counts and one flag of rank 0 (its clock says the time
budget is spent) into one tensor and all-reduces it: one host sync, and every rank learns at
the same step that the run must stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from selfsup.distributed import all_reduce_mean, is_main_process, world_size


@dataclass
class Synced:
    """What one sync gives every rank."""

    means: dict[str, float]  # each scalar metric, mean over the steps since the last sync and ranks
    histograms: dict[str, list[int]]  # each 1-D metric (histogram counts), summed over ranks
    flag: bool  # rank 0's flag (e.g. its time budget is spent)
    steps: int  # steps since the last sync
    seconds: float  # wall time since the last sync


class MetricAccumulator:
    """Sums of per-step metric tensors (0-D: scalars; 1-D: histogram counts) on the device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.t0 = time.perf_counter()

    def add(self, metrics: dict[str, Tensor]) -> None:
        for k, v in metrics.items():  # device tensors: no host sync here
            self.sums[k] = self.sums[k] + v.float() if k in self.sums else v.float()
        self.count += 1

    def sync(self, flag: bool = False) -> Synced:
        """All-reduce the sums (the one host sync) and start a new window."""
        names = sorted(k for k, v in self.sums.items() if v.ndim == 0)
        hists = sorted(k for k, v in self.sums.items() if v.ndim == 1)
        n = world_size()
        clock = (torch.tensor(float(flag) * n, device=self.device) if is_main_process()
                 else torch.zeros((), device=self.device))  # the mean over ranks is rank 0's
        packed = torch.cat([torch.stack([self.sums[k] / self.count for k in names] + [clock]),
                            *[self.sums[k] for k in hists]])
        values = all_reduce_mean(packed).tolist()
        means = dict(zip(names, values[: len(names)]))
        histograms, i = {}, len(names) + 1
        for k in hists:  # back to counts summed over ranks
            bins = self.sums[k].numel()
            histograms[k] = [round(v * n) for v in values[i : i + bins]]
            i += bins
        out = Synced(means, histograms, values[len(names)] > 0.5, self.count,
                     time.perf_counter() - self.t0)
        self._reset()
        return out
