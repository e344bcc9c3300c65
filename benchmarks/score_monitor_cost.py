"""Cost of the score monitor against the training step it rides on.

The monitor (``selfsup.methods.score_stats``: mean positive score, mean and
variance of the negative scores, two fixed-bin histograms) runs every step on
the scores the loss already computed. This times it on tensors of a step's
real shapes (MoCo: N x K negatives; SimCLR: 2N x 2(N-1)) and divides by the
time of one full optimisation step of the same configuration (the loop's own
``optimisation_step``, monitor included), measured in the same process.

    python benchmarks/score_monitor_cost.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402
from simclr_quality import default_root  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.methods.score_stats import score_stats  # noqa: E402
from selfsup.train.pretrain import (  # noqa: E402
    build_training,
    make_views,
    optimisation_step,
    precision_dtype,
)


def _time(fn, n: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    device = torch.device(args.device)
    rows = []
    for preset, method in (("moco-v2-fashion-mnist", "moco"), ("simclr-fashion-mnist", "simclr")):
        cfg = load_config(preset, ["--data.root", default_root(), "--train.batch_size",
                                   str(args.batch), "--model.width", "0.25", "--eval.knn_every",
                                   "-1", "--train.device", args.device])
        _, augment, _, loader, model, optimizer = build_training(cfg, device)
        gen = torch.Generator(device=device)
        views = make_views(loader, augment, gen, 0, 0)
        dtype = precision_dtype(cfg, device)
        step_s = _time(partial(optimisation_step, model, optimizer, views, 0.01, dtype, device),
                       args.steps, device)
        n = args.batch
        if method == "moco":
            l_pos, l_neg = torch.rand(n, device=device), torch.rand(n, cfg.method.moco.queue_size,
                                                                  device=device)
        else:
            l_pos, l_neg = torch.rand(2 * n, device=device), torch.rand(2 * n, 2 * n - 2,
                                                                      device=device)
        mon_s = _time(partial(score_stats, l_pos, l_neg, cfg.run.score_bins), 200, device)
        rows.append({"system": "selfsup", "method": method, "dataset": "fashion-mnist",
                     "backbone": "resnet18-cifar w0.25 (1 ch)", "batch": n,
                     "negatives_per_query": l_neg.shape[1], "protocol": "monitor-cost",
                     "metric": "monitor_over_step", "step_ms": 1000 * step_s,
                     "monitor_ms": 1000 * mon_s, "value": mon_s / step_s})
    print_table(rows, ["method", "negatives_per_query", "step_ms", "monitor_ms", "value"])
    name = "score_monitor_cost" + ("" if args.device == "cpu" else "_cuda")
    print(f"wrote {write_results(name, rows, args.device)}")


if __name__ == "__main__":
    main()
