"""SimCLR v2's three stages on real data, against supervised training from scratch.

1. Pretrain SimCLR with v2's 3-layer head on the full train split (labels
   unused), ``--pretrain-steps`` steps, seed 0.
2. Fine-tune on class-balanced 1 % and 10 % label subsets (subset seeds 0, 1,
   2), from head layer k = 0 (SimCLR v1) and k = 1 (v2), against the same
   architecture from random init trained on the same labels with the same
   recipe ("scratch"). Recipe: SGD (nesterov, momentum 0.9), lr 0.05, cosine,
   no weight decay, batch 128, random resized crop (0.2-1) + flip; 60 epochs on
   1 %, 10 epochs on 10 %. Top-1 on the whole test split.
3. Distil the 10 % / k = 1 teacher of subset seed 0 into a smaller student
   (ResNet-18 at half the teacher's width, from scratch) on all train images
   without labels, tau = 1, alpha = 1, ``--distill-epochs`` epochs (one run each), same
   recipe; also self-distillation into the teacher's own architecture.

Every run folder is kept in ``--work``; a rerun skips finished stages.

    python benchmarks/semi_supervised.py                    # ~30 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, print_table, write_results  # noqa: E402
from ft_ablation import shared  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.semi import distill, finetune  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402
from selfsup.train.supervised import SupervisedRecipe  # noqa: E402

SUBSETS = {"1pct": (0.01, 60), "10pct": (0.10, 10)}  # fraction, fine-tuning epochs


def pretrained_run(args, work: Path, name: str, steps: int) -> Path:
    """The SimCLR v2 pretraining run."""
    run = work / name
    if (run / "summary.json").exists():
        return run
    shutil.rmtree(run, ignore_errors=True)  # an interrupted run starts over under its name
    data = DATA[args.dataset]
    over = ["--data.dataset", data["dataset"], "--data.root", str(data["root"]),
            "--data.verify", "warn",  # cifar10-5k is a partial copy: other file sizes
            "--model.width", str(args.width),
            "--train.seed", "0", "--train.steps", str(steps), "--eval.knn_every", "0",
            "--optim.warmup_epochs", f"{0.1 * steps * 256 / data['images']:.4f}",
            "--run.progress", "false", "--run.out_dir", str(work), "--run.name", name]
    return pretrain(load_config("simclr-v2-fashion-mnist", over))


def summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


DATA = {"fashion-mnist": {"dataset": "fashion-mnist", "root": shared("fashion-mnist"),
                          "images": 60_000},
        "cifar10-5k": {"dataset": "cifar10", "images": 5_000,
                       "root": shared("cifar10-subset", "cifar-10-batches-py-first1000")}}
DATASET = "fashion-mnist"  # set by --dataset


def row(stage: str, system: str, data: str, value: float, seeds: list[int], **extra) -> dict:
    return {"system": system, "method": stage, "dataset": DATASET, "metric": "top1",
            "protocol": data, "value": value, "seeds": seeds, **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATA), default="fashion-mnist")
    p.add_argument("--pretrain-steps", type=int, default=1200)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--distill-epochs", type=int, nargs="+", default=[2])
    p.add_argument("--ft-epochs", type=int, nargs=2, metavar=("ONE_PCT", "TEN_PCT"),
                   default=None, help="fine-tuning epochs (default 60 and 10)")
    p.add_argument("--work", default="/tmp/selfsup-semi")
    args = p.parse_args()
    global DATASET
    DATASET = args.dataset
    if args.ft_epochs:
        for tag, epochs in zip(SUBSETS, args.ft_epochs):
            SUBSETS[tag] = (SUBSETS[tag][0], epochs)
    work = Path(args.work)
    started_at = commit()
    pre = pretrained_run(args, work, "pretrain", args.pretrain_steps)
    rows = [row("pretrain", "selfsup", "knn-200", summary(pre)["final_knn_top1"], [0],
                steps=args.pretrain_steps, epochs=summary(pre)["epochs"])]
    table = []
    for tag, (fraction, epochs) in SUBSETS.items():
        for system, k in (("scratch", 0), ("simclr-v2 k=0", 0), ("simclr-v2 k=1", 1)):
            accs = []
            for seed in args.seeds:
                out = work / f"{system.split()[0]}-ft-{tag}-k{k}-s{seed}"
                if not (out / "summary.json").exists():
                    recipe = SupervisedRecipe(epochs=epochs, batch_size=128, lr=0.05,
                                              weight_decay=0.0, seed=seed)
                    finetune(pre, label_fraction=fraction, subset_seed=seed, head_layer=k,
                             recipe=recipe, scratch=system == "scratch", out_dir=out,
                             progress=False)
                accs.append(summary(out)["test_top1"])
                print(f"{tag} {system} seed {seed}: top-1 {100 * accs[-1]:.2f} %", flush=True)
            proto = f"finetune-{tag}"
            rows.append(row("finetune", system, proto, statistics.fmean(accs), args.seeds,
                            per_seed=accs, epochs=epochs))
            table.append({"stage": proto, "system": system, "seeds": len(accs),
                          "top1_mean_pct": round(100 * statistics.fmean(accs), 2),
                          "top1_std_pct": round(100 * statistics.stdev(accs), 2)
                          if len(accs) > 1 else None})
    teacher = work / f"simclr-v2-ft-10pct-k1-s{args.seeds[0]}"
    for epochs in args.distill_epochs:
        for student, width in (("resnet18", args.width / 2), ("resnet18", args.width)):
            out = work / f"distill-w{width:g}-e{epochs}"
            if not (out / "summary.json").exists():
                shutil.rmtree(out, ignore_errors=True)
                recipe = SupervisedRecipe(epochs=epochs, batch_size=256, lr=0.05,
                                          weight_decay=0.0, seed=0)
                distill(teacher, student=student, student_width=width, recipe=recipe,
                        out_dir=out, progress=False)
            s = summary(out)
            kind = "self-distillation" if width == args.width else "big-to-small"
            rows.append(row("distill", f"student resnet18 w{width:g} ({kind})", "test top-1",
                            s["test_top1"], [0], teacher_top1=s["teacher_test_top1"],
                            epochs=epochs, train_s=s["train_s"]))
            table.append({"stage": f"distill {kind} {epochs} ep", "system": f"resnet18 w{width:g}",
                          "seeds": 1, "top1_mean_pct": round(100 * s["test_top1"], 2),
                          "teacher_pct": round(100 * s["teacher_test_top1"], 2)})
    print_table(table, ["stage", "system", "seeds", "top1_mean_pct", "top1_std_pct",
                        "teacher_pct"])
    name = "semi_supervised" + ("" if args.dataset == "fashion-mnist" else f"_{args.dataset}")
    path = write_results(name, rows, "cpu", {
        "commit": started_at, "table": table, "backbone": f"resnet18-cifar w{args.width:g}",
        "protocol_detail": "see the script's docstring; top-1 on the data set's whole test split"})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
