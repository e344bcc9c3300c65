"""Feature Transformation ablation (Zhu et al., ICCV 2021) at a fixed step budget, 3 seeds.

Conditions, each trained from scratch for the same number of optimiser steps:
MoCo v2, MoCo v2 + FT (positive extrapolation, negative interpolation, both,
and both starting at half the budget), SimCLR and SimCLR + FT (both); on
Fashion-MNIST also the MoCo momentum sweep m in {0.5, 0.9, 0.99} (0.99 is the
MoCo v2 row) with its score plots.

Protocol (docs/protocols.md): pretraining on the train split, labels unused;
``knn-200`` (k=200, T=0.1, cosine on backbone features, the whole train split
as memory, the test split as queries), by the loop's final monitor. Backbone
ResNet-18, CIFAR stem, width 0.25; batch 256. The optimisation is that of the
shipped Fashion-MNIST presets (MoCo v2: SGD lr 0.24, T 0.1, K 4096, m 0.99,
cosine, no warm-up; SimCLR: LARS, T 0.2, crops >= 0.2, warm-up 10 % of the
budget), for both data sets; on the 5,000-image CIFAR-10 subset the queue is
1024 so that it holds well under one epoch of keys. FT uses the authors'
recipe: lambda_ex = 1 + Beta(2, 2), lambda_in ~ Beta(1.6, 1.6), one draw per
step, no re-normalisation.

Each finished run appends to the results file, and a rerun skips runs whose
summary exists in ``--work``, so the script can be stopped and resumed.

    python benchmarks/ft_ablation.py                 # ~60 min on 2 CPU cores
    python benchmarks/ft_ablation.py --datasets fashion-mnist --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, commit, print_table, write_results  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.plots import plot_runs  # noqa: E402
from selfsup.train.logging import read_jsonl  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402

PRESETS = {"moco": "moco-v2-fashion-mnist", "simclr": "simclr-fashion-mnist"}
EX, IN = ["--method.ft.extrapolate", "true"], ["--method.ft.interpolate", "true"]
# name -> (method, overrides); ``None`` in place of the start epoch means "half the budget"
CONDITIONS: dict[str, tuple[str, list[str]]] = {
    "moco_v2": ("moco", []),
    "moco_v2+ex": ("moco", EX),
    "moco_v2+in": ("moco", IN),
    "moco_v2+ex+in": ("moco", EX + IN),
    "moco_v2+ex+in@half": ("moco", EX + IN + ["--method.ft.start_epoch", "HALF"]),
    "simclr": ("simclr", ["--method.temperature", "0.2"]),
    "simclr+ex+in": ("simclr", ["--method.temperature", "0.2"] + EX + IN),
    "moco_v2_m0.9": ("moco", ["--method.moco.momentum", "0.9"]),
    "moco_v2_m0.5": ("moco", ["--method.moco.momentum", "0.5"]),
}
SWEEP = ["moco_v2_m0.5", "moco_v2_m0.9", "moco_v2"]  # m = 0.5, 0.9, 0.99
FT_PLOT = ["moco_v2", "moco_v2+ex", "moco_v2+in", "moco_v2+ex+in", "moco_v2+ex+in@half"]


def shared(*parts: str) -> Path:
    """``shared/data/...`` beside the checkout (or under $SELFSUP_SHARED_DATA)."""
    if os.environ.get("SELFSUP_SHARED_DATA"):
        return Path(os.environ["SELFSUP_SHARED_DATA"]).joinpath(*parts)
    for parent in ROOT.parents:
        if (parent / "shared" / "data").is_dir():
            return parent.joinpath("shared", "data", *parts)
    return ROOT.joinpath("data", *parts)


DATASETS = {
    "fashion-mnist": {"dataset": "fashion-mnist", "root": shared("fashion-mnist"),
                      "images": 60_000, "steps": 150, "extra": [],
                      "conditions": list(CONDITIONS)},
    "cifar10-5k": {"dataset": "cifar10",
                       "root": shared("cifar10-subset", "cifar-10-batches-py-first1000"),
                       "images": 5_000, "steps": 120,
                       "extra": ["--method.moco.queue_size", "1024", "--data.verify", "warn"],
                       "conditions": [c for c in CONDITIONS
                                      if c not in SWEEP[:2] and not c.endswith("@half")]},
}


def overrides(ds: dict, cond: str, seed: int, work: Path, width: float, batch: int) -> list[str]:
    method, extra = CONDITIONS[cond]
    epochs = ds["steps"] * batch / ds["images"]
    out = ["--data.dataset", ds["dataset"], "--data.root", str(ds["root"]),
           "--model.width", str(width), "--train.batch_size", str(batch),
           "--train.seed", str(seed), "--train.steps", str(ds["steps"]),
           "--eval.knn_every", "0", "--eval.knn_k", "200", "--eval.knn_temperature", "0.1",
           "--run.progress", "false", "--run.log_every", "10", "--run.out_dir", str(work),
           "--run.name", f"{ds['dataset']}-{cond}-s{seed}"]
    if method == "simclr":
        out += ["--augment.crop_scale", "[0.2, 1.0]",
                "--optim.warmup_epochs", f"{0.1 * epochs:.4f}"]
    else:
        out += ds["extra"]
    return out + [f"{epochs / 2:.4f}" if x == "HALF" else x for x in extra]


def random_floor(ds_name: str, seed: int, args) -> dict:
    """The same backbone, randomly initialised with the seed, under the same k-NN protocol."""
    import torch

    from selfsup.experiment import eval_augmentation, load_data, make_backbone
    from selfsup.train.monitor import knn_monitor

    cfg = load_config(PRESETS["moco"], overrides(DATASETS[ds_name], "moco_v2", seed,
                                                 Path(args.work), args.width, args.batch))
    data = load_data(cfg)
    torch.manual_seed(seed)
    backbone = make_backbone(cfg, data.channels)
    res = knn_monitor(backbone, data, eval_augmentation(data), cfg, torch.device("cpu"))
    return row(ds_name, "random-init", seed, {"steps": 0, "epochs": 0.0,
                                               "final_knn_top1": res["knn_top1"],
                                               "final_knn_top5": res["knn_top5"]}, {}, args)


def row(ds_name: str, cond: str, seed: int, s: dict, last: dict, args, run: str = "") -> dict:
    return {"system": "selfsup", "method": cond, "dataset": ds_name,
            "backbone": f"resnet18-cifar w{args.width:g}", "batch": args.batch,
            "budget_steps": s["steps"], "epochs": s["epochs"], "protocol": "knn-200",
            "metric": "top1", "value": s.get("final_knn_top1"), "top5": s.get("final_knn_top5"),
            "seeds": [seed], "final_loss": s.get("final_loss"), "pos_sim": last.get("pos_sim"),
            "neg_sim": last.get("neg_sim"), "neg_var": last.get("neg_var"),
            "collapse_step": s.get("collapse_step"), "train_s": s.get("train_s"), "run": run}


def run_one(ds_name: str, cond: str, seed: int, args) -> dict:
    ds = DATASETS[ds_name]
    run_dir = Path(args.work) / f"{ds['dataset']}-{cond}-s{seed}"
    if not (run_dir / "summary.json").exists():
        if run_dir.exists():  # an interrupted run: start it again from scratch
            import shutil

            shutil.rmtree(run_dir)
        cfg = load_config(PRESETS[CONDITIONS[cond][0]],
                          overrides(ds, cond, seed, Path(args.work), args.width, args.batch))
        pretrain(cfg)
    s = json.loads((run_dir / "summary.json").read_text())
    scores = read_jsonl(run_dir / "scores.jsonl")
    return row(ds_name, cond, seed, s, scores[-1] if scores else {}, args, str(run_dir))


def aggregate(rows: list[dict]) -> list[dict]:
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        def values(cond: str, ds: str = ds) -> list[float]:
            return [100 * r["value"] for r in rows if r["dataset"] == ds and r["method"] == cond]

        for cond in ["random-init", *CONDITIONS]:
            acc = values(cond)
            if not acc:
                continue
            ref = values("simclr" if cond.startswith("simclr") else "moco_v2")
            mean = statistics.fmean(acc)
            out.append({"dataset": ds, "condition": cond, "seeds": len(acc),
                        "knn_top1_mean_pct": round(mean, 2),
                        "knn_top1_std_pct": round(statistics.stdev(acc), 2) if acc[1:] else None,
                        "delta_vs_baseline_pct": round(mean - statistics.fmean(ref), 2)
                        if ref and cond != "random-init" else None,
                        "collapsed_runs": sum(r["collapse_step"] is not None for r in rows
                                              if r["dataset"] == ds and r["method"] == cond)})
    return out


def plots(rows: list[dict], out: Path) -> None:
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for tag, conds in (("momentum", SWEEP), ("ft_moco", FT_PLOT)):
            runs = [r["run"] for c in conds for r in rows
                    if r["dataset"] == ds and r["method"] == c and r["seeds"] == [0]]
            if len(runs) > 1:
                plot_runs(runs, out / f"{ds}_{tag}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, nargs=2, metavar=("FASHION_MNIST", "CIFAR_SUBSET"),
                   default=None, help="step budgets (default 150 and 120)")
    p.add_argument("--work", default="/tmp/selfsup-ft-ablation")
    args = p.parse_args()
    if args.steps:
        DATASETS["fashion-mnist"]["steps"], DATASETS["cifar10-5k"]["steps"] = args.steps
    rows: list[dict] = []
    started_at = commit()  # the code every run used, even if the tree changes meanwhile
    for seed in args.seeds:  # every condition once before any is repeated
        for ds in args.datasets:
            rows.append(random_floor(ds, seed, args))
            for cond in DATASETS[ds]["conditions"]:
                rows.append(run_one(ds, cond, seed, args))
                print(f"{ds} {cond} seed {seed}: knn-200 {100 * rows[-1]['value']:.2f} %"
                      f"{'  (collapsed)' if rows[-1]['collapse_step'] else ''}", flush=True)
                write_results("ft_ablation", rows, "cpu", {
                    "commit": started_at, "summary": aggregate(rows),
                    "protocol": "knn-200 (k=200, T=0.1), see the script's docstring"})
    summary = aggregate(rows)
    print_table(summary, ["dataset", "condition", "seeds", "knn_top1_mean_pct",
                          "knn_top1_std_pct", "delta_vs_baseline_pct", "collapsed_runs"])
    plots(rows, RESULTS / "ft_ablation")
    print(f"results: {RESULTS / 'ft_ablation.json'}; plots: {RESULTS / 'ft_ablation'}")


if __name__ == "__main__":
    main()
