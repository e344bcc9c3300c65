"""Pure batched image operations with explicit per-sample parameters.

Every op takes float images in [0, 1] of shape (N, C, H, W), C in {1, 3}, any
float dtype and device, plus parameter tensors of shape (N,) or (N, 4) drawn
by :mod:`selfsup.augment.params`. No op loops over samples, calls ``.item()``
or branches on tensor values; the only Python branches are on shapes (C = 1
makes saturation, hue and grayscale the identity, as in torchvision).
Formulas follow ``torchvision.transforms.functional`` so that results match
the reference implementation of SimCLR (Chen et al. 2020, arXiv 2002.05709).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.augment.crop import _resample_weights, resized_crop  # noqa: F401  (ops' API)

# ITU-R 601-2 luma, as PIL's convert("L")
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
# colour-jitter op ids in ``order``: brightness, contrast, saturation, hue
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
_HALF = (torch.float16, torch.bfloat16)


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """(N,) parameters -> (N, 1, 1, 1) in the images' dtype and device, for broadcasting."""
    return t.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


def _mask(apply: Tensor, like: Tensor) -> Tensor:
    """(N,) bool -> (N, 1, 1, 1) bool on the images' device."""
    return apply.to(device=like.device, dtype=torch.bool).view(-1, 1, 1, 1)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma of RGB images: (N, 3, H, W) -> (N, 1, H, W); 1-channel is returned as is."""
    if images.shape[-3] == 1:
        return images
    wr, wg, wb = GRAY_WEIGHTS
    # scalar weights: a weight tensor would need a host-to-device copy per call
    gray = torch.add(images[:, 0:1] * wr, images[:, 1:2], alpha=wg)  # N x 1 x H x W
    return gray.add_(images[:, 2:3], alpha=wb)


def _blend(images: Tensor, factor: Tensor, target: Tensor) -> Tensor:
    """torchvision's ``_blend``: factor * img + (1 - factor) * target, clamped to [0, 1]."""
    f = _per_sample(factor, images)  # N x 1 x 1 x 1
    return (f * images + (1 - f) * target).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with black: ``clamp(f * x)``; factor (N,)."""
    return _blend(images, factor, torch.zeros_like(images[:, :1]))


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the per-image mean of the grayscale image; factor (N,)."""
    mean = rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)  # N x 1 x 1 x 1
    return _blend(images, factor, mean)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image; factor (N,). Identity for 1-channel images."""
    if images.shape[-3] == 1:
        return images
    return _blend(images, factor, rgb_to_grayscale(images))


def _hue_sixths(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in sixths of a turn (in [-1, 5)), value (max) and chroma (max - min): (N,1,H,W) each.

    ``colorsys``'s sectors: (g - b) / C where max = r, 2 + (b - r) / C where
    max = g, else 4 + (r - g) / C. Where C = 0 (grey) the numerators are 0 too,
    so dividing by C clamped to the smallest normal number gives hue 0, not NaN.
    """
    minc, maxc = torch.aminmax(images, dim=-3, keepdim=True)  # N x 1 x H x W each
    chroma = maxc - minc
    inv = 1.0 / chroma.clamp_min(torch.finfo(images.dtype).tiny)
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]  # N x 1 x H x W each
    hue = torch.where(maxc == g, (b - r) * inv + 2.0, (r - g) * inv + 4.0)
    hue = torch.where(maxc == r, (g - b) * inv, hue)
    return hue, maxc, chroma


def _sectors_to_rgb(hue6: Tensor, value: Tensor, chroma: Tensor) -> Tensor:
    """Branch-free HSV -> RGB from hue in sixths (any real), V and C = V S: (N, 3, H, W).

    Channel n = V - C clamp(min(k, 4 - k), 0, 1) with k = (n + 6 H) mod 6 and
    n = 5, 3, 1 for R, G, B: the same values as the sector table of
    ``colorsys.hsv_to_rgb``.
    """
    n = torch.arange(5, 0, -2, device=hue6.device, dtype=hue6.dtype).view(3, 1, 1)  # 3 x 1 x 1
    k = torch.remainder(hue6 + n, 6.0)  # N x 3 x H x W
    return value - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)  # N x 3 x H x W


def rgb_to_hsv(images: Tensor) -> Tensor:
    """RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn), as ``colorsys``: (N,3,H,W)."""
    hue6, value, chroma = _hue_sixths(images)
    sat = chroma / value.clamp_min(torch.finfo(images.dtype).tiny)  # 0 where V = 0
    return torch.cat([torch.remainder(hue6 / 6.0, 1.0), sat, value], dim=-3)  # N x 3 x H x W


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV in [0, 1] -> RGB in [0, 1], as ``colorsys.hsv_to_rgb``: (N, 3, H, W)."""
    hue, sat, value = hsv.split(1, dim=-3)  # N x 1 x H x W each
    return _sectors_to_rgb(6.0 * hue, value, value * sat)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` turns (N,), exactly in HSV space. Identity for 1 channel.

    RGB -> HSV, H <- (H + shift) mod 1, HSV -> RGB, fused: the rotation keeps V
    and S, so the way back only needs V and the chroma C = V S, never S itself.
    """
    if images.shape[-3] == 1:
        return images
    hue6, value, chroma = _hue_sixths(images)  # N x 1 x H x W each
    hue6 = hue6 + 6.0 * _per_sample(shift, images)  # the mod 6 happens per channel below
    return _sectors_to_rgb(hue6, value, chroma).clamp_(0.0, 1.0)


def _linear_step(images: Tensor, op: Tensor, b: Tensor, c: Tensor, s: Tensor) -> Tensor:
    """Apply, per sample, brightness / contrast / saturation as chosen by ``op`` (N,).

    The three are all blends ``f x + (1 - f) target`` with target black, the
    grey mean or the grey image, so one pass does all of them:
    ``f x + (1 - f) [op = S] gray + (1 - f) [op = C] mean``. op = -1 gives
    f = 1 and a zero second term: exactly the identity.
    """
    gray = rgb_to_grayscale(images)  # N x 1 x H x W
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)  # N x 1 x 1 x 1
    factor = torch.where(op == BRIGHTNESS, b, torch.ones_like(b))  # N
    factor = torch.where(op == CONTRAST, c, factor)
    factor = torch.where(op == SATURATION, s, factor)
    f = _per_sample(factor, images)  # N x 1 x 1 x 1
    o = op.view(-1, 1, 1, 1)
    gray_w = (1 - f) * (o == SATURATION)  # N x 1 x 1 x 1
    mean_w = (1 - f) * (o == CONTRAST) * mean  # N x 1 x 1 x 1
    target = torch.addcmul(mean_w, gray, gray_w)  # N x 1 x H x W: (1 - f) * target
    return torch.addcmul(target, images, f).clamp_(0.0, 1.0)


def color_jitter(
    images: Tensor,
    brightness: Tensor,
    contrast: Tensor,
    saturation: Tensor,
    hue: Tensor,
    order: Tensor,
    apply: Tensor,
) -> Tensor:
    """torchvision's ColorJitter with a per-sample random order of its four ops.

    brightness, contrast, saturation: (N,) factors; hue: (N,) shift in turns;
    order: (N, 4) a permutation of (BRIGHTNESS, CONTRAST, SATURATION, HUE) per
    sample; apply: (N,) bool, samples with False come out unchanged.

    Vectorised order: hue (the expensive op) sits at position p per sample;
    the three linear ops before it run in 3 "pre" rounds (round r applies the
    r-th linear op of every sample with r < p, identity for the others), then
    hue runs once for the batch, then 3 "post" rounds apply the rest. That is
    exactly the per-sample sequence, with 6 cheap blends and one HSV round trip
    instead of evaluating all four ops in each of four rounds.
    """
    dev = images.device
    order, apply, hue = order.to(dev), apply.to(dev), hue.to(dev)
    brightness, contrast, saturation = brightness.to(dev), contrast.to(dev), saturation.to(dev)
    if images.shape[-3] == 1:
        saturation = torch.ones_like(saturation)  # identity on grey images, as torchvision
    hue_pos = (order == HUE).to(torch.uint8).argmax(dim=1)  # N: position of hue
    # the linear ops in their order, hue removed: r-th is order[r] before hue, order[r+1] after
    linear = [torch.where(r < hue_pos, order[:, r], order[:, r + 1]) for r in range(3)]  # 3 x N
    none = torch.full_like(hue_pos, -1)
    out = images
    for r in range(3):
        op = torch.where(apply & (r < hue_pos), linear[r], none)  # N
        out = _linear_step(out, op, brightness, contrast, saturation)
    if images.shape[-3] == 3:
        out = torch.where(_mask(apply, out), adjust_hue(out, hue), out)
    for r in range(3):
        op = torch.where(apply & (r >= hue_pos), linear[r], none)  # N
        out = _linear_step(out, op, brightness, contrast, saturation)
    return out


def grayscale(images: Tensor, apply: Tensor) -> Tensor:
    """Replace the chosen images (N,) bool by their luma, keeping C channels."""
    if images.shape[-3] == 1:
        return images
    gray = rgb_to_grayscale(images).expand_as(images)  # N x C x H x W
    return torch.where(_mask(apply, images), gray, images)


def gaussian_kernels(
    sigma: Tensor, kernel_size: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Normalised 1-D Gaussian kernels, one per sigma: (N,) -> (N, kernel_size) in ``dtype``."""
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, device=sigma.device, dtype=dtype)  # k
    k = torch.exp(-0.5 * (x / sigma.to(dtype).view(-1, 1)) ** 2)  # N x k
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int, apply: Tensor) -> Tensor:
    """Separable Gaussian blur with per-sample sigma (N,), reflect padding, as torchvision.

    All kernels are applied at once by a depthwise convolution over the batch
    folded into channels: (1, N*C, H, W) with groups = N*C. Samples with
    ``apply`` False are returned bit-for-bit unchanged (selected, not convolved
    with a delta, which TF32 convolutions would round).
    """
    n, c, height, width = images.shape
    half = kernel_size // 2
    if half >= min(height, width):
        raise ValueError(f"blur kernel {kernel_size} too large for {height}x{width} images")
    # kernels in at least float32: bf16 weights would not sum to 1
    exact = torch.promote_types(images.dtype, torch.float32)
    k = gaussian_kernels(sigma.to(images.device), kernel_size, exact).to(images.dtype)  # N x k
    weight = k.unsqueeze(1).expand(n, c, kernel_size).reshape(n * c, kernel_size)  # NC x k
    x = images.reshape(1, n * c, height, width)  # 1 x NC x H x W
    x = F.pad(x, (half, half, 0, 0), mode="reflect")
    x = F.conv2d(x, weight.view(n * c, 1, 1, kernel_size), groups=n * c)  # 1 x NC x H x W
    x = F.pad(x, (0, 0, half, half), mode="reflect")
    x = F.conv2d(x, weight.view(n * c, 1, kernel_size, 1), groups=n * c)  # 1 x NC x H x W
    return torch.where(_mask(apply, images), x.view(n, c, height, width), images)


def solarize(images: Tensor, apply: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert the pixels >= threshold of the chosen images (N,) bool (BYOL's solarize)."""
    hit = _mask(apply, images) & (images >= threshold)  # N x C x H x W
    return torch.where(hit, 1.0 - images, images)


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x - mean) / std per channel; mean, std: (C,) tensors already on the device."""
    m = mean.to(images.dtype).view(1, -1, 1, 1)  # 1 x C x 1 x 1
    s = std.to(images.dtype).view(1, -1, 1, 1)  # 1 x C x 1 x 1
    return (images - m) / s
