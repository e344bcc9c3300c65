"""Frozen features h = f(x) of a whole image set, in eval mode, without gradient."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from selfsup.distributed import gather_rows, my_rows


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: Tensor,
    transform: Callable[[Tensor], Tensor],
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    progress: bool | None = False,
    desc: str = "features",
) -> Tensor:
    """Features (N, D) float32 of uint8 ``images`` (N, C, H, W) on ``device``.

    ``transform`` maps a uint8 batch on the device to the network input
    (the eval recipe: resize + normalise). The backbone's train/eval mode is
    restored afterwards, so a monitor inside training leaves BN as it was.
    Under ``torchrun`` each rank encodes its share and every rank gets all N.
    ``progress``: a tqdm bar (``desc``); None shows it only when stderr is a terminal.
    """
    if device is None:
        device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    n = len(images)
    mine = images[my_rows(n)]
    out: list[Tensor] = []
    try:
        steps = range(0, len(mine), batch_size)
        tty = sys.stderr.isatty()
        show = tty if progress is None else progress
        bar = tqdm(steps, desc=desc, leave=False, disable=not show,
                   mininterval=0.1 if tty else 10.0)  # a log file gets few lines
        for i in bar:
            x = transform(mine[i : i + batch_size].to(device, non_blocking=True))
            with _autocast(device):
                out.append(backbone(x).float())
    finally:
        backbone.train(was_training)
    if out:
        feats = torch.cat(out)
    else:  # a rank with no share (n < world size)
        feats = torch.zeros(0, backbone.feature_dim, device=device)
    return gather_rows(feats, n)


def _autocast(device: torch.device | str):
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
