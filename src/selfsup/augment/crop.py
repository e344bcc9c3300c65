"""Random resized crop of a batch, with per-sample boxes and flips, antialiased when shrinking.

Part of :mod:`selfsup.augment.ops` (re-exported there): images are float (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


def _resample_weights(start: Tensor, length: Tensor, in_size: int, out_size: int,
                      flip: Tensor | None = None) -> Tensor:
    """Antialiased bilinear weights (N, out_size, in_size): [start, start + length) to out_size.

    PIL's antialiased bilinear resampling (``Image.resize`` with a ``box``), per
    sample: output pixel i is centred at c_i = start + s (i + 1/2) with
    s = length / out_size, and input pixel j (centre j + 1/2) weighs the triangle
    max(0, 1 - |j + 1/2 - c_i| / support), support = max(s, 1); each row is
    normalised over the pixels of the image. Shrinking (s > 1) widens the
    triangle to s input pixels each side; at s <= 1 it is bilinear
    interpolation with the edge pixels repeated. ``flip`` (N,) bool mirrors the
    output pixels of the chosen samples (c_i taken at out_size - 1 - i).
    """
    dev, dtype = start.device, start.dtype
    scale = (length / out_size).view(-1, 1, 1)  # N x 1 x 1
    i = torch.arange(out_size, device=dev, dtype=dtype).view(1, -1, 1) + 0.5  # 1 x S x 1
    if flip is not None:
        i = torch.where(flip.view(-1, 1, 1), out_size - i, i)  # N x S x 1
    j = torch.arange(in_size, device=dev, dtype=dtype).view(1, 1, -1) + 0.5  # 1 x 1 x L
    # the clamp is a no-op for boxes inside the image; outside it keeps every row non-empty
    centre = (start.view(-1, 1, 1) + scale * i).clamp_(0.0, in_size)  # N x S x 1
    # support - |d| is the triangle times support, a factor the normalisation removes
    w = torch.sub(scale.clamp_min(1.0), (j - centre).abs_()).clamp_min_(0.0)  # N x S x L
    return w.div_(w.sum(dim=2, keepdim=True))


def resized_crop(images: Tensor, boxes: Tensor, flip: Tensor, size: int,
                 antialias: bool = True) -> Tensor:
    """Crop every image to its box, flip it if asked, and resize to ``size`` x ``size``.

    boxes: (N, 4) [x0, y0, w, h] in pixels, inside the image; flip: (N,) bool.
    A full-image box at the same size gives the image back (the identity).

    With ``antialias`` (the default, as torchvision's ``resized_crop`` on
    tensors since 0.17), a box larger than ``size`` is low-passed as it is
    shrunk: each sample is resampled separably with its own triangle filter
    (:func:`_resample_weights`, PIL's antialiased bilinear), i.e. two batched
    matrix products with (N, S, W) and (N, S, H) weights; a full-image box
    equals ``F.interpolate(..., mode="bilinear", antialias=True)``. Boxes no
    larger than ``size`` are plainly bilinear either way, so images no larger
    than ``size`` x ``size`` take the cheaper path below. As in PIL's resize
    with a box (and as the bilinear grid), a filter near a box edge reads the
    image just outside the box, where torchvision's crop-then-resize of a whole-
    pixel box renormalises over the box alone.

    Without it (or for such small images) all crops go through ONE bilinear
    ``grid_sample`` (align_corners=False, i.e. half-pixel centres as in
    ``F.interpolate``) on an affine grid; the horizontal flip is a negative x
    scale of that grid, which costs nothing extra.
    """
    n, c, height, width = images.shape
    # a bf16 grid has 8 mantissa bits: ~0.5 px error on a 224 image, so sample in float32
    work = images.float() if images.dtype in _HALF else images
    boxes = boxes.to(device=images.device, dtype=work.dtype)
    flip = flip.to(device=images.device)
    x0, y0, w, h = boxes.unbind(dim=1)  # N each
    if antialias and max(height, width) > size:  # some box may shrink: filter it
        wx = _resample_weights(x0, w, width, size, flip)  # N x S x W
        wy = _resample_weights(y0, h, height, size)  # N x S x H
        out = work.reshape(n, c * height, width) @ wx.transpose(1, 2)  # N x CH x S
        out = wy.unsqueeze(1) @ out.view(n, c, height, size)  # N x C x S x S
        return out.to(images.dtype)
    sign = 1.0 - 2.0 * flip.to(work.dtype)  # N: +1 or -1
    zero = torch.zeros_like(x0)
    # normalised coords (align_corners=False): pixel edge 0 -> -1, edge W -> +1
    row_x = torch.stack([sign * w / width, zero, (2 * x0 + w) / width - 1], dim=1)  # N x 3
    row_y = torch.stack([zero, h / height, (2 * y0 + h) / height - 1], dim=1)  # N x 3
    theta = torch.stack([row_x, row_y], dim=1)  # N x 2 x 3
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)  # N x S x S x 2
    # border padding: samples within half a pixel of the edge must not blend with zeros
    out = F.grid_sample(work, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(images.dtype)  # N x C x S x S
