"""Recipe probes at equal epochs, scored on the validation split (issue 24).

One change at a time against a data set's preset, for several seeds, at a fixed number of
epochs (so every probe sees the same images), on the setting the peer comparison uses
(ResNet-18 CIFAR stem width 0.25, batch 256). Score: knn-200 (k=200, T=0.1, cosine, backbone
h, eval transform) with the train split less its class-balanced 10 % (seed 0) as the memory
and the pretraining set, that 10 % as the queries (``eval.split val``, ../shared
PROTOCOLS.md "Validation split"). Probes choose recipe values, so ``--split test`` is refused:
the test split is measured once per final recipe (``equal_epochs.py``).

    python benchmarks/epoch_probe.py --dataset cifar10-5k --epochs 15 --seeds 0 1 \
        --probe sgd-peer -- --optim.optimizer sgd --optim.lr 0.12 --optim.momentum 0.9

Everything after ``--`` is passed to ``selfsup pretrain`` as overrides of the preset. Rows
append to ``benchmarks/results/epoch_probe.json``; the script refuses to run on a tree with
uncommitted changes to tracked files (a row must name the code that made it) unless
``--dirty-ok`` (then the row says ``-dirty``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DATASETS,
    RESULTS,
    ROOT,
    SETTING,
    commit,
    print_table,
    run_peer,
    shared_data,
    write_results,
)

from selfsup.config import load_config  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402


def run_probe(dataset: str, method: str, epochs: int, seed: int, probe: str,
              extra: list[str], work: Path) -> dict:
    name, folder, data_args, presets = DATASETS[dataset]
    preset = presets[method]
    args = ["--data.dataset", name, "--data.root", str(shared_data(folder)), *data_args,
            *SETTING, "--train.epochs", str(epochs), "--train.seed", str(seed),
            "--run.out_dir", str(work), "--run.name", f"{dataset}-{method}-{probe}-s{seed}",
            *extra]
    run = pretrain(load_config(preset, args))
    s = json.loads((run / "summary.json").read_text())
    return {"dataset": dataset, "system": "selfsup", "method": method, "probe": probe,
            "recipe": preset, "overrides": extra, "epochs": s["epochs"],
            "images_seen": s["images_seen"], "split": s["split"], "protocol": "knn-200",
            "knn_top1": round(100 * s["final_knn_top1"], 2), "seed": seed,
            "train_s": s["train_s"], "images_per_s": round(s["images_seen"] / s["train_s"], 1)}


def peer_probe(dataset: str, method: str, epochs: int, seed: int, work: Path) -> dict:
    """The peer's documented recipe on the same split: the target a probe must reach."""
    res = run_peer(dataset, method, epochs, seed, 2, "val", work / f"lightly-{dataset}-s{seed}")
    return {"dataset": dataset, "system": "lightly", "method": method, "probe": "lightly",
            "recipe": res["recipe"]["name"], "overrides": [], "epochs": round(res["epochs"], 4),
            "images_seen": res["images_seen"], "split": "val", "protocol": "knn-200",
            "knn_top1": res["knn_top1"], "seed": seed, "train_s": round(res["train_s"], 2),
            "images_per_s": round(res["images_per_s"], 1), "peer_torch": res["torch_version"]}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--probe", required=True, help="the probe's name (e.g. base, sgd-peer)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10-5k")
    p.add_argument("--method", choices=["simclr", "moco"], default="simclr")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--system", choices=["selfsup", "lightly"], default="selfsup",
                   help="lightly: the peer's documented recipe on the same split (its venv)")
    p.add_argument("--dirty-ok", action="store_true", help="allow uncommitted changes")
    args = p.parse_args(own)
    if args.split == "test":
        p.error("probes choose recipe values and are scored on --split val only; the test "
                "split is measured once per final recipe (benchmarks/equal_epochs.py)")
    if commit().endswith("-dirty") and not args.dirty_ok:
        p.error("uncommitted changes to tracked files: commit first (or --dirty-ok)")
    work = ROOT / "benchmarks" / ".work" / "epoch_probe"
    if args.system == "lightly":
        rows = [peer_probe(args.dataset, args.method, args.epochs, seed, work)
                for seed in args.seeds]
    else:
        rows = [run_probe(args.dataset, args.method, args.epochs, seed, args.probe, extra,
                          work) for seed in args.seeds]
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT)),
                                    *sys.argv[1:]])
    for r in rows:
        r.update(commit=commit(), command=command)
    print_table(rows, ["dataset", "method", "probe", "epochs", "seed", "split", "knn_top1",
                       "images_per_s"])
    mean = sum(r["knn_top1"] for r in rows) / len(rows)
    print(f"{args.probe}: mean knn-200 top-1 on val {mean:.2f} % over seeds {args.seeds}")
    path = RESULTS / "epoch_probe.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    write_results("epoch_probe", [*old, *rows], "cpu", {"protocol_detail": (
        "knn-200: k=200, T=0.1, cosine, backbone h; memory and pretraining set = train split "
        "less its class-balanced 10 % (seed 0), queries = that 10 % (split val); ResNet-18 "
        "CIFAR stem w0.25, batch 256; preset of the data set + each row's overrides")})


if __name__ == "__main__":
    main()
