"""Batched, per-sample random image augmentation on the device (SimCLR, MoCo recipes).

    from selfsup.augment import simclr
    aug = simclr(32, strength=0.5, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
    g = torch.Generator(device=images.device).manual_seed(0)
    view1, view2 = aug(images, g), aug(images, g)  # uint8 (N,C,H,W) -> float (N,C,32,32)
"""

from selfsup.augment import ops, params
from selfsup.augment.pipeline import Params, Pipeline, blur_kernel_size
from selfsup.augment.recipes import (
    NORMALIZATION,
    RECIPES,
    build_recipe,
    eval_,
    moco_v1,
    moco_v2,
    normalization,
    simclr,
)

__all__ = [
    "NORMALIZATION",
    "RECIPES",
    "Params",
    "Pipeline",
    "blur_kernel_size",
    "build_recipe",
    "eval_",
    "moco_v1",
    "moco_v2",
    "normalization",
    "ops",
    "params",
    "simclr",
]
