"""Peer benchmark: lightly's own documented MoCo v2 recipe on Fashion-MNIST.

Same interface as lightly_simclr.py (run it in the lightly venv, see README.md here), plus
--memory-bank. Recipe: lightly examples/pytorch/moco.py (docs.lightly.ai/examples/moco.html):
MoCoProjectionHead(512, 512, 128) -> (feature_dim, feature_dim, 128), momentum copies of
backbone and head updated before each step with m = cosine_schedule(0.996 -> 1),
NTXentLoss(memory_bank_size=(4096, 128)), MoCoV2Transform, SGD(lr=0.06), batch 256.
"""

from __future__ import annotations

import argparse
import copy

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import MoCoV2Transform
from lightly.utils.scheduler import cosine_schedule
from lightly_simclr import (
    SMALL_IMAGE_REASON,
    common_recipe,
    effective_kwargs,
    finish,
    load_backbone,
    make_loader,
    normalize,
    parse_args,
    setup,
    train,
)
from torch import Tensor, nn

MOMENTUM_START, MOMENTUM_END = 0.996, 1.0  # cosine_schedule(epoch, epochs, 0.996, 1)
SCHEDULE_POINTS = 1000  # resolution of the momentum schedule over the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memory-bank", type=int, default=4096,
                        help="number of negatives kept by NTXentLoss's memory bank")
    args = parse_args(parser)
    images = setup(args)
    device = torch.device(args.device)

    # --- lightly examples/pytorch/moco.py, adapted to 28x28 grayscale ---
    backbone = load_backbone(args)
    dim = int(backbone.feature_dim)
    head_kw = {"input_dim": dim, "hidden_dim": dim, "output_dim": 128}  # (512, 512, 128)
    head = MoCoProjectionHead(**head_kw)
    backbone_momentum = copy.deepcopy(backbone)
    head_momentum = copy.deepcopy(head)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(head_momentum)
    model = nn.ModuleDict({"backbone": backbone, "projection_head": head,
                           "backbone_momentum": backbone_momentum,
                           "projection_head_momentum": head_momentum}).to(device)
    tf_kw = {"input_size": args.size, "cj_strength": 0.5, "gaussian_blur": 0.0,
             "normalize": normalize(args)}
    transform = MoCoV2Transform(**tf_kw)
    # The example: NTXentLoss(memory_bank_size=(4096, 128)), default temperature.
    loss_kw = {"temperature": 0.5, "memory_bank_size": (args.memory_bank, 128)}
    criterion = NTXentLoss(**loss_kw)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    loader = make_loader(args, images, transform)

    def step(views: list[Tensor], progress: float) -> float:
        # The example schedules per epoch over a fixed number of epochs; with a wall-clock
        # budget the run length is time, so the same cosine runs over the budget fraction.
        point = round(progress * (SCHEDULE_POINTS - 1))
        m = cosine_schedule(point, SCHEDULE_POINTS, MOMENTUM_START, MOMENTUM_END)
        update_momentum(backbone, backbone_momentum, m=m)
        update_momentum(head, head_momentum, m=m)
        x_query, x_key = (v.to(device) for v in views)
        query = head(backbone(x_query).flatten(start_dim=1))
        key = head_momentum(backbone_momentum(x_key).flatten(start_dim=1)).detach()
        loss = criterion(query, key)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(loss.detach())

    recipe = {
        "source": "lightly examples/pytorch/moco.py (docs.lightly.ai/examples/moco.html); "
                  "small-image transform settings from lightly's CIFAR-10 benchmark",
        **common_recipe(args, backbone, optimizer, "none (constant lr, as in the example)"),
        "projection_head": {"class": "lightly.models.modules.MoCoProjectionHead",
                            **effective_kwargs(MoCoProjectionHead, head_kw)},
        "momentum_encoder": {
            "update": "lightly.models.utils.update_momentum on backbone and head, before "
                      "each step's forward pass (as in the example)",
            "schedule": "lightly.utils.scheduler.cosine_schedule",
            "start": MOMENTUM_START, "end": MOMENTUM_END,
            "over": f"fraction of the run ({SCHEDULE_POINTS} points: budget time, or timed "
                    "steps in throughput mode); the example steps it once per epoch",
            "key_encoder_input": "second view, no batch shuffle (as in the example)",
        },
        "loss": {"class": "lightly.loss.NTXentLoss", **effective_kwargs(NTXentLoss, loss_kw)},
        "transform": {"class": "lightly.transforms.MoCoV2Transform",
                      **effective_kwargs(MoCoV2Transform, tf_kw)},
        "transform_overrides": sorted(tf_kw),
        "adaptation": SMALL_IMAGE_REASON + " The MoCo example keeps MoCoV2Transform's default "
                      "blur (p=0.5) at 32x32; we follow the CIFAR-10 benchmark (no blur).",
        "saved_backbone": "query encoder (backbone), not the momentum copy",
    }
    stats = train(args, step, loader, len(images))
    finish(args, "moco", backbone, stats, recipe)


if __name__ == "__main__":
    main()
