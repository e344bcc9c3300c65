"""Fingerprints of the supervised stages: refactors must leave their weights bit-identical.

A tiny pretraining run on the embedded sample, then fine-tune (10 % labels, k=1; 3 per class,
k=2, LARS; from scratch), distill (alpha 1; alpha 0.5 with tau 2), cluster and transfer, all
through the CLI with fixed seeds on one CPU thread; prints a sha256 of each stage's checkpoint
weights and writes them with the summaries (less their timing) to OUT.

    python tools/stage_fingerprints.py OUT.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

TINY = ["--data.limit", "128", "--model.width", "0.125", "--train.batch_size", "32",
        "--train.epochs", "1", "--eval.knn_every", "-1", "--run.progress", "false",
        "--run.log_every", "1", "--train.num_threads", "1", "--train.device", "cpu"]
STAGE = ["--epochs", "1", "--batch-size", "32", "--lr", "0.05", "--device", "cpu",
         "--no-progress"]


def digest(path: Path) -> str:
    from selfsup.train.checkpoint import load_checkpoint

    state = load_checkpoint(path)["model"]
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}{t.dtype}{tuple(state[k].shape)}".encode()
                 + t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def stages(t: Path) -> list[list[str]]:
    pre, st = str(t / "pre"), STAGE
    return [
        ["finetune", pre, "--label-fraction", "0.1", *st, "--out", str(t / "ft")],
        ["finetune", pre, "--per-class", "3", "--from-head-layer", "2", "--optimizer", "lars",
         "--seed", "3", *st, "--out", str(t / "ft2")],
        ["finetune", pre, "--label-fraction", "0.1", "--scratch", *st, "--out", str(t / "sc")],
        ["distill", "--teacher", str(t / "ft"), "--student-width", "0.125", *st,
         "--out", str(t / "di")],
        ["distill", "--teacher", str(t / "ft"), "--student-width", "0.125", "--alpha", "0.5",
         "--temperature", "2", *st, "--out", str(t / "di2")],
        ["cluster", pre, "--k", "5", "--iters", "5", "--device", "cpu", "--no-progress",
         "--out", str(t / "cl")],
        ["transfer", str(t / "cl"), "--width", "0.125", *st, "--out", str(t / "tr")],
    ]


def main() -> None:
    from selfsup.cli import main as cli

    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        assert cli(["pretrain", "--config", "quickstart", *TINY, "--model.head_layers", "3",
                    "--run.out_dir", str(t), "--run.name", "pre"]) == 0
        for argv in stages(t):
            assert cli(argv) == 0, argv
        for name in ("ft", "ft2", "sc", "di", "di2", "tr"):
            summary = json.loads((t / name / "summary.json").read_text())
            summary.pop("train_s", None)
            stage = json.loads((t / name / "stage.json").read_text())
            for k in ("pretrain_run", "teacher_run", "cluster_run", "teacher"):
                stage.pop(k, None)
            out[name] = {"weights": digest(t / name / "checkpoints" / "last.pt"),
                         "summary": summary, "stage": stage}
            print(name, out[name]["weights"][:16])
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
