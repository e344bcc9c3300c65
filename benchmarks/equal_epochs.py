"""Quality per image: selfsup's default preset against the peer's best documented recipe at
the same number of epochs (issue 24).

Setting (both systems): ResNet-18 CIFAR stem width 0.25 (selfsup's ResNet, the same code for
the peer), batch 256, CPU, one torch build. Score: knn-200 (k=200, T=0.1, cosine, backbone h,
eval transform at the native side with each system's own normalisation), the whole train
split as the memory, the test split as the queries (``split: test``: measured once per final
recipe; recipes are chosen on the validation split by ``epoch_probe.py``). Rows:

- ``random init``: the same network untrained (selfsup's ``eval.knn_random_init``);
- ``selfsup``: the data set's preset plus the setting above, its default numerics;
- ``lightly``: lightly's CIFAR-10 benchmark SimCLR recipe (SGD lr 0.06 x B/128, momentum 0.9,
  weight decay 5e-4, cosine, T 0.5, colour 0.5, no blur) or its MoCo example, fp32 as
  documented, DataLoader workers 0, run by ``peers/lightly_*.py`` in the peer's venv
  (``$SELFSUP_LIGHTLY_PYTHON``, see peers/README.md).

    python benchmarks/equal_epochs.py --dataset cifar10-5k --epochs 15 50 --seeds 0 1 2

Rows merge into ``benchmarks/results/equal_epochs.json`` (one row per dataset, system,
method, epochs and seed; a rerun replaces its rows). A tree with uncommitted changes to
tracked files is refused unless ``--dirty-ok``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DATASETS,
    PEER_PYTHON,
    PEER_SCRIPT,
    RESULTS,
    ROOT,
    SETTING,
    commit,
    peer_available,
    print_table,
    run_peer,
    shared_data,
    write_results,
)

from selfsup.config import load_config  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "equal_epochs"


def selfsup_rows(dataset: str, method: str, epochs: int, seed: int, floor: bool) -> list[dict]:
    name, folder, data_args, presets = DATASETS[dataset]
    args = ["--data.dataset", name, "--data.root", str(shared_data(folder)), *data_args,
            *SETTING, "--eval.split", "test", "--train.epochs", str(epochs),
            "--train.seed", str(seed), "--eval.knn_random_init", str(floor).lower(),
            "--run.out_dir", str(WORK), "--run.name", f"{dataset}-{method}-e{epochs}-s{seed}"]
    s = json.loads((pretrain(load_config(presets[method], args)) / "summary.json").read_text())
    row = {"dataset": dataset, "system": "selfsup", "method": method, "recipe": presets[method],
           "epochs": s["epochs"], "images_seen": s["images_seen"], "split": s["split"],
           "knn_top1": round(100 * s["final_knn_top1"], 2), "seed": seed,
           "train_s": s["train_s"], "numerics": s["numerics"]}
    rows = [row]
    if floor:
        rows.append({**row, "system": "random init", "recipe": "-", "epochs": 0,
                     "images_seen": 0, "train_s": 0,
                     "knn_top1": round(100 * s["final_random_init_knn_top1"], 2)})
    return rows


def peer_row(dataset: str, method: str, epochs: int, seed: int, threads: int) -> dict:
    out = WORK / f"lightly-{dataset}-{method}-e{epochs}-s{seed}"
    res = run_peer(dataset, method, epochs, seed, threads, "test", out)
    return {"dataset": dataset, "system": "lightly", "method": method,
            "recipe": res["recipe"]["name"], "epochs": round(res["epochs"], 4),
            "images_seen": res["images_seen"], "split": "test", "knn_top1": res["knn_top1"],
            "seed": seed, "train_s": round(res["train_s"], 2), "numerics": res["precision"],
            "peer_torch": res["torch_version"], "lightly": res["lightly_version"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    p.add_argument("--method", choices=sorted(PEER_SCRIPT), default="simclr")
    p.add_argument("--epochs", type=int, nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--systems", nargs="+", default=["selfsup", "lightly"],
                   choices=["selfsup", "lightly"])
    p.add_argument("--peer-threads", type=int, default=2)
    p.add_argument("--dirty-ok", action="store_true", help="allow uncommitted changes")
    args = p.parse_args()
    if commit().endswith("-dirty") and not args.dirty_ok:
        p.error("uncommitted changes to tracked files: commit first (or --dirty-ok)")
    if "lightly" in args.systems and not peer_available():
        p.error(f"peer venv not found at {PEER_PYTHON}: set SELFSUP_LIGHTLY_PYTHON")
    command = "python " + " ".join(["benchmarks/equal_epochs.py", *sys.argv[1:]])
    new = []
    for epochs in args.epochs:
        for seed in args.seeds:
            if "selfsup" in args.systems:
                first = epochs == args.epochs[0] and seed == args.seeds[0]
                new += selfsup_rows(args.dataset, args.method, epochs, seed, floor=first)
            if "lightly" in args.systems:
                new.append(peer_row(args.dataset, args.method, epochs, seed, args.peer_threads))
            for r in new:
                r.setdefault("commit", commit())
                r.setdefault("command", command)
            save(new)
    print_table(new, ["dataset", "system", "method", "epochs", "seed", "knn_top1", "train_s"])


def key(r: dict) -> tuple:
    return r["dataset"], r["system"], r["method"], round(r["epochs"]), r["seed"]


def save(new: list[dict]) -> None:
    """Merge ``new`` into the results file (a rerun of a row replaces it); written after every
    row, so a long run interrupted keeps what it measured."""
    path = RESULTS / "equal_epochs.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    keys = {key(r) for r in new}
    rows = sorted([r for r in old if key(r) not in keys] + new, key=key)
    write_results("equal_epochs", rows, "cpu", {"protocol_detail": (
        "knn-200: k=200, T=0.1, cosine, backbone h, eval transform at the native side with "
        "each system's normalisation; memory = train split, queries = test split; ResNet-18 "
        "CIFAR stem w0.25, batch 256; selfsup default preset and numerics; lightly's documented "
        "recipe (fp32, DataLoader workers 0) in its own venv on the same torch build")})


if __name__ == "__main__":
    main()
