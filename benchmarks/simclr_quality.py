"""Quality at a fixed CPU wall-clock budget: selfsup vs a random floor vs lightly.

SimCLR by default; ``--method moco`` runs MoCo v2 (preset moco-v2-fashion-mnist
against lightly's documented MoCo recipe) and writes moco_quality.json.

Protocol (docs/protocols.md): full Fashion-MNIST train split (60,000 images, labels
unused) for pretraining; ``knn-200`` (k=200, T=0.1, cosine on backbone
features, train split as memory, test split as queries) for every system,
computed by the same selfsup code. Same backbone (ResNet-18, CIFAR stem,
width 0.25, 1 input channel), batch 256, seed and budget for selfsup and
lightly; they run one after the other in this script.

selfsup plans its cosine schedule over the budget from a short calibration
run (its images/s), which is not counted in the budget; the budget itself is
a hard wall-clock cap on the training loop for both systems.

    python benchmarks/simclr_quality.py --budget-s 600
    python benchmarks/simclr_quality.py --method moco --budget-s 600
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PEER_PYTHON, ROOT, peer_available, print_table, write_results  # noqa: E402

from selfsup.augment import build_recipe  # noqa: E402
from selfsup.config import base_lr_for, load_config  # noqa: E402
from selfsup.data import load_dataset  # noqa: E402
from selfsup.eval import extract_features, knn_accuracy  # noqa: E402
from selfsup.experiment import load_run_backbone  # noqa: E402
from selfsup.models import resnet  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402

MEAN, STD = (0.2860,), (0.3530,)
BACKBONE = "resnet18-cifar w0.25 (1 ch)"


def default_root() -> str:
    for parent in ROOT.parents:
        if (parent / "shared" / "data" / "fashion-mnist").is_dir():
            return str(parent / "shared" / "data" / "fashion-mnist")
    return "data/fashion-mnist"


def knn_eval(backbone, train, test) -> dict:
    tf = build_recipe("eval", size=28, mean=MEAN, std=STD)
    g = torch.Generator()
    feats = [extract_features(backbone, s.images, lambda x: tf(x, g), batch_size=1024)
             for s in (train, test)]
    return knn_accuracy(feats[0], train.labels, feats[1], test.labels, 10, k=200, temperature=0.1)


PRESETS = {"simclr": "simclr-fashion-mnist", "moco": "moco-v2-fashion-mnist"}
PEERS = {"simclr": "lightly_simclr.py", "moco": "lightly_moco.py"}


def selfsup_overrides(args, work: Path) -> list[str]:
    out = ["--data.dataset", "fashion-mnist", "--data.root", args.data_root,
           "--model.width", str(args.width), "--train.batch_size", str(args.batch),
           "--train.seed", str(args.seed), "--eval.knn_every", "-1", "--run.progress", "false",
           "--run.out_dir", str(work)]
    if args.method == "simclr":
        out += ["--method.temperature", str(args.temperature),
                "--augment.crop_scale", f"[{args.crop_min}, 1.0]"]
    return out


def run_selfsup(args, work: Path) -> tuple[dict, Path]:
    base = selfsup_overrides(args, work)
    # 1. calibration: images/s of this machine, to plan the schedule's length
    cal = pretrain(load_config(PRESETS[args.method],
                               [*base, "--run.name", "calibrate", "--train.max_time_s", "25",
                                "--train.steps", "100000"]))
    s = json.loads((cal / "summary.json").read_text())
    ips = s["images_seen"] / s["train_s"]
    steps = max(int(args.budget_s * ips / args.batch), 10)
    epochs_planned = steps * args.batch / 60_000
    # 2. the budgeted run: cosine over the planned steps, warm-up 10 % of them
    warmup = 0.1 * epochs_planned if args.method == "simclr" else 0.0  # MoCo v2: none
    run = pretrain(load_config(PRESETS[args.method], [
        *base, "--run.name", "selfsup", "--train.steps", str(steps),
        "--optim.warmup_epochs", str(warmup), "--train.max_time_s", str(args.budget_s)]))
    summary = json.loads((run / "summary.json").read_text())
    summary["planned_steps"] = steps
    return summary, run


def run_lightly(args, work: Path) -> dict:
    out = work / "lightly"
    cmd = [str(PEER_PYTHON), str(ROOT / "benchmarks" / "peers" / PEERS[args.method]),
           "--data-root", args.data_root, "--budget-s", str(args.budget_s), "--batch",
           str(args.batch), "--width", str(args.width), "--seed", str(args.seed), "--threads",
           str(torch.get_num_threads()), "--workers", str(args.lightly_workers), "--out", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads((out / "result.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", choices=sorted(PRESETS), default="simclr")
    p.add_argument("--data-root", default=default_root())
    p.add_argument("--budget-s", type=float, default=600)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--crop-min", type=float, default=0.2)
    p.add_argument("--lightly-workers", type=int, default=1)
    p.add_argument("--skip-lightly", action="store_true")
    p.add_argument("--work", default=None)
    args = p.parse_args()
    work = Path(args.work or ROOT / "benchmarks" / ".work" / f"{args.method}_quality")
    if work.exists():
        import shutil

        shutil.rmtree(work)
    train = load_dataset("fashion-mnist", args.data_root, split="train")
    test = load_dataset("fashion-mnist", args.data_root, split="test")
    common = {"method": "simclr" if args.method == "simclr" else "moco_v2",
              "dataset": "fashion-mnist", "backbone": BACKBONE,
              "batch": args.batch, "budget_s": args.budget_s, "protocol": "knn-200",
              "metric": "top1", "seeds": [args.seed]}
    rows = []

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    acc = knn_eval(resnet(18, args.width, "cifar", in_channels=1), train, test)
    rows.append({"system": "random-init", **common, "budget_s": 0, "epochs": 0.0,
                 "value": acc["top1"], "top5": acc["top5"], "eval_s": time.perf_counter() - t0})

    summary, run = run_selfsup(args, work)
    backbone, cfg, _ = load_run_backbone(run)
    acc = knn_eval(backbone, train, test)
    mo = cfg.method.moco
    rows.append({"system": "selfsup", **common, "epochs": summary["epochs"],
                 "train_s": summary["train_s"], "value": acc["top1"], "top5": acc["top5"],
                 "images_per_s": summary["images_seen"] / summary["train_s"],
                 "recipe": {"preset": PRESETS[args.method], "optimizer": cfg.optim.optimizer,
                            "lr": base_lr_for(cfg), "weight_decay": cfg.optim.weight_decay,
                            "temperature": cfg.method.temperature,
                            "augment": cfg.augment.recipe, "crop_scale": cfg.augment.crop_scale,
                            "momentum": mo.momentum if args.method == "moco" else None,
                            "queue_size": mo.queue_size if args.method == "moco" else None,
                            "planned_steps": summary["planned_steps"],
                            "schedule": f"warmup {cfg.optim.warmup_epochs:.2f} ep + cosine "
                                        "over planned steps"}})

    if not args.skip_lightly and peer_available():
        res = run_lightly(args, work)
        b = resnet(18, args.width, "cifar", in_channels=1)
        b.load_state_dict(torch.load(work / "lightly" / "backbone.pt", weights_only=True))
        acc = knn_eval(b, train, test)
        rows.append({"system": f"lightly {res['lightly_version']}", **common,
                     "epochs": res["epochs"], "train_s": res["train_s"], "value": acc["top1"],
                     "top5": acc["top5"], "images_per_s": res["images_per_s"],
                     "recipe": res["recipe"], "peer_torch": res["torch_version"]})
    elif not args.skip_lightly:
        print(f"lightly venv not found at {PEER_PYTHON}; see benchmarks/peers/README.md")

    print_table(rows, ["system", "epochs", "train_s", "images_per_s", "value", "top5"])
    path = write_results(f"{args.method}_quality", rows, "cpu",
                         {"protocol_detail": "knn-200: k=200, T=0.1, cosine, backbone h, "
                          "eval transform (normalise only), 60k train memory, 10k test queries"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
