"""Pipeline: per-sample parameters, their ranges, seeding, validation, devices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from selfsup.augment import Pipeline, ops, params
from selfsup.errors import ConfigError

FULL = dict(jitter_p=1.0, grayscale_p=0.5, blur_p=1.0, blur_kernel=3, solarize_p=0.5)


def _uint8(n: int = 64, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def _gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def test_parameters_differ_within_a_batch() -> None:
    p = Pipeline(32, **FULL).sample_params(64, 32, 32, _gen())
    assert torch.unique(p["box"], dim=0).shape[0] == 64
    for key in ("brightness", "contrast", "saturation", "hue", "sigma"):
        assert torch.unique(p[key]).numel() == 64, key
    assert 0 < p["flip"].sum() < 64 and 0 < p["grayscale"].sum() < 64
    assert torch.unique(p["order"], dim=0).shape[0] > 10  # many of the 24 orders


def test_views_differ_within_a_batch_and_between_calls() -> None:
    aug = Pipeline(16, **FULL)
    x = _uint8(1).expand(8, 3, 32, 32)  # 8 copies of one image
    g = _gen()
    v1, v2 = aug(x, g), aug(x, g)
    assert all(not torch.equal(v1[0], v1[i]) for i in range(1, 8))
    assert not torch.equal(v1, v2)


def test_same_seed_same_output_other_seed_different() -> None:
    aug = Pipeline(24, **FULL)
    x = _uint8(16)
    assert torch.equal(aug(x, _gen(7)), aug(x, _gen(7)))
    assert not torch.equal(aug(x, _gen(7)), aug(x, _gen(8)))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_output_shape_dtype_and_range(channels: int, dtype: torch.dtype) -> None:
    mean, std = (0.5,) * channels, (0.25,) * channels
    aug = Pipeline(20, mean=mean, std=std, dtype=dtype, **FULL)
    x = _uint8(16, c=channels, h=28, w=36)
    p = aug.sample_params(16, 28, 36, _gen())
    out = aug.apply(x, p)
    assert out.shape == (16, channels, 20, 20) and out.dtype == dtype
    assert torch.isfinite(out).all()
    raw = aug.apply(x, p, normalize=False)
    assert raw.min() >= 0 and raw.max() <= 1
    torch.testing.assert_close(out.float(), ((raw.float() - 0.5) / 0.25), atol=0.02, rtol=0.01)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(8, 300),
    w=st.integers(8, 300),
    lo=st.floats(0.05, 1.0),
    span=st.floats(0.0, 1.0),
    r_lo=st.floats(0.3, 1.0),
    r_span=st.floats(0.0, 2.0),
)
def test_crop_boxes_respect_scale_ratio_and_image(h, w, lo, span, r_lo, r_span) -> None:
    scale, ratio = (lo, lo + (1 - lo) * span), (r_lo, r_lo + r_span)
    box = params.crop_boxes(256, h, w, scale, ratio, _gen())  # N x 4
    x0, y0, bw, bh = box.double().unbind(1)
    eps = 1e-4
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + bw <= w + eps).all() and (y0 + bh <= h + eps).all()
    fw, fh = params.central_box(h, w, ratio)
    central = torch.tensor([(w - fw) / 2, (h - fh) / 2, fw, fh], dtype=torch.float64)
    fallback = torch.isclose(box.double(), central, rtol=1e-6, atol=1e-4).all(dim=1)  # N
    drawn = ~fallback
    area = bw * bh / (h * w)
    assert (area[drawn] >= scale[0] - eps).all() and (area[drawn] <= scale[1] + eps).all()
    aspect = bw / bh
    assert (aspect >= ratio[0] * (1 - eps)).all() and (aspect <= ratio[1] * (1 + eps)).all()


def test_crop_falls_back_to_central_box_clipped_to_ratio() -> None:
    # a 10 x 100 strip cannot hold 90% of its area at aspect <= 4/3: always the fallback
    box = params.crop_boxes(8, 10, 100, (0.9, 1.0), (3 / 4, 4 / 3), _gen())
    expected = torch.tensor([(100 - 40 / 3) / 2, 0.0, 40 / 3, 10.0]).expand(8, 4)
    torch.testing.assert_close(box, expected)


def test_default_square_crops_have_area_and_ratio_in_range() -> None:
    box = Pipeline(32).sample_params(4096, 32, 32, _gen())["box"]
    area = box[:, 2] * box[:, 3] / 1024
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1 + 1e-6
    assert area.min() < 0.1 and area.max() > 0.9  # the whole range is used
    aspect = box[:, 2] / box[:, 3]
    assert aspect.min() >= 0.75 - 1e-5 and aspect.max() <= 4 / 3 + 1e-5


def test_jitter_hue_and_sigma_ranges() -> None:
    aug = Pipeline(32, brightness=0.3, contrast=1.5, saturation=0.0, hue=0.2, blur_p=0.5,
                   blur_sigma=(0.5, 1.5))
    p = aug.sample_params(2048, 32, 32, _gen())
    assert p["brightness"].min() >= 0.7 and p["brightness"].max() <= 1.3
    assert p["contrast"].min() >= 0.0 and p["contrast"].max() <= 2.5  # max(0, 1 - b)
    assert (p["saturation"] == 1.0).all()
    assert p["hue"].min() >= -0.2 and p["hue"].max() <= 0.2 and p["hue"].min() < -0.19
    assert p["sigma"].min() >= 0.5 and p["sigma"].max() <= 1.5
    assert all(sorted(o) == [0, 1, 2, 3] for o in p["order"].tolist())
    assert abs(p["jitter"].float().mean().item() - 0.8) < 0.05
    assert abs(p["flip"].float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_probability_zero_never_one_always(prob: float) -> None:
    aug = Pipeline(32, flip_p=prob, jitter_p=prob, grayscale_p=prob, blur_p=prob,
                   solarize_p=prob)
    p = aug.sample_params(512, 32, 32, _gen())
    for key in ("flip", "jitter", "grayscale", "blur", "solarize"):
        assert p[key].all() if prob == 1.0 else not p[key].any(), key


def test_everything_off_is_resize_and_normalise() -> None:
    aug = Pipeline(32, crop=False, flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0,
                   mean=(0.5,), std=(0.5,))
    x = _uint8(4, c=1)
    assert torch.equal(aug(x, _gen()), (x.float() / 255 - 0.5) / 0.5)


def test_shrinking_is_antialiased_with_or_without_crop() -> None:
    x = _uint8(4, h=64, w=48)
    ref = F.interpolate(x.double() / 255, size=(16, 16), mode="bilinear", align_corners=False,
                        antialias=True)
    plain = Pipeline(16, crop=False, flip_p=0, jitter_p=0, grayscale_p=0, dtype=torch.float64)
    torch.testing.assert_close(plain.apply(x, plain.sample_params(4, 64, 48, _gen()),
                                           normalize=False), ref, atol=1e-12, rtol=0)
    flips = Pipeline(16, crop=False, flip_p=0.5, jitter_p=0, grayscale_p=0, dtype=torch.float64)
    p = {**flips.sample_params(4, 64, 48, _gen()), "flip": torch.tensor([True, False] * 2)}
    out = flips.apply(x, p, normalize=False)  # through resized_crop with full-image boxes
    want = torch.where(p["flip"].view(-1, 1, 1, 1), ref.flip(-1), ref)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)


def test_params_live_on_the_generator_device_and_to_dict_round_trips() -> None:
    aug = Pipeline(32, dtype="bfloat16", **FULL)
    p = aug.sample_params(4, 40, 30, _gen())
    assert all(t.device.type == "cpu" and t.shape[0] == 4 for t in p.values())
    clone = Pipeline(**aug.to_dict())
    assert clone.to_dict() == aug.to_dict() and clone.dtype == torch.bfloat16
    assert "crop_scale" in repr(aug)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(flip_p=1.5), "flip_p"), (dict(jitter_p=-0.1), "jitter_p"),
        (dict(grayscale_p=2), "grayscale_p"), (dict(blur_p=-1), "blur_p"),
        (dict(solarize_p=1.1), "solarize_p"), (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
        (dict(crop_scale=(0.5, 0.2)), "crop_scale"), (dict(crop_scale=(0.5, 1.2)), "crop_scale"),
        (dict(crop_ratio=(2.0, 1.0)), "crop_ratio"), (dict(brightness=-0.1), "brightness"),
        (dict(hue=0.6), "hue"), (dict(blur_kernel=4), "blur_kernel"),
        (dict(blur_kernel=0), "blur_kernel"), (dict(blur_sigma=(0.0, 1.0)), "blur_sigma"),
        (dict(mean=(0.5, 0.5), std=(0.5, 0.5)), "mean"), (dict(std=(0.5, 0.0, 0.5)), "std"),
        (dict(dtype="int8"), "dtype"), (dict(dtype=torch.int64), "dtype"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        Pipeline(32, **kwargs)


def test_bad_size_raises() -> None:
    with pytest.raises(ConfigError, match="size"):
        Pipeline(0)


@pytest.mark.parametrize(
    "x, error",
    [
        (torch.zeros(3, 32, 32, dtype=torch.uint8), ValueError),
        (torch.zeros(2, 4, 32, 32, dtype=torch.uint8), ValueError),
        (torch.zeros(2, 3, 32, 32), ValueError),
        (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), ConfigError),
    ],
)
def test_bad_input_names_the_shape(x: torch.Tensor, error: type) -> None:
    with pytest.raises(error, match=str(tuple(x.shape)).replace("(", r"\(").replace(")", r"\)")):
        Pipeline(16)(x, _gen())


def test_crop_output_matches_boxes_through_a_coordinate_image() -> None:
    # an image whose pixel values encode x: the crop's mean x must be the box centre
    w = 64
    ramp = (torch.arange(w) * 4).to(torch.uint8).view(1, 1, 1, w).expand(32, 1, w, w)
    aug = Pipeline(16, flip_p=0.0, jitter_p=0, grayscale_p=0, mean=(0.0,), std=(1.0,))
    p = aug.sample_params(32, w, w, _gen())
    out = aug.apply(ramp.contiguous(), p).double()  # N x 1 x 16 x 16
    centre = (p["box"][:, 0] + p["box"][:, 2] / 2 - 0.5) * 4 / 255
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), centre.double(), atol=2e-2, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipeline_runs_on_cuda_with_a_cuda_generator() -> None:
    aug = Pipeline(32, dtype=torch.bfloat16, **FULL)
    x = _uint8(64).cuda()
    g = _gen(0, "cuda")
    out = aug(x, g)
    assert out.device.type == "cuda" and out.shape == (64, 3, 32, 32)
    assert torch.isfinite(out.float()).all()
    assert torch.equal(out, aug(x, _gen(0, "cuda")))
    p = aug.sample_params(64, 32, 32, _gen(0, "cuda"))
    assert all(t.device.type == "cuda" for t in p.values())
    # the hot path must never wait for the GPU (mean/std are cached by the calls above)
    torch.cuda.set_sync_debug_mode("error")
    try:
        aug(x, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_antialiased_crops_on_cuda_match_the_cpu_without_a_sync() -> None:
    aug = Pipeline(32, **FULL)
    images = _uint8(64, h=48, w=56)  # boxes up to 56 px wide: the antialiased path
    x = images.float() / 255
    p = aug.sample_params(64, 48, 56, _gen())
    cpu = ops.resized_crop(x, p["box"], p["flip"], 32)
    gpu = ops.resized_crop(x.cuda(), p["box"].cuda(), p["flip"].cuda(), 32)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)  # room for TF32 matmuls
    images = images.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        aug(images, _gen(0, "cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
