"""Training throughput: end to end (data + augmentation + step) against the bare model step.

docs/protocols.md: images/s after warm-up. "end to end" is the pretraining loop's
own step (batch from the resident uint8 set, two augmented views on the
device, forward/backward/LARS update); "bare step" is forward + backward +
optimiser on views already augmented and on the device, in the same process,
so the ratio is what data and augmentation cost. lightly's pipeline (its
DataLoader + PIL transforms + step, same backbone and batch) runs in its own
venv, and selfsup is measured a second time inside that venv, so the peer
ratio is also given with the same torch build.

Rows: the default (``train.precision`` / ``train.channels_last`` auto), then fp32 / bf16 x
contiguous / channels_last, eager for SimCLR and MoCo v2 and compiled (``torch.compile`` of
the method; its compile time is the warm-up) for SimCLR, then lightly's pipeline in fp32 (its
recipes) and, as an extra, with bf16 autocast + channels_last.

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


NUMERICS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
PRESETS = {"simclr": "simclr-fashion-mnist", "moco": "moco-v2-fashion-mnist"}


def measure(args, method: str = "simclr", precision: str = "auto", channels_last="auto",
            compile_: bool = False) -> dict:
    """One configuration: selfsup end to end, the bare step, augmentation alone (images/s)."""
    from selfsup.config import load_config
    from selfsup.train.precision import resolve_numerics
    from selfsup.train.pretrain import build_training, make_views, optimisation_step

    cfg = load_config(PRESETS[method], [
        "--data.root", args.data_root, "--train.batch_size", str(args.batch), "--model.width",
        str(args.width), "--eval.knn_every", "-1", "--train.device", args.device,
        "--train.precision", precision, "--train.channels_last", str(channels_last).lower()])
    device = torch.device(args.device)
    torch.manual_seed(0)
    _, augment, _, loader, model, optimizer = build_training(cfg, device)
    numerics = resolve_numerics(cfg, device)
    dtype, cl = numerics.autocast_dtype, numerics.channels_last
    gen = torch.Generator(device=device)
    model.train()
    step_fn = model
    if compile_:
        torch._dynamo.reset()
        step_fn = torch.compile(model)

    def timed(fn, n: int) -> tuple[float, float]:
        _sync(device)
        t0 = time.perf_counter()
        for i in range(args.warmup):
            fn(i)
        _sync(device)
        t1 = time.perf_counter()
        for i in range(n):
            fn(args.warmup + i)
        _sync(device)
        return n * args.batch / (time.perf_counter() - t1), t1 - t0

    def end_to_end(step: int) -> None:
        views = make_views(loader, augment, gen, step, 0, 2, cl)
        optimisation_step(step_fn, optimizer, views, 0.01, dtype, device)

    fixed = make_views(loader, augment, gen, 0, 0, 2, cl)

    def bare(step: int) -> None:
        optimisation_step(step_fn, optimizer, fixed, 0.01, dtype, device)

    def augment_only(step: int) -> None:
        make_views(loader, augment, gen, step, 0, 2, cl)

    e2e, warm_s = timed(end_to_end, args.steps)  # first: the compile happens in its warm-up
    bare_ips, _ = timed(bare, args.steps)
    out = {"end_to_end": e2e, "bare_step": bare_ips, "warmup_s": warm_s,
           "numerics": numerics.describe(), "torch": torch.__version__}
    if not compile_ and precision == "auto":
        out["augment_only"] = timed(augment_only, args.steps * 4)[0]
    return out


def grid_rows(args, common: dict) -> list[dict]:
    """fp32 / bf16 x contiguous / channels_last x eager (/ compiled), per method."""
    rows = []
    for method in args.methods:
        for compile_ in (False, True):
            if compile_ and method not in args.compile_methods:
                continue
            for precision, cl in NUMERICS:
                res = measure(args, method, precision, cl, compile_)
                mode = "compiled" if compile_ else "eager"
                row = {**common, "method": method, "precision": precision,
                       "channels_last": cl, "mode": mode, "torch": res["torch"]}
                rows.append({"system": f"selfsup end-to-end {precision} "
                             f"{'NHWC' if cl else 'NCHW'} {mode}", **row,
                             "value": res["end_to_end"],
                             "ratio_to_bare": res["end_to_end"] / res["bare_step"],
                             **({"compile_s": res["warmup_s"]} if compile_ else {})})
                rows.append({"system": f"bare model step {precision} "
                             f"{'NHWC' if cl else 'NCHW'} {mode}", **row,
                             "value": res["bare_step"]})
                print(f"{method} {precision} cl={cl} {mode}: e2e {res['end_to_end']:.0f} "
                      f"bare {res['bare_step']:.0f} img/s (warm-up {res['warmup_s']:.1f} s)",
                      file=sys.stderr, flush=True)
    return rows


def lightly_rows(args, common: dict, selfsup_auto: float) -> list[dict]:
    """lightly's pipeline in its own venv (fp32 as documented; bf16 + NHWC as an extra row),
    and selfsup's default measured again inside that venv (the same torch build)."""
    import os

    child = [str(PEER_PYTHON), __file__, "--child", *sys.argv[1:]]
    proc = subprocess.run(child, check=True, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    peer_self = json.loads(proc.stdout.splitlines()[-1])
    rows = [{"system": "selfsup end-to-end auto (peer venv)", **common, "method": "simclr",
             "value": peer_self["end_to_end"], "numerics": peer_self["numerics"],
             "ratio_to_bare": peer_self["end_to_end"] / peer_self["bare_step"],
             "torch": peer_self["torch"]}]
    for extra, label in (([], "fp32 (its recipe)"),
                         (["--precision", "bf16", "--channels-last"], "bf16 NHWC (extra)")):
        out = ROOT / "benchmarks" / ".work" / "throughput_lightly"
        subprocess.run([str(PEER_PYTHON), str(ROOT / "benchmarks" / "peers" / "lightly_simclr.py"),
                        "--data-root", args.data_root, "--throughput-steps", str(args.steps),
                        "--warmup-steps", str(args.warmup), "--batch", str(args.batch),
                        "--width", str(args.width), "--threads", str(torch.get_num_threads()),
                        "--workers", str(args.lightly_workers), "--out", str(out), *extra],
                       check=True, capture_output=True)
        peer = json.loads((out / "result.json").read_text())
        rows.append({"system": f"lightly {peer['lightly_version']} end-to-end {label}", **common,
                     "method": "simclr", "value": peer["images_per_s"],
                     "torch": peer["torch_version"], "workers": args.lightly_workers,
                     "selfsup_over_lightly_same_torch": peer_self["end_to_end"]
                     / peer["images_per_s"],
                     "selfsup_over_lightly": selfsup_auto / peer["images_per_s"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--methods", nargs="+", choices=sorted(PRESETS), default=["simclr", "moco"])
    p.add_argument("--compile-methods", nargs="*", choices=sorted(PRESETS), default=["simclr"],
                   help="methods whose grid is also measured under torch.compile")
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

    common = {"dataset": "fashion-mnist", "batch": args.batch,
              "backbone": f"resnet18-cifar w{args.width:g} (1 ch)", "protocol": "throughput",
              "metric": "images_per_s", "steps": args.steps, "warmup": args.warmup}
    auto = measure(args)  # the default a user gets (train.precision / channels_last auto)
    rows = [{"system": "selfsup end-to-end auto (default)", **common, "method": "simclr",
             "value": auto["end_to_end"], "ratio_to_bare": auto["end_to_end"] / auto["bare_step"],
             "numerics": auto["numerics"], "torch": auto["torch"]},
            {"system": "bare model step auto", **common, "method": "simclr",
             "value": auto["bare_step"], "torch": auto["torch"]},
            {"system": "selfsup augmentation only (2 views)", **common, "method": "simclr",
             "value": auto["augment_only"], "torch": auto["torch"]}]
    rows += grid_rows(args, common)
    if args.device == "cpu" and not args.skip_lightly and peer_available():
        rows += lightly_rows(args, common, auto["end_to_end"])
    print_table(rows, ["system", "method", "torch", "value", "ratio_to_bare"])
    name = "throughput" if args.device == "cpu" else f"throughput_{args.device.split(':')[0]}"
    print(f"wrote {write_results(name, rows, args.device)}")


if __name__ == "__main__":
    main()
