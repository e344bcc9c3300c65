"""Jigsaw / Jigsaw++: tiles, per-tile normalisation, shuffling, replacement, a solvable puzzle."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.experiment import load_run_backbone
from selfsup.methods import Jigsaw, build_method
from selfsup.methods.jigsaw import extract_tiles, normalize_tiles, replace_tiles, shuffle_tiles
from selfsup.methods.permutations import inverse
from selfsup.models import resnet
from selfsup.train.logging import read_jsonl
from selfsup.train.pretrain import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coordinates(n: int, side: int, channels: int = 1) -> torch.Tensor:
    """Pixel (y, x) of image i, channel c holds 10000 i + 1000 c + 100 y + x: (N, C, S, S)."""
    ramp = torch.arange(side, dtype=torch.float64)
    yx = 100 * ramp[:, None] + ramp[None, :]  # S x S
    c = 1000 * torch.arange(channels, dtype=torch.float64)[:, None, None]  # C x 1 x 1
    i = 10000 * torch.arange(n, dtype=torch.float64)[:, None, None, None]  # N x 1 x 1 x 1
    return i + c + yx  # N x C x S x S


@pytest.mark.parametrize("side,gap,tile", [(28, 2, 7), (32, 2, 8), (27, 0, 9), (24, 3, 5)])
def test_tiles_are_crops_inside_their_cells(side, gap, tile):
    x = coordinates(16, side, channels=2)
    tiles = extract_tiles(x, gap, gen())  # N x 9 x C x t x t
    assert tiles.shape == (16, 9, 2, tile, tile)
    cell = side // 3
    top, left = (tiles[:, :, 0, 0, 0] % 10000) // 100, tiles[:, :, 0, 0, 0] % 100  # N x 9
    k = torch.arange(9)
    dy, dx = top - (k // 3) * cell, left - (k % 3) * cell  # N x 9: shift inside the cell
    assert dy.min() >= 0 and dx.min() >= 0
    assert dy.max() <= gap + side - 3 * cell and dx.max() <= gap + side - 3 * cell
    ramp = torch.arange(tile, dtype=torch.float64)
    crop = 100 * ramp[:, None] + ramp[None, :]  # t x t: a contiguous crop, channel and image kept
    assert torch.equal(tiles, tiles[..., :1, :1] + crop)  # N x 9 x C x t x t
    assert torch.equal(tiles[:, :, 1] - tiles[:, :, 0], torch.full_like(tiles[:, :, 0], 1000))
    assert torch.equal(tiles[:, :, 0, 0, 0] // 10000, torch.arange(16.0)[:, None].expand(16, 9))
    if side == 27 and gap == 0:  # no room to move: the tiles are the image
        grid = tiles.view(16, 3, 3, 2, 9, 9).permute(0, 3, 1, 4, 2, 5).reshape(16, 2, 27, 27)
        assert torch.equal(grid, x)


def test_gaps_differ_per_sample_and_follow_the_seed():
    x = torch.rand(1, 3, 28, 28).expand(32, 3, 28, 28)  # one image, 32 times
    a, b = extract_tiles(x, 2, gen(5)), extract_tiles(x, 2, gen(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, extract_tiles(x, 2, gen(6)))
    distinct = torch.unique(a.flatten(1), dim=0)  # the same image, cut differently per sample
    assert distinct.shape[0] > 16


def test_per_tile_normalisation():
    tiles = 3 + 5 * torch.rand(4, 9, 3, 7, 7, generator=gen(), dtype=torch.float64)
    out = normalize_tiles(tiles)
    var, mean = torch.var_mean(out, dim=(-2, -1), correction=0)  # 4 x 9 x 3
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-12, rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3, rtol=0)  # eps in the std
    blank = normalize_tiles(torch.full((1, 9, 1, 7, 7), 0.7))
    assert torch.equal(blank, torch.zeros_like(blank))  # a blank background stays flat


def test_shuffle_then_inverse_gives_the_tiles_back():
    tiles = torch.randn(6, 9, 1, 4, 4, generator=gen())
    perms = torch.stack([torch.randperm(9, generator=gen(i)) for i in range(6)])  # 6 x 9
    shuffled = shuffle_tiles(tiles, perms)
    assert torch.equal(shuffled[2, 5], tiles[2, perms[2, 5]])  # position k shows tile perm[k]
    assert torch.equal(shuffle_tiles(shuffled, inverse(perms)), tiles)


def test_jigsaw_plus_replaces_zero_to_two_tiles_from_another_image():
    n = 300
    tiles = extract_tiles(coordinates(n, 28), 2, gen())  # N x 9 x 1 x 7 x 7
    out, replaced, other = replace_tiles(tiles, gen(1))
    count = replaced.sum(1)  # N
    assert set(count.tolist()) == {0, 1, 2}
    assert all(abs((count == c).float().mean().item() - 1 / 3) < 0.1 for c in range(3))
    assert (other != torch.arange(n)).all()
    source = out[:, :, 0, 0, 0] // 10000  # N x 9: the image each tile is from
    assert torch.equal(source[replaced], other[:, None].expand(n, 9)[replaced])
    assert torch.equal(out[~replaced], tiles[~replaced])
    own = tiles[other]  # N x 9 x ...: every tile of the other image
    hits = (out[:, :, None] == own[:, None]).flatten(3).all(-1).any(-1)  # N x 9
    assert hits[replaced].all()  # a replaced tile is one of the other image's tiles
    with pytest.raises(ValueError, match="N >= 2"):
        replace_tiles(tiles[:1], gen())


def tiny_jigsaw(num_permutations: int = 10, channels: int = 1, **kw) -> Jigsaw:
    torch.manual_seed(0)
    return Jigsaw(resnet(18, 0.125, "cifar", in_channels=channels), num_permutations, **kw)


def test_puzzles_unshuffle_to_the_normalised_tiles():
    model = tiny_jigsaw()
    x = torch.randn(8, 1, 28, 28, generator=gen(3))
    model.generator = gen(7)
    tiles, y = model.puzzles(x)
    assert tiles.shape == (8, 9, 1, 7, 7) and y.shape == (8,) and 0 <= y.min() <= y.max() < 10
    plain = normalize_tiles(extract_tiles(x, 2, gen(7)))  # the same stream, drawn first
    torch.testing.assert_close(shuffle_tiles(tiles, inverse(model.permutations[y])), plain)


def test_grayscale_in_the_method():
    x = torch.randn(4, 3, 28, 28, generator=gen())
    tiles, _ = tiny_jigsaw(channels=3, grayscale=1.0).puzzles(x)
    torch.testing.assert_close(tiles[:, :, 0], tiles[:, :, 2])
    tiles, _ = tiny_jigsaw(channels=3).puzzles(x)
    assert not torch.allclose(tiles[:, :, 0], tiles[:, :, 2])


def test_forward_loss_metrics_and_state():
    model = tiny_jigsaw(plus=True).train()
    assert model.n_views == 1 and model.grayscale == 0.6
    loss, metrics = model([torch.randn(6, 1, 32, 32, generator=gen())])
    loss.backward()
    assert set(metrics) == {"loss", "acc"} and torch.isfinite(loss)
    assert all(v.ndim == 0 and not v.requires_grad for v in metrics.values())
    assert model.backbone.conv1.weight.grad is not None
    assert torch.equal(model.state_dict()["permutations"], model.permutations)
    with pytest.raises(ValueError, match="1 view"):
        model([torch.randn(6, 1, 32, 32)] * 2)
    with pytest.raises(ConfigError, match="method.jigsaw.gap 9"):
        tiny_jigsaw(gap=9)([torch.randn(2, 1, 28, 28)])


def blobs(n: int, g: torch.Generator, side: int = 24) -> torch.Tensor:
    """A Gaussian bump near the centre (random shift and width) in noise: (N, 1, S, S)."""
    ramp = torch.arange(side, dtype=torch.float32)
    centre = side / 2 - 0.5 + 4 * (torch.rand(n, 2, 1, 1, generator=g) - 0.5)  # N x 2 x 1 x 1
    width = side / 4 * (0.8 + 0.4 * torch.rand(n, 1, 1, generator=g))  # N x 1 x 1
    d2 = (ramp[:, None] - centre[:, 0]) ** 2 + (ramp[None, :] - centre[:, 1]) ** 2  # N x S x S
    noise = 0.05 * torch.randn(n, side, side, generator=g)  # N x S x S
    return (torch.exp(-d2 / (2 * width**2)) + noise)[:, None]  # N x 1 x S x S


def puzzle_accuracy(images, plus: bool = False, steps: int = 30) -> float:
    """Train a tiny Jigsaw (10 classes) on 64 images; accuracy on 256 new ones (eval mode)."""
    model = tiny_jigsaw(plus=plus).train()
    model.generator = gen(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = images(64, gen(0))
    for _ in range(steps):
        loss, _ = model([x])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model([images(256, gen(9))])[1]["acc"].item()


@pytest.mark.parametrize("plus", [False, True])
def test_the_puzzle_is_solvable(plus):
    # measured: 1.0 (Jigsaw) and 0.99 (Jigsaw++) after 30 steps; chance is 0.1
    assert puzzle_accuracy(blobs, plus) > 0.5


def test_no_position_leaks_from_noise():
    # i.i.d. noise has no layout: tiles cut, gapped and normalised must not reveal their cell
    noise = lambda n, g: torch.randn(n, 1, 24, 24, generator=g)  # noqa: E731
    assert puzzle_accuracy(noise) < 0.2  # measured 0.14: chance 0.1, the most frequent class


def test_registry_builds_jigsaw_and_jigsaw_plus():
    backbone = resnet(18, 0.125, "cifar", in_channels=1)
    model = build_method(load_config("jigsaw-fashion-mnist"), backbone)
    assert isinstance(model, Jigsaw) and model.num_permutations == 100 and not model.plus
    assert model.head.fc8.out_features == 100 and model.grayscale == 0.0
    cfg = load_config("jigsaw-fashion-mnist", ["--method.jigsaw.plus", "true"])
    plus = build_method(cfg, backbone)
    assert plus.plus and plus.num_permutations == 701 and plus.grayscale == 0.6


@pytest.mark.parametrize("key,value", [
    ("jigsaw.permutations", "1"), ("jigsaw.permutations", "2001"), ("jigsaw.gap", "-1"),
    ("jigsaw.grayscale", "1.5"), ("jigsaw.grayscale", "-0.1"), ("jigsaw.hidden", "0"),
    ("jigsaw.permutations", "many"),
])
def test_bad_config_values_are_one_line_errors(key, value):
    with pytest.raises(ConfigError, match=rf"method\.{key}") as e:
        load_config("jigsaw-fashion-mnist", [f"--method.{key}", value])
    assert "\n" not in str(e.value)


def test_jigsaw_plus_needs_the_jigsaw_method():
    with pytest.raises(ConfigError, match=r"method\.jigsaw\.plus .*'simclr'"):
        load_config("quickstart", ["--method.jigsaw.plus", "true"])


def test_pretrain_loop_runs_jigsaw_and_the_backbone_serves_knn(tiny_args):
    cfg = load_config("jigsaw-fashion-mnist", [
        *tiny_args, "--data.dataset", "fashion-mnist-sample", "--train.steps", "3",
        "--eval.knn_every", "0", "--method.jigsaw.hidden", "32"])
    run = pretrain(cfg)
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert len(records) == 3 and all(0 <= r["acc"] <= 1 for r in records)
    assert not any(k.endswith("_sim") for r in records for k in r)  # no scores to monitor
    assert not (run / "scores.jsonl").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["collapse_step"] is None and 0 < summary["final_knn_top1"] <= 1
    backbone, _, meta = load_run_backbone(run)
    assert meta["step"] == 3
    h = backbone(torch.randn(2, 1, 28, 28))  # whole images, not tiles
    assert h.shape == (2, backbone.feature_dim) and torch.isfinite(h).all()
