"""Does the default numerics cost quality? fp32 against ``train.precision: auto`` at equal
images, paired by seed, on the validation split (issue 24).

``auto`` trains under bf16 autocast with channels_last on CPUs that run bf16 natively. Each
seed runs the data set's preset on the issue-24 setting (ResNet-18 CIFAR stem w0.25, batch
256, ``--epochs`` epochs; the same data order, augmentations and initial weights in both)
once in fp32 contiguous and once in the default numerics, and scores knn-200 (k=200, T=0.1,
cosine, backbone h, features extracted in fp32) with the train split less its class-balanced
10 % as memory and that 10 % as queries (``split: val``). The paired difference is read
against the spread over seeds; the goal is |auto - fp32| <= 0.5 points.

    python benchmarks/precision_quality.py --dataset cifar10-5k --epochs 15 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, ROOT, SETTING, commit, print_table, shared_data, write_results  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402

NUMERICS = {"fp32": ["--train.precision", "fp32", "--train.channels_last", "false"],
            "auto": []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10-5k")
    p.add_argument("--method", choices=["simclr", "moco"], default="simclr")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dirty-ok", action="store_true", help="allow uncommitted changes")
    args = p.parse_args()
    if commit().endswith("-dirty") and not args.dirty_ok:
        p.error("uncommitted changes to tracked files: commit first (or --dirty-ok)")
    name, folder, data_args, presets = DATASETS[args.dataset]
    work = ROOT / "benchmarks" / ".work" / "precision_quality"
    results: dict[str, list[dict]] = {k: [] for k in NUMERICS}
    for seed in args.seeds:
        for numerics, extra in NUMERICS.items():
            run = pretrain(load_config(presets[args.method], [
                "--data.dataset", name, "--data.root", str(shared_data(folder)), *data_args,
                *SETTING, "--train.epochs", str(args.epochs), "--train.seed", str(seed),
                "--run.out_dir", str(work), "--run.name",
                f"{args.dataset}-{args.method}-{numerics}-s{seed}", *extra]))
            s = json.loads((run / "summary.json").read_text())
            results[numerics].append({"seed": seed, "top1": 100 * s["final_knn_top1"],
                                      "train_s": s["train_s"], "numerics": s["numerics"]})
            print(f"seed {seed} {numerics}: knn-200 on val {100 * s['final_knn_top1']:.2f} % "
                  f"in {s['train_s']} s ({s['numerics']})", flush=True)
    common = {"method": args.method, "dataset": args.dataset, "recipe": presets[args.method],
              "epochs": args.epochs, "split": "val", "protocol": "knn-200", "seeds": args.seeds}
    rows = []
    for numerics, res in results.items():
        top1 = [r["top1"] for r in res]
        rows.append({"system": f"selfsup {numerics}", **common, "numerics": res[0]["numerics"],
                     "knn_top1": round(statistics.mean(top1), 2),
                     "std": round(statistics.stdev(top1), 2) if len(top1) > 1 else 0.0,
                     "per_seed": [round(t, 2) for t in top1],
                     "train_s": [r["train_s"] for r in res]})
    diffs = [b["top1"] - a["top1"] for a, b in zip(results["fp32"], results["auto"])]
    rows.append({"system": "auto - fp32 (paired by seed)", **common,
                 "knn_top1": round(statistics.mean(diffs), 2),
                 "per_seed": [round(d, 2) for d in diffs],
                 "speedup": round(statistics.mean(r["train_s"] for r in results["fp32"])
                                  / statistics.mean(r["train_s"] for r in results["auto"]), 3)})
    print_table(rows, ["system", "knn_top1", "std", "per_seed"])
    print(f"wrote {write_results('precision_quality', rows, 'cpu')}")


if __name__ == "__main__":
    main()
