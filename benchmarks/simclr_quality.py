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
run (its steady images/s and its one-time start-up, i.e. the compile), which is not
counted in the budget; the budget itself is a hard wall-clock cap on the training loop
for both systems, compile included (inductor's caches are off, so every run compiles
from scratch). selfsup runs in its default numerics (train.precision / channels_last
auto: bf16 + NHWC on a CPU with native bf16), eager unless ``--compile``, once per
``--seeds``.

lightly runs each of ``--lightly-recipes``: ``example`` (its documented example,
examples/pytorch/simclr.py) and ``benchmark`` (its CIFAR-10 benchmark settings: SGD
momentum 0.9, lr 0.06 x batch/128, weight decay 5e-4, cosine, T=0.5), in its own venv,
fp32 as documented. Time to accuracy: the target is the best lightly accuracy at the
budget; each system's time to reach it is read from its accuracy-vs-training-time
curve (selfsup: its epoch checkpoints; lightly: backbones saved at --curve-s seconds),
linearly interpolated between the two points around the target, and the ratio is
lightly's time over selfsup's (mean over selfsup's seeds).

    python benchmarks/simclr_quality.py --budget-s 600 --seeds 0 1 2
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
from selfsup.runs import RunFolder  # noqa: E402
from selfsup.train.logging import read_jsonl  # noqa: E402
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
           "--eval.knn_every", "-1", "--run.progress", "false",
           "--run.out_dir", str(work)]
    if args.temperature is not None:
        out += ["--method.temperature", str(args.temperature)]
    if args.crop_min is not None:
        out += ["--augment.crop_scale", f"[{args.crop_min}, 1.0]"]
    return out


def steady_rate(run: Path, batch: int) -> tuple[float, float]:
    """(images/s after the first logged steps, seconds of one-time overhead before them):
    the start-up (torch.compile's first step) does not repeat, so it is planned once."""
    rows = read_jsonl(run / "metrics.jsonl")
    start = next(r for r in rows if r.get("event") == "start")
    logged = [r for r in rows if "loss" in r]
    first, last = logged[0], logged[-1]
    ips = (last["step"] - first["step"]) * batch / (last["time"] - first["time"])
    overhead = max(first["time"] - start["time"] - first["step"] * batch / ips, 0.0)
    return ips, overhead


def plan_budget(args, ips: float, overhead: float) -> tuple[int, float]:
    """(steps, warm-up epochs) that fill ``args.budget_s`` at ``ips`` images/s after the
    one-time ``overhead``: the cosine runs over these steps, warm-up 10 % of them for SimCLR
    and none for MoCo v2 (its recipe has none)."""
    steps = max(int((args.budget_s - overhead) * ips / args.batch), 10)
    epochs = steps * args.batch / 60_000  # the Fashion-MNIST train split
    return steps, (0.1 * epochs if args.method == "simclr" else 0.0)


def run_selfsup(args, work: Path, seed: int) -> tuple[dict, Path]:
    base = [*selfsup_overrides(args, work), "--train.seed", str(seed),
            "--train.compile", str(args.compile).lower()]
    # 1. calibration: images/s of this machine, to plan the schedule's length, and the
    # compile time, which the budgeted run pays again inside its budget (caches are off)
    torch._dynamo.reset()
    cal = pretrain(load_config(PRESETS[args.method],
                               [*base, "--run.name", f"calibrate-s{seed}", "--train.max_time_s",
                                str(25 + 45 * args.compile), "--train.steps", "100000"]))
    ips, overhead = steady_rate(cal, args.batch)
    steps, warmup = plan_budget(args, ips, overhead)
    # 2. the budgeted run: cosine over the planned steps after the planned warm-up; a checkpoint
    # every epoch for the accuracy-vs-time curve (written outside the timed steps' work)
    torch._dynamo.reset()
    run = pretrain(load_config(PRESETS[args.method], [
        *base, "--run.name", f"selfsup-s{seed}", "--train.steps", str(steps),
        "--optim.warmup_epochs", str(warmup), "--train.max_time_s", str(args.budget_s),
        "--run.checkpoint_every", "1"]))
    summary = json.loads((run / "summary.json").read_text())
    summary.update(planned_steps=steps, start_overhead_s=overhead)
    return summary, run


def epoch_times(run: Path) -> dict[int, float]:
    """Training seconds at the end of each epoch, from metrics.jsonl's clock."""
    rows = read_jsonl(run / "metrics.jsonl")
    start = next(r for r in rows if r.get("event") == "start")
    spe = start["steps_per_epoch"]
    return {r["step"] // spe: r["time"] - start["time"] for r in rows
            if "loss" in r and r["step"] % spe == 0}


def time_to(target: float, curve: list[tuple[float, float]], floor: float) -> float | None:
    """First time the (seconds, accuracy) curve reaches ``target``, linearly interpolated
    (from the random-init ``floor`` at 0 s before the first point)."""
    prev = (0.0, floor)
    for t, acc in curve:
        if acc >= target:
            t0, a0 = prev
            return t0 + (t - t0) * (target - a0) / (acc - a0) if acc > a0 else t
        prev = (t, acc)
    return None


def selfsup_curve(run: Path, train, test, target: float, final: float,
                  train_s: float) -> list[tuple[float, float]]:
    """(training s, knn-200) at epoch checkpoints, in order, until one reaches ``target``."""
    curve = []
    for epoch, t in sorted(epoch_times(run).items()):
        ckpt = RunFolder(run).epoch_checkpoint(epoch)
        if not ckpt.is_file():
            continue
        backbone, _, _ = load_run_backbone(run, checkpoint=ckpt.name)
        curve.append((t, knn_eval(backbone, train, test)["top1"]))
        print(f"  {run.name} epoch {epoch} ({t:.0f} s): knn-200 {curve[-1][1]:.4f}", flush=True)
        if curve[-1][1] >= target:
            return curve
    return [*curve, (train_s, final)]


def run_lightly(args, work: Path, recipe: str) -> tuple[dict, Path]:
    out = work / f"lightly-{recipe}"
    cmd = [str(PEER_PYTHON), str(ROOT / "benchmarks" / "peers" / PEERS[args.method]),
           "--data-root", args.data_root, "--budget-s", str(args.budget_s), "--batch",
           str(args.batch), "--width", str(args.width), "--seed", str(args.seed), "--threads",
           str(torch.get_num_threads()), "--workers", str(args.lightly_workers), "--out", str(out)]
    if args.method == "simclr":
        cmd += ["--recipe", recipe, "--save-at", *map(str, args.curve_s)]
    subprocess.run(cmd, check=True)
    return json.loads((out / "result.json").read_text()), out


def lightly_backbone(path: Path, width: float):
    b = resnet(18, width, "cifar", in_channels=1)
    b.load_state_dict(torch.load(path, weights_only=True))
    return b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", choices=sorted(PRESETS), default="simclr")
    p.add_argument("--data-root", default=default_root())
    p.add_argument("--budget-s", type=float, default=600)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0, help="lightly's seed and the random floor's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="selfsup's seeds")
    p.add_argument("--temperature", type=float, default=None,
                   help="override the preset's temperature (default: the preset's)")
    p.add_argument("--crop-min", type=float, default=None,
                   help="override the preset's smallest crop area (default: the preset's)")
    p.add_argument("--lightly-workers", type=int, default=1)
    p.add_argument("--lightly-recipes", nargs="+", choices=["example", "benchmark"],
                   default=["example", "benchmark"])
    p.add_argument("--curve-s", type=float, nargs="*", default=[150, 300, 450],
                   help="lightly: also save its backbone at these training seconds")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="selfsup: --train.compile (its compile time counts in the budget; "
                   "measured in the loop: +1 %% steady, 40 s to compile, so off at 600 s)")
    p.add_argument("--skip-lightly", action="store_true")
    p.add_argument("--work", default=None)
    args = p.parse_args()
    if args.compile:  # every run compiles from scratch in its own budget: no cached kernels
        import torch._inductor.config as inductor

        inductor.force_disable_caches = True
    work = Path(args.work or ROOT / "benchmarks" / ".work" / f"{args.method}_quality")
    if work.exists():
        import shutil

        shutil.rmtree(work)
    train = load_dataset("fashion-mnist", args.data_root, split="train")
    test = load_dataset("fashion-mnist", args.data_root, split="test")
    common = {"method": "simclr" if args.method == "simclr" else "moco_v2",
              "dataset": "fashion-mnist", "backbone": BACKBONE,
              "batch": args.batch, "budget_s": args.budget_s, "protocol": "knn-200",
              "metric": "top1"}
    rows = []

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    acc = knn_eval(resnet(18, args.width, "cifar", in_channels=1), train, test)
    floor = acc["top1"]
    rows.append({"system": "random-init", **common, "seeds": [args.seed], "budget_s": 0,
                 "epochs": 0.0, "value": acc["top1"], "top5": acc["top5"],
                 "eval_s": time.perf_counter() - t0})

    # lightly first: its best accuracy is the time-to-accuracy target
    peers = []  # (result, folder, accuracy, row)
    if not args.skip_lightly and peer_available():
        recipes = args.lightly_recipes if args.method == "simclr" else ["example"]
        for recipe in recipes:
            res, out = run_lightly(args, work, recipe)
            acc = knn_eval(lightly_backbone(out / "backbone.pt", args.width), train, test)
            peer_row = {"system": f"lightly {res['lightly_version']} ({recipe})", **common,
                        "seeds": [args.seed], "epochs": res["epochs"],
                        "train_s": res["train_s"], "value": acc["top1"], "top5": acc["top5"],
                        "images_per_s": res["images_per_s"], "recipe": res["recipe"],
                        "peer_torch": res["torch_version"]}
            rows.append(peer_row)
            peers.append((res, out, acc, peer_row))
    elif not args.skip_lightly:
        print(f"lightly venv not found at {PEER_PYTHON}; see benchmarks/peers/README.md")
    target = max((p[2]["top1"] for p in peers), default=None)
    peer_time = None
    if target is not None and args.method == "simclr":
        res, out, acc, best_row = max(peers, key=lambda p: p[2]["top1"])
        curve = []
        for saved in res.get("saved", []):
            b = lightly_backbone(out / f"backbone_{saved['at_s']:g}s.pt", args.width)
            curve.append((saved["train_s"], knn_eval(b, train, test)["top1"]))
        curve.append((res["train_s"], acc["top1"]))
        peer_time = time_to(target, curve, floor)
        best_row.update({"curve": curve, "time_to_target_s": peer_time})

    runs = []
    for seed in args.seeds:
        summary, run = run_selfsup(args, work, seed)
        backbone, cfg, _ = load_run_backbone(run)
        acc = knn_eval(backbone, train, test)
        curve = selfsup_curve(run, train, test, target, acc["top1"], summary["train_s"]) \
            if target is not None and args.method == "simclr" else []
        tta = time_to(target, curve, floor) if curve else None
        runs.append((summary, cfg, acc, tta))
        print(f"selfsup seed {seed}: knn-200 {acc['top1']:.4f}, time to {target} {tta}",
              flush=True)
    values = [a["top1"] for _, _, a, _ in runs]
    ttas = [t for *_, t in runs if t is not None]
    summary, cfg, _, _ = runs[0]
    mo = cfg.method.moco
    row = {"system": "selfsup", **common, "seeds": args.seeds,
           "epochs": [s["epochs"] for s, *_ in runs], "train_s": [s["train_s"] for s, *_ in runs],
           "value": sum(values) / len(values), "per_seed": values,
           "std": float(torch.tensor(values).std()) if len(values) > 1 else 0.0,
           "top5": [a["top5"] for _, _, a, _ in runs],
           "images_per_s": [s["images_seen"] / s["train_s"] for s, *_ in runs],
           "numerics": summary.get("numerics"), "compile": args.compile,
           "start_overhead_s": [s["start_overhead_s"] for s, *_ in runs],
           "recipe": {"preset": PRESETS[args.method], "optimizer": cfg.optim.optimizer,
                      "lr": base_lr_for(cfg), "weight_decay": cfg.optim.weight_decay,
                      "temperature": cfg.method.temperature,
                      "augment": cfg.augment.recipe, "strength": cfg.augment.strength,
                      "head_hidden": cfg.model.head_hidden, "crop_scale": cfg.augment.crop_scale,
                      "momentum": mo.momentum if args.method == "moco" else None,
                      "queue_size": mo.queue_size if args.method == "moco" else None,
                      "planned_steps": [s["planned_steps"] for s, *_ in runs],
                      "schedule": f"warmup {cfg.optim.warmup_epochs:.2f} ep + cosine "
                                  "over planned steps"}}
    if target is not None and ttas:
        row.update({"target": target, "time_to_target_s": ttas,
                    "time_to_accuracy_ratio": (peer_time or args.budget_s)
                    / (sum(ttas) / len(ttas))})
    rows.append(row)
    print_table(rows, ["system", "epochs", "train_s", "images_per_s", "value", "top5"])
    path = write_results(f"{args.method}_quality", rows, "cpu",
                         {"protocol_detail": "knn-200: k=200, T=0.1, cosine, backbone h, "
                          "eval transform (normalise only), 60k train memory, 10k test queries"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
