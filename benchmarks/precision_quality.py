"""Does bf16 cost quality? The same fixed-step SimCLR run in fp32 and in the new default.

``train.precision: auto`` trains under bf16 autocast (and channels_last) on CPUs that run
bf16 natively. This runs the simclr-fashion-mnist preset for a fixed number of steps (the
same data order, augmentations and initial weights for a given seed) once in fp32 contiguous
(the old default) and once in the default numerics, for each seed, and compares knn-200
(docs/protocols.md: k=200, T=0.1, cosine on backbone features, 60k train split as memory,
10k test split as queries; feature extraction in fp32 for both). The difference is read
against the spread over seeds.

    python benchmarks/precision_quality.py --steps 250 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, write_results  # noqa: E402
from simclr_quality import BACKBONE, default_root, knn_eval  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.data import load_dataset  # noqa: E402
from selfsup.experiment import load_run_backbone  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402

NUMERICS = {"fp32": ["--train.precision", "fp32", "--train.channels_last", "false"],
            "auto": []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", default=default_root())
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".work" / "precision_quality"))
    args = p.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    train = load_dataset("fashion-mnist", args.data_root, split="train")
    test = load_dataset("fashion-mnist", args.data_root, split="test")
    results: dict[str, list[dict]] = {k: [] for k in NUMERICS}
    for seed in args.seeds:
        for name, extra in NUMERICS.items():
            cfg = load_config("simclr-fashion-mnist", [
                "--data.root", args.data_root, "--model.width", str(args.width),
                "--train.batch_size", str(args.batch), "--train.steps", str(args.steps),
                "--train.seed", str(seed), "--optim.warmup_epochs", "0.1",
                "--eval.knn_every", "-1", "--run.progress", "false", "--run.out_dir", str(work),
                "--run.name", f"{name}-s{seed}", *extra])
            run = pretrain(cfg)
            summary = json.loads((run / "summary.json").read_text())
            acc = knn_eval(load_run_backbone(run)[0], train, test)
            results[name].append({"seed": seed, "top1": acc["top1"], "top5": acc["top5"],
                                  "train_s": summary["train_s"], "loss": summary["final_loss"],
                                  "numerics": summary.get("numerics")})
            print(f"seed {seed} {name}: knn-200 {acc['top1']:.4f} in {summary['train_s']} s "
                  f"({summary.get('numerics')})", flush=True)
    common = {"method": "simclr", "dataset": "fashion-mnist", "backbone": BACKBONE,
              "batch": args.batch, "steps": args.steps, "protocol": "knn-200", "metric": "top1",
              "seeds": args.seeds, "preset": "simclr-fashion-mnist (warm-up 0.1 epochs)"}
    rows = []
    for name, res in results.items():
        top1 = [r["top1"] for r in res]
        rows.append({"system": f"selfsup {name}", **common, "numerics": res[0]["numerics"],
                     "value": statistics.mean(top1), "std": statistics.stdev(top1)
                     if len(top1) > 1 else 0.0, "per_seed": top1,
                     "train_s": [r["train_s"] for r in res],
                     "final_loss": [r["loss"] for r in res]})
    diffs = [b["top1"] - a["top1"] for a, b in zip(results["fp32"], results["auto"])]
    rows.append({"system": "auto - fp32 (paired by seed)", **common,
                 "value": statistics.mean(diffs),
                 "per_seed": diffs, "fp32_seed_std": rows[0]["std"],
                 "speedup": statistics.mean(r["train_s"] for r in results["fp32"])
                 / statistics.mean(r["train_s"] for r in results["auto"])})
    print_table(rows, ["system", "value", "std", "per_seed"])
    print(f"wrote {write_results('precision_quality', rows, 'cpu')}")


if __name__ == "__main__":
    main()
