"""What every benchmark shares: the results file (docs/protocols.md format) and the table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# the comparisons of issue 24: ResNet-18 CIFAR stem w0.25, batch 256, knn-200
# data set -> (registry name, shared/data folder, extra overrides, preset per method)
DATASETS = {
    "cifar10-5k": ("cifar10", "cifar10-subset", ["--data.verify", "warn"],
                   {"simclr": "simclr-cifar10", "moco": "moco-v2-cifar10"}),
    "fashion-mnist": ("fashion-mnist", "fashion-mnist", [],
                      {"simclr": "simclr-fashion-mnist", "moco": "moco-v2-fashion-mnist"}),
    "mnist": ("mnist", "mnist", [], {"simclr": "simclr-mnist", "moco": "moco-v2-fashion-mnist"}),
}
SETTING = ["--model.width", "0.25", "--train.batch_size", "256", "--eval.knn_every", "0",
           "--eval.knn_k", "200", "--eval.knn_temperature", "0.1", "--run.progress", "false",
           "--eval.split", "val"]
# the peer's venv: $SELFSUP_LIGHTLY_PYTHON, else ../venvs/lightly beside the checkout
PEER_PYTHON = Path(os.environ.get("SELFSUP_LIGHTLY_PYTHON")
                   or ROOT.parent / "venvs" / "lightly" / "bin" / "python")


def shared_data(name: str) -> Path:
    """``shared/data/<name>``: ``$SELFSUP_SHARED_DATA/<name>``, else the first ``shared/data``
    found above the repository (no machine's absolute path is written down anywhere)."""
    env = os.environ.get("SELFSUP_SHARED_DATA")
    candidates = [Path(env)] if env else [p / "shared" / "data" for p in ROOT.parents]
    for base in candidates:
        if (base / name).is_dir():
            return base / name
    raise SystemExit(f"shared data {name!r} not found: set SELFSUP_SHARED_DATA to shared/data")


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(name: str, rows: list[dict], device: str, extra: dict | None = None) -> Path:
    record = {"benchmark": name, "date": date.today().isoformat(), "commit": commit(),
              "device": device_name(device), "torch": torch.__version__,
              "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
              **(extra or {}), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for x in cells:
        print("  ".join(v.ljust(w) for v, w in zip(x, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


def peer_available() -> bool:
    return PEER_PYTHON.is_file()


PEER_SCRIPT = {"simclr": ("lightly_simclr.py", ["--recipe", "benchmark"]),
               "moco": ("lightly_moco.py", [])}


def run_peer(dataset: str, method: str, epochs: int, seed: int, threads: int, split: str,
             out: Path) -> dict:
    """The peer's documented recipe (fp32, DataLoader workers 0) in its own venv for
    ``epochs``, then knn-200 of its backbone; its result.json plus ``knn_top1``."""
    script, recipe = PEER_SCRIPT[method]
    cmd = [str(PEER_PYTHON), str(ROOT / "benchmarks" / "peers" / script), *recipe,
           "--dataset", dataset, "--data-root", str(shared_data(DATASETS[dataset][1])),
           "--epochs", str(epochs), "--seed", str(seed), "--threads", str(threads),
           "--workers", "0", "--split", split, "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    res = json.loads((out / "result.json").read_text())
    norm = res["recipe"]["transform"]["normalize"]
    res["knn_top1"] = peer_knn(out / "backbone.pt", dataset, norm["mean"], norm["std"], split)
    return res


def peer_knn(weights: Path, dataset: str, mean, std, split: str) -> float:
    """knn-200 of a peer's backbone with the extraction and vote of selfsup's own runs:
    memory = the train split (less val for ``split`` val), queries = test (or val)."""
    from selfsup.augment import build_recipe
    from selfsup.data import load_dataset
    from selfsup.data.subsets import validation_split
    from selfsup.eval import extract_features, knn_accuracy
    from selfsup.models import resnet

    name, folder, data_args, _ = DATASETS[dataset]
    verify = "warn" if "--data.verify" in data_args else True
    train = load_dataset(name, shared_data(folder), split="train", verify=verify)
    if split == "val":
        keep, val = validation_split(train.labels)
        train, test = train.subset(keep), train.subset(val)
    else:
        test = load_dataset(name, shared_data(folder), split="test", verify=verify)
    net = resnet(depth=18, width=0.25, stem="cifar", in_channels=train.channels)
    net.load_state_dict(torch.load(weights, weights_only=True))
    tf = build_recipe("eval", size=train.size, mean=tuple(mean), std=tuple(std))
    g = torch.Generator()
    f_tr, f_te = (extract_features(net, s.images, lambda x: tf(x, g), batch_size=512)
                  for s in (train, test))
    acc = knn_accuracy(f_tr, train.labels, f_te, test.labels, 10, k=200, temperature=0.1)
    return round(100 * acc["top1"], 2)
