"""Augmentation recipes of the papers, as :class:`~selfsup.augment.pipeline.Pipeline` settings.

Every recipe takes the output ``size`` and the data set's normalisation; extra
keyword arguments (e.g. ``dtype``, ``crop_scale``) are passed to ``Pipeline``
and override the recipe's value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from selfsup.augment.pipeline import Pipeline, blur_kernel_size
from selfsup.errors import ConfigError

Stats = tuple[tuple[float, ...], tuple[float, ...]]

# per-channel (mean, std) of the training images in [0, 1]
NORMALIZATION: dict[str, Stats] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
IMAGENET_MEAN, IMAGENET_STD = NORMALIZATION["imagenet"]

# the SimCLR paper blurs ImageNet (224) but not CIFAR-10 (32); we switch blur on above 32 px
SMALL_IMAGE = 32


def normalization(dataset: str) -> Stats:
    """(mean, std) of a known data set; ConfigError listing the known names otherwise."""
    if dataset not in NORMALIZATION:
        raise ConfigError(f"no normalisation for data set {dataset!r}; known: "
                          f"{', '.join(sorted(NORMALIZATION))}")
    return NORMALIZATION[dataset]


def _use_blur(size: int, blur: bool | None) -> bool:
    return size > SMALL_IMAGE if blur is None else bool(blur)


def simclr(
    size: int,
    strength: float = 1.0,
    blur: bool | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **overrides: Any,
) -> Pipeline:
    """SimCLR's augmentation (Chen et al. 2020, arXiv 2002.05709, Appendix A).

    "random crop and resize (with random flip), color distortion, and random
    Gaussian blur": crop area 0.08-1.0 and aspect 3/4-4/3; flip p = 0.5; colour
    jitter (0.8 s, 0.8 s, 0.8 s, 0.2 s) applied with p = 0.8 in random order;
    grayscale p = 0.2; blur p = 0.5 with "kernel size ... 10% of the image
    height/width" and sigma U[0.1, 2.0]. ``strength`` is s: 1.0 on ImageNet,
    0.5 for CIFAR-10 (Appendix B.9). ``blur=None`` blurs only images larger
    than 32 px: the paper omits blur on CIFAR-10, and we treat MNIST alike.
    """
    if not strength >= 0:
        raise ConfigError(f"simclr colour strength must be >= 0, got {strength}")
    s = float(strength)
    settings: dict[str, Any] = dict(
        crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5, jitter_p=0.8,
        brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s, grayscale_p=0.2,
        blur_p=0.5 if _use_blur(size, blur) else 0.0, blur_kernel=blur_kernel_size(size),
        blur_sigma=(0.1, 2.0), mean=mean, std=std,
    )
    return Pipeline(size, **{**settings, **overrides})


def moco_v1(size: int, mean: Sequence[float] = IMAGENET_MEAN,
            std: Sequence[float] = IMAGENET_STD, **overrides: Any) -> Pipeline:
    """MoCo v1's augmentation (He et al., CVPR 2020; facebookresearch/moco ``main_moco.py``).

    Crop area 0.2-1.0, grayscale p = 0.2, colour jitter (0.4, 0.4, 0.4, 0.4)
    always applied, flip p = 0.5, no blur. The reference code converts to
    grayscale *before* the jitter; our pipeline always jitters first. On a grey
    image saturation and hue are the identity, so the two orders differ only
    through clamping and in which jitter draws reach the grey image.
    """
    settings: dict[str, Any] = dict(
        crop_scale=(0.2, 1.0), flip_p=0.5, jitter_p=1.0, brightness=0.4, contrast=0.4,
        saturation=0.4, hue=0.4, grayscale_p=0.2, blur_p=0.0, mean=mean, std=std,
    )
    return Pipeline(size, **{**settings, **overrides})


def moco_v2(
    size: int,
    blur: bool | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **overrides: Any,
) -> Pipeline:
    """MoCo v2's augmentation (Chen, Fan, Girshick, He, arXiv 2003.04297, "aug+").

    Crop area 0.2-1.0, colour jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8,
    grayscale p = 0.2, Gaussian blur p = 0.5 with sigma U[0.1, 2.0] (on by
    default for images larger than 32 px, as :func:`simclr`), flip p = 0.5.
    """
    settings: dict[str, Any] = dict(
        crop_scale=(0.2, 1.0), flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
        saturation=0.4, hue=0.1, grayscale_p=0.2, blur_p=0.5 if _use_blur(size, blur) else 0.0,
        blur_kernel=blur_kernel_size(size), blur_sigma=(0.1, 2.0), mean=mean, std=std,
    )
    return Pipeline(size, **{**settings, **overrides})


def finetune(size: int, mean: Sequence[float] = IMAGENET_MEAN,
            std: Sequence[float] = IMAGENET_STD, **overrides: Any) -> Pipeline:
    """The augmentation of the supervised stages: random resized crop and flip only.

    SimCLR fine-tunes "with only random crop (with random left-to-right
    flipping) and resizing" (Chen et al. 2020, arXiv 2002.05709, Appendix
    B.6); SimCLR v2 fine-tunes and distils alike. Crop area 0.08-1.0, aspect
    3/4-4/3, flip p = 0.5; no colour, grayscale, blur or solarisation.
    """
    settings: dict[str, Any] = dict(
        crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5, jitter_p=0.0,
        grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, mean=mean, std=std,
    )
    return Pipeline(size, **{**settings, **overrides})


def eval_(size: int, mean: Sequence[float] = IMAGENET_MEAN,
            std: Sequence[float] = IMAGENET_STD, **overrides: Any) -> Pipeline:
    """Evaluation transform: bilinear resize to ``size`` x ``size`` when needed, then normalise.

    No crop and no randomness: the generator is still accepted but unused.
    """
    settings: dict[str, Any] = dict(
        crop=False, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0,
        mean=mean, std=std,
    )
    return Pipeline(size, **{**settings, **overrides})


RECIPES: dict[str, Callable[..., Pipeline]] = {
    "simclr": simclr,
    "moco_v1": moco_v1,
    "moco_v2": moco_v2,
    "eval": eval_,
    "finetune": finetune,
}


def build_recipe(name: str, **kwargs: Any) -> Pipeline:
    """Build a recipe by name, e.g. ``build_recipe("simclr", size=32, strength=0.5)``."""
    if name not in RECIPES:
        raise ConfigError(f"unknown augmentation recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name](**kwargs)
