"""Training throughput: end to end (data + augmentation + step) against the bare model step.

docs/protocols.md: images/s after warm-up. "end to end" is the pretraining loop's
own step (batch from the resident uint8 set, two augmented views on the
device, forward/backward/LARS update); "bare step" is forward + backward +
optimiser on views already augmented and on the device, in the same process,
so the ratio is what data and augmentation cost. lightly's pipeline (its
DataLoader + PIL transforms + step, same backbone and batch) runs in its own
venv, and selfsup is measured a second time inside that venv, so the peer
ratio is also given with the same torch build.

    python benchmarks/throughput.py [--device cuda] [--steps 20]
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(args) -> dict:
    """One process: selfsup end to end, the bare step, and augmentation alone (images/s)."""
    from selfsup.config import load_config
    from selfsup.train.pretrain import (
        build_training,
        make_views,
        optimisation_step,
        precision_dtype,
    )

    cfg = load_config(args.config, ["--data.root", args.data_root, "--train.batch_size",
                                    str(args.batch), "--model.width", str(args.width),
                                    "--eval.knn_every", "-1", "--train.device", args.device])
    device = torch.device(args.device)
    _, augment, _, loader, model, optimizer = build_training(cfg, device)
    dtype = precision_dtype(cfg, device)
    gen = torch.Generator(device=device)
    model.train()

    def timed(fn, n: int) -> float:
        for i in range(args.warmup):
            fn(i)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(n):
            fn(args.warmup + i)
        _sync(device)
        return n * args.batch / (time.perf_counter() - t0)

    def end_to_end(step: int) -> None:
        views = make_views(loader, augment, gen, step, 0)
        optimisation_step(model, optimizer, views, 0.1, dtype, device)

    fixed = make_views(loader, augment, gen, 0, 0)

    def bare(step: int) -> None:
        optimisation_step(model, optimizer, fixed, 0.1, dtype, device)

    def augment_only(step: int) -> None:
        make_views(loader, augment, gen, step, 0)

    return {"end_to_end": timed(end_to_end, args.steps), "bare_step": timed(bare, args.steps),
            "augment_only": timed(augment_only, args.steps * 4), "torch": torch.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="simclr-fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lightly-workers", type=int, default=1)
    p.add_argument("--skip-lightly", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.data_root is None:
        from simclr_quality import default_root

        args.data_root = default_root()
    if args.child:  # run inside the peer venv: print one JSON line
        print(json.dumps(measure(args)))
        return

    res = measure(args)
    common = {"method": "simclr", "dataset": "fashion-mnist", "batch": args.batch,
              "backbone": f"resnet18-cifar w{args.width:g} (1 ch)", "protocol": "throughput",
              "metric": "images_per_s", "steps": args.steps, "warmup": args.warmup}
    rows = [
        {"system": "selfsup end-to-end", **common, "value": res["end_to_end"],
         "ratio_to_bare": res["end_to_end"] / res["bare_step"], "torch": res["torch"]},
        {"system": "bare model step", **common, "value": res["bare_step"], "ratio_to_bare": 1.0,
         "torch": res["torch"]},
        {"system": "selfsup augmentation only (2 views)", **common, "value": res["augment_only"],
         "torch": res["torch"]},
    ]
    if args.device == "cpu" and not args.skip_lightly and peer_available():
        child = [str(PEER_PYTHON), __file__, "--child", *sys.argv[1:]]
        env_src = {"PYTHONPATH": str(ROOT / "src")}
        import os

        proc = subprocess.run(child, check=True, capture_output=True, text=True,
                              env={**os.environ, **env_src})
        peer_self = json.loads(proc.stdout.splitlines()[-1])
        out = ROOT / "benchmarks" / ".work" / "throughput_lightly"
        subprocess.run([str(PEER_PYTHON), str(ROOT / "benchmarks" / "peers" / "lightly_simclr.py"),
                        "--data-root", args.data_root, "--throughput-steps", str(args.steps),
                        "--warmup-steps", str(args.warmup), "--batch", str(args.batch),
                        "--width", str(args.width), "--threads", str(torch.get_num_threads()),
                        "--workers", str(args.lightly_workers), "--out", str(out)], check=True,
                       capture_output=True)
        peer = json.loads((out / "result.json").read_text())
        rows += [
            {"system": "selfsup end-to-end (peer venv)", **common,
             "value": peer_self["end_to_end"],
             "ratio_to_bare": peer_self["end_to_end"] / peer_self["bare_step"],
             "torch": peer_self["torch"]},
            {"system": f"lightly {peer['lightly_version']} end-to-end", **common,
             "value": peer["images_per_s"], "torch": peer["torch_version"],
             "selfsup_over_lightly_same_torch": peer_self["end_to_end"] / peer["images_per_s"],
             "workers": args.lightly_workers},
        ]
    print_table(rows, ["system", "torch", "value", "ratio_to_bare"])
    name = "throughput" if args.device == "cpu" else f"throughput_{args.device.split(':')[0]}"
    print(f"wrote {write_results(name, rows, args.device)}")


if __name__ == "__main__":
    main()
