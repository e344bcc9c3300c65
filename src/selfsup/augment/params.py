"""Per-sample random parameters for the batched augmentations, drawn on the device.

Contrastive learning needs every image of a batch to get its own crop, flip and
colour distortion (SimCLR, Chen et al. 2020, arXiv 2002.05709, Appendix A:
"applied independently to each data example"); drawing one set per batch, as
torchvision v2 does for tensors, correlates the two views of all images.

Every function here draws from an explicit ``torch.Generator`` with tensors
created on that generator's device, so a CUDA pipeline never talks to the host
and a fixed seed reproduces a batch exactly. Nothing here calls ``.item()`` or
branches on drawn values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# torchvision's RandomResizedCrop tries 10 boxes before falling back to a central crop
CROP_ATTEMPTS = 10


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """``n`` independent draws from U[low, high] on the generator's device: (N,) float32."""
    u = torch.rand(n, generator=generator, device=generator.device)  # N
    return low + (high - low) * u


def bernoulli(n: int, p: float, generator: torch.Generator) -> Tensor:
    """``n`` independent coin flips with P(True) = p: (N,) bool.

    ``u < p`` with u in [0, 1) makes p = 0 never and p = 1 always true.
    """
    return torch.rand(n, generator=generator, device=generator.device) < p  # N


def random_order(n: int, k: int, generator: torch.Generator) -> Tensor:
    """One uniformly random permutation of ``range(k)`` per sample: (N, k) int64.

    The argsort of i.i.d. uniforms is a uniform permutation (ties have
    probability ~0), drawn for the whole batch in one call.
    """
    u = torch.rand(n, k, generator=generator, device=generator.device)  # N x k
    return u.argsort(dim=1)


def central_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    """torchvision's fallback crop (w, h): the whole image, clipped to the aspect range."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return float(width), width / ratio[0]
    if in_ratio > ratio[1]:
        return height * ratio[1], float(height)
    return float(width), float(height)


def crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = CROP_ATTEMPTS,
) -> Tensor:
    """Random-resized-crop boxes, one per sample: (N, 4) float32 [x0, y0, w, h] in pixels.

    torchvision's ``RandomResizedCrop.get_params`` with the rejection loop
    vectorised: every sample draws ``attempts`` candidates (area fraction
    U[scale], log-uniform aspect ratio in ``ratio``) at once and keeps the first
    one that fits inside the image; a sample whose candidates all fail gets the
    central crop clipped to ``ratio``. Unlike torchvision the boxes are not
    rounded to whole pixels: ``grid_sample`` resamples sub-pixel boxes exactly,
    so the area fraction and aspect ratio hold exactly, not up to rounding.
    """
    dev = generator.device
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * uniform(n * attempts, scale[0], scale[1], generator).view(n, attempts)  # N x A
    aspect = torch.exp(uniform(n * attempts, log_lo, log_hi, generator)).view(n, attempts)  # N x A
    w = torch.sqrt(target * aspect)  # N x A
    h = torch.sqrt(target / aspect)  # N x A
    fits = (w <= width) & (h <= height)  # N x A
    # argmax returns the FIRST maximal index: the first candidate that fits
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # N x 1
    any_fit = fits.any(dim=1)  # N
    fw, fh = central_box(height, width, ratio)
    w = torch.where(any_fit, w.gather(1, first).squeeze(1), torch.full((n,), fw, device=dev))  # N
    h = torch.where(any_fit, h.gather(1, first).squeeze(1), torch.full((n,), fh, device=dev))  # N
    # the fallback is centred, as in torchvision: position u = 1/2
    half = torch.full((n,), 0.5, device=dev)
    ux = torch.where(any_fit, uniform(n, 0.0, 1.0, generator), half)  # N
    uy = torch.where(any_fit, uniform(n, 0.0, 1.0, generator), half)  # N
    x0 = ux * (width - w)  # N
    y0 = uy * (height - h)  # N
    return torch.stack([x0, y0, w, h], dim=1)  # N x 4


def full_boxes(n: int, height: int, width: int, device: torch.device) -> Tensor:
    """The whole image as a box for every sample: (N, 4) [0, 0, W, H]."""
    # filled on the device: torch.tensor(list, device=cuda) would be a blocking copy
    box = torch.zeros(n, 4, device=device)  # N x 4
    box[:, 2] = float(width)
    box[:, 3] = float(height)
    return box
