"""Fingerprints of fixed-step runs of the presets: refactors must leave them bit-identical.

Trains SimCLR, MoCo v2, SimCLR v2 with memory, SimCLR + Feature Transformation and Jigsaw for
a few steps on the embedded sample (CPU, one thread) and prints one sha256 per run over the
final checkpoint's model and optimiser state. Run it before and after a change of structure;
the lines must be equal.

    python tools/fingerprint_runs.py [--out fingerprints.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import torch

RUNS = {
    "simclr": ["--config", "quickstart"],
    "moco-v2": ["--config", "moco-v2-fashion-mnist"],
    "simclr-v2-memory": ["--config", "simclr-v2-fashion-mnist", "--method.memory", "true"],
    "simclr-ft": ["--config", "quickstart", "--method.ft_extrapolate", "true",
                  "--method.ft_interpolate", "true"],
    "jigsaw": ["--config", "jigsaw-fashion-mnist"],
}
COMMON = ["--data.dataset", "fashion-mnist-sample", "--data.limit", "256",
          "--model.width", "0.125", "--train.batch_size", "32", "--train.steps", "6",
          "--eval.knn_every", "-1", "--run.progress", "false", "--run.log_every", "2",
          "--train.num_threads", "1", "--train.device", "cpu", "--method.queue_size", "64",
          # the numerics the fingerprints were first taken in (auto picks bf16 on AMX CPUs)
          "--train.precision", "fp32", "--train.channels_last", "false"]


def _digest(state: dict) -> str:
    """sha256 of the multiset of tensors (dtype, shape, bytes): independent of key names and
    order, so a refactor may rename or regroup modules but not change a single value."""
    parts = []
    for value in state.values():
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            parts.append(hashlib.sha256(f"{t.dtype}{tuple(value.shape)}".encode()
                                        + t.view(torch.uint8).numpy().tobytes()).hexdigest())
        elif isinstance(value, dict):
            parts.append(_digest(value))
    return hashlib.sha256("".join(sorted(parts)).encode()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from selfsup.config import load_config
    from selfsup.train.checkpoint import load_checkpoint
    from selfsup.train.pretrain import pretrain

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, preset in RUNS.items():
            cfg = load_config(preset[1], [*preset[2:], *COMMON, "--run.out_dir", tmp,
                                          "--run.name", name])
            run = pretrain(cfg)
            ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
            opt = {f"{i}.{k}": v for i, s in ckpt["optimizer"]["state"].items()
                   for k, v in s.items()}
            out[name] = {"model": _digest(ckpt["model"]), "optimizer": _digest(opt),
                         "step": ckpt["step"]}
            print(f"{name:18s} model {out[name]['model'][:16]}  optimizer "
                  f"{out[name]['optimizer'][:16]}  step {ckpt['step']}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
