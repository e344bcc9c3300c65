"""Peer benchmark: lightly's own documented SimCLR recipe on Fashion-MNIST.

Runs INSIDE the separate lightly venv (see README.md here), never in selfsup's venv:
    ../venvs/lightly/bin/python benchmarks/peers/lightly_simclr.py \
        --data-root ../shared/data/fashion-mnist --budget-s 600 --threads 1 --out DIR
The backbone is selfsup's ResNet imported from the repo source (<repo>/src, not an installed
selfsup); transform, head, loss, optimiser and DataLoader are lightly's, as in its
examples/pytorch/simclr.py. lightly_moco.py reuses the helpers defined here.
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import random
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightly
import numpy as np
import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[2]
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # Fashion-MNIST train set, single channel
# --dataset -> (channels, side, (mean, std) of its train set or None: lightly's default)
DATASETS = {"fashion-mnist": (1, 28, (FMNIST_MEAN, FMNIST_STD)),
            "mnist": (1, 28, (0.1307, 0.3081)), "cifar10-5k": (3, 32, None)}
# (views, progress) -> loss; progress in [0, 1] is the fraction of the run done (schedules).
StepFn = Callable[[list[Tensor], float], float]

SMALL_IMAGE_REASON = (  # lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py
    "28x28 images: input_size=28; gaussian_blur=0.0 and cj_strength=0.5 as lightly's CIFAR-10 "
    "benchmark does for 32x32 (SimCLRTransform(input_size=32, cj_strength=0.5, "
    "gaussian_blur=0.0); the transform docstrings recommend cj_strength=0.5 for small images); "
    "Fashion-MNIST mean/std on 1 channel. On 'L' images saturation, hue and RandomGrayscale "
    "are no-ops (checked: they run and keep 1 channel)."
)


def read_idx_images(path: Path) -> np.ndarray:
    """Read a gzip IDX3 ubyte image file (the official MNIST format) into (N, H, W) uint8."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, h, w = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051 or len(raw) != 16 + n * h * w:
        raise ValueError(f"{path}: not an IDX3 ubyte image file (magic {magic})")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)


class IdxImages(Dataset):
    """Unlabelled images as PIL ('L' or 'RGB'), passed through a lightly multi-view transform."""

    def __init__(self, images: np.ndarray, transform: Callable[[Image.Image], Any], mode: str):
        self.images, self.transform, self.mode = images, transform, mode

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = Image.fromarray(self.images[i])  # uint8 (H, W) -> mode "L"
        return self.transform(img if self.mode == "L" else img.convert(self.mode)), 0


def effective_kwargs(fn: Callable[..., Any], given: dict[str, Any]) -> dict[str, Any]:
    """Every keyword of ``fn`` with its value in this run: lightly defaults + our overrides."""
    params = inspect.signature(fn).parameters.values()
    out = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    out.update(given)
    return json.loads(json.dumps(out, default=str))  # tuples -> lists; JSON-safe


def parse_args(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Arguments shared by the peer scripts (method-specific ones are added by the caller)."""
    p.add_argument("--data-root", type=Path, required=True,
                   help="folder with the data set's files (read-only is fine)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist",
                   help="fashion-mnist / mnist (IDX files) or cifar10-5k (the shared subset)")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="val: train on the train split less selfsup's validation 10 %% "
                        "(PROTOCOLS.md), as selfsup's probes do")
    p.add_argument("--epochs", type=float, default=None,
                   help="equal-images mode: train this many epochs (cosine over them)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock training budget (s), checked between steps; the clock "
                        "starts right before the first step")
    p.add_argument("--throughput-steps", type=int, default=0,
                   help="throughput mode: time this many steps after --warmup-steps")
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--stem", choices=["imagenet", "cifar"], default="cifar")
    p.add_argument("--in-channels", type=int, choices=[1, 3], default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader num_workers; 0 (augment in the training process) is the "
                        "fair default on a 2-core machine")
    p.add_argument("--device", default="cpu")
    p.add_argument("--src", type=Path, default=REPO / "src",
                   help="source tree providing selfsup.models.resnet")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: the forward and loss under torch.autocast (not in lightly's "
                        "recipes; a fair extra row on CPUs with native bf16)")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC model and inputs (not in lightly's recipes; as --precision)")
    p.add_argument("--save-at", type=float, nargs="*", default=[],
                   help="budget mode: also save the backbone when the training clock passes "
                        "each of these seconds (backbone_<s>s.pt), for time-to-accuracy")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    modes = [args.budget_s is not None, args.throughput_steps > 0, args.epochs is not None]
    if sum(modes) != 1:
        p.error("give exactly one of --budget-s, --throughput-steps or --epochs")
    args.in_channels, args.size = DATASETS[args.dataset][:2]
    return args


def setup(args: argparse.Namespace) -> np.ndarray:
    """Seed every RNG lightly's pipeline uses, set threads, read the training images."""
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)  # lightly's GaussianBlur / rotations draw from numpy
    torch.manual_seed(args.seed)  # torchvision transforms and DataLoader shuffling
    if args.dataset != "cifar10-5k" and args.split == "test":
        return read_idx_images(args.data_root / "train-images-idx3-ubyte.gz")
    sys.path.insert(0, str(args.src))  # selfsup's reader: the same pixels selfsup trains on
    from selfsup.data import load_dataset
    from selfsup.data.subsets import validation_split

    name = "cifar10" if args.dataset == "cifar10-5k" else args.dataset
    data = load_dataset(name, args.data_root, split="train", verify="warn")
    images = data.images
    if args.split == "val":  # the validation 10 % are the k-NN queries: never trained on
        images = images[validation_split(data.labels)[0]]
    images = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) uint8
    return images[..., 0] if images.shape[-1] == 1 else images


def load_backbone(args: argparse.Namespace) -> nn.Module:
    """selfsup's ResNet from the repo source tree, not from an installed package."""
    sys.path.insert(0, str(args.src))
    from selfsup.models import resnet

    factory = resnet.resnet if isinstance(resnet, types.ModuleType) else resnet
    return factory(depth=args.depth, width=args.width, stem=args.stem, sk_ratio=0.0,
                   in_channels=args.in_channels)


def common_recipe(args: argparse.Namespace, backbone: nn.Module, opt: torch.optim.SGD,
                  lr_schedule: str) -> dict[str, Any]:
    """Recipe entries shared by the peers: backbone, SGD settings, batching."""
    bb = {k: getattr(args, k) for k in ("depth", "width", "stem", "in_channels")}
    sgd = {k: opt.defaults[k] for k in ("lr", "momentum", "weight_decay", "nesterov")}
    return {"backbone": {"factory": "selfsup.models.resnet (repo source)", "sk_ratio": 0.0,
                         **bb, "feature_dim": int(backbone.feature_dim)},
            "optimizer": {"class": "torch.optim.SGD", **sgd, "lr_schedule": lr_schedule},
            "batch_size": args.batch, "shuffle": True, "drop_last": True}


def make_loader(args: argparse.Namespace, images: np.ndarray, transform: Any) -> DataLoader:
    """DataLoader as in lightly's examples: shuffle, drop_last; workers from --workers."""
    mode = "L" if args.in_channels == 1 else "RGB"
    return DataLoader(IdxImages(images, transform, mode), batch_size=args.batch, shuffle=True,
                      drop_last=True, num_workers=args.workers)


def normalize(args: argparse.Namespace) -> dict[str, list[float]]:
    """The data set's statistics; on CIFAR lightly's benchmark keeps its transforms' default,
    ImageNet's (``IMAGENET_NORMALIZE``)."""
    if args.dataset == "cifar10-5k":
        from lightly.transforms.utils import IMAGENET_NORMALIZE

        return {k: list(v) for k, v in IMAGENET_NORMALIZE.items()}
    mean, std = DATASETS[args.dataset][2]
    return {"mean": [mean] * args.in_channels, "std": [std] * args.in_channels}


def forever(loader: DataLoader) -> Iterator[list[Tensor]]:
    while True:
        for views, _ in loader:
            yield views


def train(args: argparse.Namespace, step: StepFn, loader: DataLoader, n: int,
          backbone: nn.Module | None = None) -> dict[str, Any]:
    """Budget mode: steps until --budget-s is spent. Throughput mode: warm-up, then timed.

    With ``--save-at`` and ``backbone``, the backbone is saved each time the training clock
    passes one of those seconds (saving is not counted as training time)."""
    batches = forever(loader)
    pending, saved, paused = sorted(args.save_at), [], 0.0
    throughput = args.throughput_steps > 0
    by_steps = throughput or args.epochs is not None  # equal images: a fixed number of steps
    if args.epochs is not None:
        args.throughput_steps = round(args.epochs * (n // args.batch))  # drop_last batches
        args.warmup_steps = 0
    if throughput:
        for i in range(args.warmup_steps):
            step(next(batches), 0.0)
            print(f"warm-up step {i + 1}/{args.warmup_steps}", file=sys.stderr)
    total = args.throughput_steps if by_steps else args.budget_s  # steps or seconds
    steps, loss = 0, float("nan")
    t0 = time.perf_counter()  # the clock starts right before the first (timed) step
    while True:
        done = steps if by_steps else time.perf_counter() - t0 - paused
        while backbone is not None and pending and not by_steps and done >= pending[0]:
            t_save = time.perf_counter()
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(backbone.state_dict(), args.out / f"backbone_{pending[0]:g}s.pt")
            saved.append({"at_s": pending.pop(0), "train_s": done, "steps": steps})
            paused += time.perf_counter() - t_save
        if done >= total and steps > 0:
            break
        loss = step(next(batches), min(1.0, done / total))
        steps += 1
        if steps % args.log_every == 0:
            dt = time.perf_counter() - t0
            print(f"step {steps} epoch {steps * args.batch / n:.3f} loss {loss:.4f} "
                  f"{steps * args.batch / dt:.1f} img/s {dt:.1f}s", file=sys.stderr)
    train_s = time.perf_counter() - t0 - paused
    seen = steps * args.batch
    mode = "epochs" if args.epochs is not None else "throughput" if throughput else "budget"
    return {"mode": mode, "epochs": seen / n,
            "steps": steps, "images_seen": seen, "train_s": train_s,
            "images_per_s": seen / train_s, "final_loss": loss, "saved": saved,
            "precision": args.precision, "channels_last": args.channels_last}


def finish(args: argparse.Namespace, method: str, backbone: nn.Module, stats: dict[str, Any],
           recipe: dict[str, Any]) -> None:
    """Write <out>/backbone.pt (backbone state_dict) and <out>/result.json."""
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(backbone.state_dict(), args.out / "backbone.pt")
    run = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"system": "lightly", "lightly_version": lightly.__version__,
              "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
              "python_version": sys.version.split()[0], "method": method, **stats,
              "recipe": recipe, "args": run}
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("recipe", "args")}))


def numerics(args: argparse.Namespace, model: nn.Module):
    """(model, autocast context factory, input converter) for --precision / --channels-last."""
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)

    def autocast():
        return torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16,
                              enabled=args.precision == "bf16")

    def convert(x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if args.channels_last else x

    return model, autocast, convert


def cosine(base: float, progress: float) -> float:
    """CosineAnnealingLR's curve (to 0) as a function of the fraction of the run done."""
    import math

    return base * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=["example", "benchmark"], default="example",
                        help="example: examples/pytorch/simclr.py (SGD lr 0.06, constant); "
                             "benchmark: lightly's CIFAR-10 benchmark (SGD lr 0.06 x batch/128, "
                             "momentum 0.9, weight decay 5e-4, cosine over the run)")
    args = parse_args(parser)
    images = setup(args)
    device = torch.device(args.device)

    # --- lightly examples/pytorch/simclr.py, adapted to 28x28 grayscale ---
    backbone = load_backbone(args)
    dim = int(backbone.feature_dim)
    head_kw = {"input_dim": dim, "hidden_dim": dim, "output_dim": 128}  # (512, 512, 128)
    head = SimCLRProjectionHead(**head_kw)
    model = nn.ModuleDict({"backbone": backbone, "projection_head": head}).to(device)
    tf_kw = {"input_size": args.size, "cj_strength": 0.5, "gaussian_blur": 0.0,
             "normalize": normalize(args)}
    transform = SimCLRTransform(**tf_kw)
    loss_kw = {"temperature": 0.5}  # the example uses NTXentLoss() defaults
    criterion = NTXentLoss(**loss_kw)
    model, autocast, convert = numerics(args, model)
    if args.recipe == "benchmark":  # benchmarks/cifar10_benchmark.py, SimCLRModel
        base_lr = 0.06 * args.batch / 128
        optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9,
                                    weight_decay=5e-4)
        schedule = "cosine to 0 over the run (CosineAnnealingLR(max_epochs) as a fraction)"
    else:
        base_lr = 0.06
        optimizer = torch.optim.SGD(model.parameters(), lr=base_lr)
        schedule = "none (constant lr, as in the example)"
    loader = make_loader(args, images, transform)

    def step(views: list[Tensor], progress: float) -> float:
        if args.recipe == "benchmark":
            for group in optimizer.param_groups:
                group["lr"] = cosine(base_lr, progress)
        x0, x1 = (convert(v.to(device)) for v in views)
        with autocast():
            z0 = head(backbone(x0).flatten(start_dim=1))
            z1 = head(backbone(x1).flatten(start_dim=1))
            loss = criterion(z0.float(), z1.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(loss.detach())

    source = ("lightly examples/pytorch/simclr.py (docs.lightly.ai/examples/simclr.html)"
              if args.recipe == "example" else
              "lightly benchmarks/cifar10_benchmark.py SimCLRModel (docs.lightly.ai "
              "getting_started/benchmarks)")
    recipe = {
        "name": args.recipe,
        "source": source + "; small-image transform settings from lightly's CIFAR-10 benchmark",
        **common_recipe(args, backbone, optimizer, schedule),
        "numerics": {"precision": args.precision, "channels_last": args.channels_last},
        "projection_head": {"class": "lightly.models.modules.SimCLRProjectionHead",
                            **effective_kwargs(SimCLRProjectionHead, head_kw)},
        "loss": {"class": "lightly.loss.NTXentLoss", **effective_kwargs(NTXentLoss, loss_kw)},
        "transform": {"class": "lightly.transforms.SimCLRTransform",
                      **effective_kwargs(SimCLRTransform, tf_kw)},
        "transform_overrides": sorted(tf_kw), "adaptation": SMALL_IMAGE_REASON,
    }
    stats = train(args, step, loader, len(images), backbone)
    finish(args, "simclr", backbone, stats, recipe)


if __name__ == "__main__":
    main()
