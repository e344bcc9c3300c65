"""The batched augmentation pipeline: uint8 images in, normalised float views out.

Order as in SimCLR's reference code (Chen et al. 2020, arXiv 2002.05709,
Appendix A): random resized crop + horizontal flip, colour jitter (p), random
grayscale (p), Gaussian blur (p), then (optional, for BYOL-style recipes)
solarize, then normalisation. Every random parameter is drawn per sample by
:meth:`Pipeline.sample_params` and applied by :meth:`Pipeline.apply`; the two
halves are separate so tests and logs can inspect what was drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.augment import ops, params
from selfsup.errors import ConfigError

Params = dict[str, Tensor]
_DTYPES = {"float32": torch.float32, "float64": torch.float64,
           "float16": torch.float16, "bfloat16": torch.bfloat16}


def blur_kernel_size(size: int) -> int:
    """SimCLR's blur kernel for ``size`` px images: 23 taps for 224, 9 for 96, 3 for 32.

    The reference code (google-research/simclr ``data_util.py``) blurs with
    ``kernel_size = height // 10`` and its ``gaussian_blur`` takes
    ``radius = kernel_size // 2`` and ``2 * radius + 1`` taps. Below 20 px that
    is 1 tap: no blur.
    """
    radius = (size // 10) // 2
    return 2 * radius + 1


def _check_prob(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"augment {name} must be a probability in [0, 1], got {p}")
    return float(p)


def _check_range(name: str, r: Sequence[float], low: float, high: float) -> tuple[float, float]:
    if len(r) != 2 or not low < r[0] <= r[1] <= high:
        raise ConfigError(f"augment {name} must be (min, max) with {low} < min <= max <= {high}, "
                          f"got {tuple(r)}")
    return float(r[0]), float(r[1])


class Pipeline:
    """Batched, per-sample random augmentation of uint8 (N, C, H, W) images, C in {1, 3}.

    Runs on the images' device; the ``torch.Generator`` passed to
    :meth:`__call__` must live on that device too. The hot path has no host
    synchronisation and no Python loop over samples. ``crop=False`` replaces
    the random crop by a bilinear resize of the whole image to
    ``size`` x ``size`` (a no-op when the size already matches). Shrinking is
    antialiased, crop or not, as torchvision's ``resized_crop`` / ``resize``
    on tensors (default since 0.17; see :func:`ops.resized_crop`). Work is done
    in float32 (float64 if asked) and cast to ``dtype`` at the end: bf16 has 8
    mantissa bits, too few for the HSV round trip.
    """

    def __init__(
        self,
        size: int,
        *,
        crop_scale: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        grayscale_p: float = 0.2,
        blur_p: float = 0.0,
        blur_kernel: int | None = None,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_p: float = 0.0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        crop: bool = True,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        if int(size) != size or size < 1:
            raise ConfigError(f"augment size must be a positive integer, got {size}")
        self.size = int(size)
        self.crop_scale = _check_range("crop_scale", crop_scale, 0.0, 1.0)
        self.crop_ratio = _check_range("crop_ratio", crop_ratio, 0.0, float("inf"))
        self.flip_p = _check_prob("flip_p", flip_p)
        self.jitter_p = _check_prob("jitter_p", jitter_p)
        for name, value in (("brightness", brightness), ("contrast", contrast),
                            ("saturation", saturation), ("hue", hue)):
            if not value >= 0:
                raise ConfigError(f"augment {name} strength must be >= 0, got {value}")
        if hue > 0.5:
            raise ConfigError(f"augment hue must be <= 0.5 (a half turn), got {hue}")
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)
        self.grayscale_p = _check_prob("grayscale_p", grayscale_p)
        self.blur_p = _check_prob("blur_p", blur_p)
        if blur_kernel is None:
            blur_kernel = blur_kernel_size(self.size)
        if int(blur_kernel) != blur_kernel or blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ConfigError(f"augment blur_kernel must be odd and >= 1, got {blur_kernel}")
        self.blur_kernel = int(blur_kernel)
        self.blur_sigma = _check_range("blur_sigma", blur_sigma, 0.0, float("inf"))
        self.solarize_p = _check_prob("solarize_p", solarize_p)
        if len(mean) not in (1, 3) or len(std) != len(mean):
            raise ConfigError(f"augment mean/std must both have 1 or 3 values, got {tuple(mean)} "
                              f"and {tuple(std)}")
        if not all(s > 0 for s in std):
            raise ConfigError(f"augment std must be > 0, got {tuple(std)}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.crop = bool(crop)
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ConfigError(f"augment dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
            dtype = _DTYPES[dtype]
        if not dtype.is_floating_point:
            raise ConfigError(f"augment dtype must be a float type, got {dtype}")
        self.dtype = dtype
        # mean/std tensors per (device, dtype): building them from lists per call would be
        # a blocking host-to-device copy
        self._stats: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def sample_params(self, n: int, height: int, width: int, generator: torch.Generator) -> Params:
        """Draw every random parameter for ``n`` images of ``height`` x ``width``, per sample.

        Returns tensors on the generator's device: box (N, 4) [x0, y0, w, h]
        pixels; flip, jitter, grayscale, blur, solarize (N,) bool; brightness,
        contrast, saturation (N,) factors in [max(0, 1 - b), 1 + b]; hue (N,)
        shift in [-h, h] turns; order (N, 4) jitter-op permutation; sigma (N,).
        All keys are always drawn, so the random stream does not depend on p.
        """
        g = generator
        if self.crop:
            box = params.crop_boxes(n, height, width, self.crop_scale, self.crop_ratio, g)
        else:
            box = params.full_boxes(n, height, width, g.device)
        out = {"box": box, "flip": params.bernoulli(n, self.flip_p, g),
               "jitter": params.bernoulli(n, self.jitter_p, g)}
        for name in ("brightness", "contrast", "saturation"):
            strength = getattr(self, name)
            out[name] = params.uniform(n, max(0.0, 1.0 - strength), 1.0 + strength, g)
        out["hue"] = params.uniform(n, -self.hue, self.hue, g)
        out["order"] = params.random_order(n, 4, g)
        out["grayscale"] = params.bernoulli(n, self.grayscale_p, g)
        out["blur"] = params.bernoulli(n, self.blur_p, g)
        out["sigma"] = params.uniform(n, self.blur_sigma[0], self.blur_sigma[1], g)
        out["solarize"] = params.bernoulli(n, self.solarize_p, g)
        return out

    def check_input(self, images: Tensor) -> None:
        """Raise a one-line error unless ``images`` is uint8 (N, C, H, W) with C = len(mean)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"augment expects uint8 images (N, C, H, W) with C in {{1, 3}}, "
                             f"got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"augment expects uint8 images, got {images.dtype} of shape "
                             f"{tuple(images.shape)}")
        if images.shape[1] != len(self.mean):
            raise ConfigError(f"augment mean/std have {len(self.mean)} channels but the images "
                              f"have shape {tuple(images.shape)}")

    def _normalize(self, x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in self._stats:
            self._stats[key] = (_on_device(self.mean, x), _on_device(self.std, x))
        mean, std = self._stats[key]
        return ops.normalize(x, mean, std)

    def apply(self, images: Tensor, p: Params, normalize: bool = True) -> Tensor:
        """Augment uint8 (N, C, H, W) images with drawn parameters -> (N, C, size, size).

        ``normalize=False`` returns the augmented images in [0, 1] (for tests
        and for looking at the views).
        """
        self.check_input(images)
        work = torch.float64 if self.dtype == torch.float64 else torch.float32
        x = images.to(work) / 255.0  # N x C x H x W in [0, 1]
        height, width = x.shape[-2:]
        if self.crop or self.flip_p > 0:
            x = ops.resized_crop(x, p["box"], p["flip"], self.size)  # N x C x S x S
        elif (height, width) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)
        if self.jitter_p > 0:
            x = ops.color_jitter(x, p["brightness"], p["contrast"], p["saturation"], p["hue"],
                                 p["order"], p["jitter"])
        if self.grayscale_p > 0:
            x = ops.grayscale(x, p["grayscale"])
        if self.blur_p > 0 and self.blur_kernel > 1:
            x = ops.gaussian_blur(x, p["sigma"], self.blur_kernel, p["blur"])
        if self.solarize_p > 0:
            x = ops.solarize(x, p["solarize"])
        if normalize:
            x = self._normalize(x)
        return x.to(self.dtype)  # N x C x S x S

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """One augmented view per image: ``apply(images, sample_params(...))``."""
        self.check_input(images)
        n, _, height, width = images.shape
        return self.apply(images, self.sample_params(n, height, width, generator))

    def to_dict(self) -> dict[str, Any]:
        """Settings as plain data; ``Pipeline(**p.to_dict())`` rebuilds the same pipeline."""
        return {
            "size": self.size, "crop_scale": list(self.crop_scale),
            "crop_ratio": list(self.crop_ratio), "flip_p": self.flip_p,
            "jitter_p": self.jitter_p, "brightness": self.brightness, "contrast": self.contrast,
            "saturation": self.saturation, "hue": self.hue, "grayscale_p": self.grayscale_p,
            "blur_p": self.blur_p, "blur_kernel": self.blur_kernel,
            "blur_sigma": list(self.blur_sigma), "solarize_p": self.solarize_p,
            "mean": list(self.mean), "std": list(self.std), "crop": self.crop,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.to_dict().items())
        return f"Pipeline({args})"


def _on_device(values: list[float], like: Tensor) -> Tensor:
    """``values`` as a tensor on ``like``'s device, filled there: a copy from host memory
    (``torch.tensor(...).to(cuda)``) would block the first augmented batch on the GPU."""
    out = torch.empty(len(values), dtype=like.dtype, device=like.device)
    for i, v in enumerate(values):
        out[i].fill_(float(v))  # a kernel with the value as argument; out[i] = v copies
    return out
