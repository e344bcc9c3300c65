"""Recipe probe: single-seed SimCLR (or MoCo v2) runs at a short budget, one change at a time.

Screens preset changes before the 600 s, 3-seed quality run of simclr_quality.py.
Protocol: the same as simclr_quality.py (Fashion-MNIST train split for pretraining,
knn-200: k=200, T=0.1, 60k train memory, 10k test queries, backbone features),
ResNet-18 CIFAR stem width 0.25, preset simclr-fashion-mnist (``--method
moco``: moco-v2-fashion-mnist, rows in moco_recipe_probe.json) plus the probe's
overrides; the cosine schedule is planned over ``budget x images/s``
(``--ips``; by default measured by a 25 s run with the probe's own overrides, as
simclr_quality.py does, since e.g. ``augment.size`` changes the rate) and
``train.max_time_s`` caps the run; steps and warm-up as simclr_quality.py plans them.
One seed (``--seed``, default 0): differences below ~0.3 points are within SimCLR's
600 s seed spread (0.12 std).

    python benchmarks/simclr_recipe_probe.py --budget-s 300 --probe s10 \
        --augment.strength 1.0
Each call appends a row to benchmarks/results/<method>_recipe_probe.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, commit, write_results  # noqa: E402
from simclr_quality import (  # noqa: E402
    PRESETS,
    default_root,
    knn_eval,
    plan_budget,
    selfsup_overrides,
    steady_rate,
)

from selfsup.config import load_config  # noqa: E402
from selfsup.data import load_dataset  # noqa: E402
from selfsup.experiment import load_run_backbone  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402

PROTOCOL = ("knn-200: k=200, T=0.1, cosine, backbone h, 60k train memory, 10k test "
            "queries; preset {} + each row's overrides; seed per row (default 0)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--probe", required=True, help="the probe's name")
    p.add_argument("--method", choices=sorted(PRESETS), default="simclr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=300)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--ips", type=float, default=0.0,
                   help="images/s used to plan the schedule; 0: measure it (a 25 s run)")
    p.add_argument("--data-root", default=default_root())
    # the fields simclr_quality's overrides read: the same backbone, no forced recipe values
    p.set_defaults(width=0.25, temperature=None, crop_min=None)
    args, extra = p.parse_known_args()
    work = ROOT / "benchmarks" / ".work" / "probes"
    preset = PRESETS[args.method]
    overhead = 0.0
    if args.ips <= 0:  # calibrate with the probe's own overrides (data.size changes the rate)
        cal = pretrain(load_config(preset, [
            *selfsup_overrides(args, work), "--train.seed", str(args.seed),
            "--run.name", f"{args.probe}-calibrate", "--train.max_time_s", "25",
            "--train.steps", "100000", *extra]))
        args.ips, overhead = steady_rate(cal, args.batch)
    steps, warmup = plan_budget(args, args.ips, overhead)
    run = pretrain(load_config(preset, [
        *selfsup_overrides(args, work),
        "--train.seed", str(args.seed), "--run.name", args.probe, "--train.steps", str(steps),
        "--optim.warmup_epochs", str(warmup), "--train.max_time_s", str(args.budget_s),
        *extra]))
    s = json.loads((run / "summary.json").read_text())
    train = load_dataset("fashion-mnist", args.data_root, split="train")
    test = load_dataset("fashion-mnist", args.data_root, split="test")
    backbone, _, _ = load_run_backbone(run)
    row = {"probe": args.probe, "method": args.method, "overrides": extra,
           "budget_s": args.budget_s, "batch": args.batch, "seed": args.seed,
           "planned_ips": args.ips,
           "epochs": s["epochs"], "train_s": s["train_s"],
           "images_per_s": s["images_seen"] / s["train_s"], "protocol": "knn-200",
           "value": knn_eval(backbone, train, test)["top1"], "commit": commit(),
           "command": " ".join(["python", *sys.argv])}
    print(json.dumps(row), flush=True)
    name = f"{args.method}_recipe_probe"
    path = RESULTS / f"{name}.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    write_results(name, [*rows, row], "cpu", {"protocol_detail": PROTOCOL.format(preset)})


if __name__ == "__main__":
    main()
