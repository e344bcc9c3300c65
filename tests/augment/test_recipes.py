"""Recipes carry the papers' settings; every recipe runs on 1- and 3-channel images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.augment import (
    NORMALIZATION,
    RECIPES,
    blur_kernel_size,
    build_recipe,
    eval_,
    moco_v1,
    moco_v2,
    normalization,
    simclr,
)
from selfsup.errors import ConfigError


def _uint8(n: int, c: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("size, kernel", [(224, 23), (96, 9), (64, 7), (32, 3), (28, 3),
                                          (20, 3), (19, 1), (8, 1)])
def test_blur_kernel_follows_simclr(size: int, kernel: int) -> None:
    assert blur_kernel_size(size) == kernel


def test_blur_kernel_is_simclrs_rule_at_every_size() -> None:
    # google-research/simclr data_util.py: random_blur passes kernel_size=height//10,
    # gaussian_blur takes radius = to_int32(kernel_size / 2), kernel_size = radius * 2 + 1
    for size in range(8, 513):
        kernel_size = size // 10
        radius = int(kernel_size / 2)
        assert blur_kernel_size(size) == radius * 2 + 1, size


def test_simclr_settings_follow_the_paper() -> None:
    aug = simclr(224)
    assert aug.crop_scale == (0.08, 1.0) and aug.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert (aug.brightness, aug.contrast, aug.saturation, aug.hue) == pytest.approx(
        (0.8, 0.8, 0.8, 0.2)
    )
    assert (aug.flip_p, aug.jitter_p, aug.grayscale_p) == (0.5, 0.8, 0.2)
    assert (aug.blur_p, aug.blur_kernel, aug.blur_sigma) == (0.5, 23, (0.1, 2.0))
    assert aug.mean == NORMALIZATION["imagenet"][0]
    cifar = simclr(32, strength=0.5)
    assert cifar.brightness == pytest.approx(0.4) and cifar.hue == pytest.approx(0.1)


@pytest.mark.parametrize(
    "size, blur, expected", [(224, None, 0.5), (96, None, 0.5), (32, None, 0.0), (28, None, 0.0),
                             (32, True, 0.5), (224, False, 0.0)]
)
def test_blur_default_is_off_for_cifar_and_mnist_sizes(size, blur, expected) -> None:
    assert simclr(size, blur=blur).blur_p == expected
    assert moco_v2(size, blur=blur).blur_p == expected


def test_simclr_rejects_negative_strength_and_overrides_apply() -> None:
    with pytest.raises(ConfigError, match="strength"):
        simclr(32, strength=-1)
    aug = simclr(32, dtype=torch.bfloat16, crop_scale=(0.2, 1.0))
    assert aug.dtype == torch.bfloat16 and aug.crop_scale == (0.2, 1.0)


def test_moco_settings() -> None:
    v1, v2 = moco_v1(224), moco_v2(224)
    assert v1.crop_scale == v2.crop_scale == (0.2, 1.0)
    assert (v1.brightness, v1.contrast, v1.saturation, v1.hue, v1.jitter_p) == (
        0.4, 0.4, 0.4, 0.4, 1.0
    )
    assert v1.blur_p == 0.0 and v1.grayscale_p == 0.2 and v1.flip_p == 0.5
    assert (v2.brightness, v2.contrast, v2.saturation, v2.hue, v2.jitter_p) == (
        0.4, 0.4, 0.4, 0.1, 0.8
    )
    assert v2.blur_p == 0.5 and v2.grayscale_p == 0.2 and v2.flip_p == 0.5


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("dataset, c, size", [("mnist", 1, 28), ("cifar10", 3, 32)])
def test_every_recipe_runs_on_its_data(name: str, dataset: str, c: int, size: int) -> None:
    mean, std = normalization(dataset)
    kwargs = dict(size=size, mean=mean, std=std)
    if name == "simclr":
        kwargs["strength"] = 0.5
    aug = build_recipe(name, **kwargs)
    out = aug(_uint8(32, c, size), torch.Generator().manual_seed(1))
    assert out.shape == (32, c, size, size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_simclr_on_one_channel_images_with_blur() -> None:
    mean, std = NORMALIZATION["fashion-mnist"]
    aug = simclr(28, blur=True, mean=mean, std=std)
    x = _uint8(64, 1, 28)
    g = torch.Generator().manual_seed(0)
    p = aug.sample_params(64, 28, 28, g)
    raw = aug.apply(x, p, normalize=False)
    assert raw.shape == (64, 1, 28, 28) and raw.min() >= 0 and raw.max() <= 1
    torch.testing.assert_close(aug.apply(x, p), (raw - mean[0]) / std[0])


def test_eval_is_a_deterministic_resize_and_normalise() -> None:
    mean, std = NORMALIZATION["cifar10"]
    aug = eval_(24, mean=mean, std=std)
    x = _uint8(4, 3, 32)
    out = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(1)))
    ref = F.interpolate(x.float() / 255, size=(24, 24), mode="bilinear", align_corners=False,
                        antialias=True)  # as torchvision's Resize on tensors
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (ref - m) / s)
    same = eval_(32, mean=mean, std=std)(x, torch.Generator())
    torch.testing.assert_close(same, (x.float() / 255 - m) / s)


def test_unknown_recipe_and_dataset_list_the_known_names() -> None:
    with pytest.raises(ConfigError, match="simclr, moco_v1, moco_v2, eval"):
        build_recipe("byol", size=32)
    with pytest.raises(ConfigError, match="cifar10"):
        normalization("svhn")


def test_normalization_constants() -> None:
    assert set(NORMALIZATION) == {
        "fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "imagenet"
    }
    for mean, std in NORMALIZATION.values():
        assert len(mean) == len(std) in (1, 3)
    assert NORMALIZATION["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert NORMALIZATION["mnist"] == ((0.1307,), (0.3081,))
