"""The batched ops against float64 references: colorsys, explicit formulas, per-sample loops."""

from __future__ import annotations

import colorsys

import pytest
import torch
import torch.nn.functional as F

from selfsup.augment import ops


def _images(n: int, c: int = 3, h: int = 6, w: int = 5, seed: int = 0) -> torch.Tensor:
    """float64 images in [0, 1], a quarter of them coarsely quantised so that ties
    (grey pixels, two equal maximal channels) occur."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)  # N x C x H x W
    coarse = torch.randint(0, 3, (n, c, h, w), generator=g).double() / 2
    pick = torch.rand(n, 1, h, w, generator=g) < 0.25
    return torch.where(pick, coarse, x)


def _per_pixel(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply fn(r, g, b) -> (a, b, c) to every pixel in Python: the reference."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        for yy in range(x.shape[2]):
            for xx in range(x.shape[3]):
                out[i, :, yy, xx] = torch.tensor(fn(i, *x[i, :, yy, xx].tolist()), dtype=x.dtype)
    return out


def test_rgb_hsv_round_trip_matches_colorsys() -> None:
    x = _images(3)
    hsv = ops.rgb_to_hsv(x)
    ref = _per_pixel(x, lambda i, r, g, b: colorsys.rgb_to_hsv(r, g, b))
    torch.testing.assert_close(hsv, ref, atol=1e-12, rtol=0)
    back = _per_pixel(ref, lambda i, h, s, v: colorsys.hsv_to_rgb(h, s, v))
    torch.testing.assert_close(ops.hsv_to_rgb(ref), back, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_hue_rotation_matches_colorsys(seed: int) -> None:
    x = _images(4, seed=seed)
    shift = torch.tensor([-0.5, -0.13, 0.07, 0.5], dtype=torch.float64)

    def rotate(i: int, r: float, g: float, b: float) -> tuple[float, float, float]:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        return colorsys.hsv_to_rgb((h + shift[i].item()) % 1.0, s, v)

    torch.testing.assert_close(ops.adjust_hue(x, shift), _per_pixel(x, rotate), atol=1e-12, rtol=0)


def test_brightness_contrast_saturation_formulas() -> None:
    x = _images(3)
    f = torch.tensor([0.2, 1.0, 1.8], dtype=torch.float64)
    fb = f.view(3, 1, 1, 1)
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # N x 1 x H x W
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(ops.adjust_brightness(x, f), (fb * x).clamp(0, 1))
    torch.testing.assert_close(
        ops.adjust_contrast(x, f), (fb * x + (1 - fb) * mean).clamp(0, 1)
    )
    torch.testing.assert_close(
        ops.adjust_saturation(x, f), (fb * x + (1 - fb) * gray).clamp(0, 1)
    )


def test_grayscale_uses_itu_601_weights_and_keeps_channels() -> None:
    x = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1).expand(3, 3, 2, 2)  # pure R, G, B
    out = ops.grayscale(x, torch.tensor([True, True, False]))
    assert out.shape == x.shape
    torch.testing.assert_close(out[0], torch.full((3, 2, 2), 0.299, dtype=torch.float64))
    torch.testing.assert_close(out[1], torch.full((3, 2, 2), 0.587, dtype=torch.float64))
    assert torch.equal(out[2], x[2])


def test_one_channel_saturation_hue_grayscale_are_identity() -> None:
    x = _images(2, c=1)
    f = torch.tensor([0.1, 1.9], dtype=torch.float64)
    assert torch.equal(ops.adjust_saturation(x, f), x)
    assert torch.equal(ops.adjust_hue(x, f), x)
    assert torch.equal(ops.grayscale(x, torch.tensor([True, True])), x)


_SINGLE = {
    ops.BRIGHTNESS: ops.adjust_brightness,
    ops.CONTRAST: ops.adjust_contrast,
    ops.SATURATION: ops.adjust_saturation,
    ops.HUE: ops.adjust_hue,
}


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_random_order_matches_per_sample_loop(channels: int) -> None:
    n = 24  # enough for many of the 24 orders
    g = torch.Generator().manual_seed(3)
    x = _images(n, c=channels)
    b, c, s = (0.3 + 1.4 * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(3))
    hue = torch.rand(n, generator=g, dtype=torch.float64) - 0.5
    order = torch.rand(n, 4, generator=g).argsort(dim=1)  # N x 4
    apply = torch.rand(n, generator=g) < 0.8
    out = ops.color_jitter(x, b, c, s, hue, order, apply)
    for i in range(n):
        ref = x[i : i + 1]
        if apply[i]:
            factors = {0: b[i], 1: c[i], 2: s[i], 3: hue[i]}
            for op in order[i].tolist():
                ref = _SINGLE[op](ref, factors[op].view(1))
        torch.testing.assert_close(out[i : i + 1], ref, atol=1e-12, rtol=0)
    assert torch.equal(out[~apply], x[~apply])  # not jittered: bit-for-bit unchanged


def _reference_blur(x: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """One image and channel at a time, with a full 2-D kernel built from the formula."""
    out = torch.empty_like(x)
    t = torch.arange(k, dtype=torch.float64) - k // 2
    for i in range(x.shape[0]):
        g1 = torch.exp(-(t**2) / (2 * sigma[i].item() ** 2))
        kernel2d = torch.outer(g1, g1) / g1.sum() ** 2  # k x k
        for ch in range(x.shape[1]):
            img = F.pad(x[i, ch].view(1, 1, *x.shape[2:]), [k // 2] * 4, mode="reflect")
            out[i, ch] = F.conv2d(img, kernel2d.view(1, 1, k, k))[0, 0]
    return out


@pytest.mark.parametrize("channels, k", [(3, 3), (1, 5), (3, 7)])
def test_gaussian_blur_matches_per_sample_2d_convolution(channels: int, k: int) -> None:
    x = _images(5, c=channels, h=9, w=8)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    apply = torch.tensor([True, True, False, True, True])
    out = ops.gaussian_blur(x, sigma, k, apply)
    ref = _reference_blur(x, sigma, k)
    torch.testing.assert_close(out[apply], ref[apply], atol=1e-12, rtol=0)
    assert torch.equal(out[2], x[2])


def test_blur_kernel_larger_than_image_is_an_error() -> None:
    with pytest.raises(ValueError, match="too large"):
        ops.gaussian_blur(torch.rand(1, 1, 4, 4), torch.ones(1), 9, torch.ones(1, dtype=torch.bool))


def test_full_box_crop_is_identity_and_flip_is_torch_flip() -> None:
    x = _images(2, h=7, w=7)
    box = torch.tensor([[0.0, 0.0, 7.0, 7.0]] * 2, dtype=torch.float64)
    same = ops.resized_crop(x, box, torch.tensor([False, False]), 7)
    torch.testing.assert_close(same, x, atol=1e-12, rtol=0)
    flipped = ops.resized_crop(x, box, torch.tensor([True, False]), 7)
    torch.testing.assert_close(flipped[0], torch.flip(x[0], dims=[-1]), atol=1e-12, rtol=0)
    torch.testing.assert_close(flipped[1], x[1], atol=1e-12, rtol=0)


def test_crop_of_integer_box_at_its_own_size_is_the_sub_image() -> None:
    x = _images(2, h=10, w=12)
    box = torch.tensor([[2.0, 3.0, 5.0, 5.0], [7.0, 0.0, 5.0, 5.0]], dtype=torch.float64)
    out = ops.resized_crop(x, box, torch.tensor([False, True]), 5)  # N x 3 x 5 x 5
    torch.testing.assert_close(out[0], x[0, :, 3:8, 2:7], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[1], x[1, :, 0:5, 7:12].flip(-1), atol=1e-12, rtol=0)


def test_full_box_resize_equals_interpolate_antialiased_or_not() -> None:
    x = _images(2, h=12, w=9)
    box = torch.tensor([[0.0, 0.0, 9.0, 12.0]] * 2, dtype=torch.float64)
    no = torch.tensor([False, False])
    out = ops.resized_crop(x, box, no, 5, antialias=False)
    ref = F.interpolate(x, size=(5, 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    out = ops.resized_crop(x, box, no, 5)  # scale 2.4 and 1.8: antialiased by default
    ref = F.interpolate(x, size=(5, 5), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("h, w, size", [(16, 16, 8), (24, 12, 4), (30, 30, 10)])
def test_integer_factor_downscale_equals_antialiased_interpolate(h: int, w: int,
                                                                 size: int) -> None:
    # torchvision's resized_crop antialiases tensors (default since 0.17), via this call
    x = _images(3, h=h, w=w, seed=h)
    box = torch.tensor([[0.0, 0.0, w, h]] * 3, dtype=torch.float64)
    flip = torch.tensor([False, True, False])
    out = ops.resized_crop(x, box, flip, size)
    ref = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    ref[1] = ref[1].flip(-1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # no low-pass: every output pixel would be a 2-pixel blend, aliasing the fine detail
    plain = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    assert (out[0] - plain[0]).abs().max() > 0.05


def _pil_coefficients(start: float, length: float, in_size: int, out_size: int) -> torch.Tensor:
    """PIL's precompute_coeffs (Resample.c) for BILINEAR with a box, written out: (S, L)."""
    scale = length / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # bilinear filter support 1
    k = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = start + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        for x in range(xmin, xmax):
            t = abs((x - center + 0.5) / filterscale)
            k[xx, x] = 1.0 - t if t < 1.0 else 0.0
        k[xx] /= k[xx].sum()
    return k


def test_crops_match_pil_box_resampling_per_sample() -> None:
    # each sample its own sub-pixel box: shrunk (2.6x, 1.5x), kept, enlarged; some flipped
    x = _images(4, h=20, w=18, seed=5)
    box = torch.tensor([[0.4, 1.0, 15.6, 13.0], [3.25, 2.5, 9.0, 7.5],
                        [5.0, 4.0, 6.0, 6.0], [10.7, 0.3, 3.9, 5.2]], dtype=torch.float64)
    flip = torch.tensor([True, False, False, True])
    out = ops.resized_crop(x, box, flip, 6)
    for i, (x0, y0, bw, bh) in enumerate(box.tolist()):
        wx = _pil_coefficients(x0, bw, 18, 6)  # 6 x 18
        wy = _pil_coefficients(y0, bh, 20, 6)  # 6 x 20
        ref = wy @ x[i] @ wx.T  # C x 6 x 6
        ref = ref.flip(-1) if flip[i] else ref
        torch.testing.assert_close(out[i], ref, atol=1e-12, rtol=0)


def test_boxes_not_larger_than_the_output_resample_as_without_antialias() -> None:
    # upscaling (and boxes at the output size) are bilinear either way, only the route differs
    g = torch.Generator().manual_seed(9)
    x = _images(6, h=16, w=14, seed=9)
    wh = 4 + 6 * torch.rand(6, 2, generator=g, dtype=torch.float64)  # N x 2, <= 10 = size
    xy = torch.rand(6, 2, generator=g, dtype=torch.float64) * (torch.tensor([14.0, 16.0]) - wh)
    box = torch.cat([xy, wh], dim=1)  # N x 4
    flip = torch.tensor([True, False] * 3)
    torch.testing.assert_close(ops.resized_crop(x, box, flip, 10),
                               ops.resized_crop(x, box, flip, 10, antialias=False),
                               atol=1e-12, rtol=0)


def test_solarize_and_normalize() -> None:
    x = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64).view(1, 1, 1, 3).repeat(2, 1, 1, 1)
    out = ops.solarize(x, torch.tensor([True, False]))
    torch.testing.assert_close(out[0].flatten(), torch.tensor([0.1, 0.5, 0.1], dtype=torch.float64))
    assert torch.equal(out[1], x[1])
    y = ops.normalize(x, torch.tensor([0.5]), torch.tensor([0.25]))
    torch.testing.assert_close(y, (x - 0.5) / 0.25)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_ops_run_in_low_precision_close_to_float64(dtype: torch.dtype) -> None:
    x = _images(4, h=8, w=8)
    n = x.shape[0]
    g = torch.Generator().manual_seed(0)
    args = [0.6 + 0.8 * torch.rand(n, generator=g) for _ in range(3)]
    hue, order = torch.rand(n, generator=g) - 0.5, torch.rand(n, 4, generator=g).argsort(1)
    box = torch.tensor([[1.0, 0.5, 6.0, 7.0]] * n)
    flip = torch.tensor([True, False] * (n // 2))
    on = torch.ones(n, dtype=torch.bool)

    def chain(img: torch.Tensor) -> torch.Tensor:
        img = ops.resized_crop(img, box, flip, 6)
        img = ops.color_jitter(img, *args, hue, order, on)
        return ops.gaussian_blur(ops.grayscale(img, flip), torch.ones(n), 3, on)

    out = chain(x.to(dtype))
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(out.double(), chain(x), atol=tol, rtol=0)
