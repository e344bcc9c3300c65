"""MoCo with Feature Transformation (Zhu et al., ICCV 2021): the loss against explicit draws,
the queue keeps the un-mixed keys, seeds and start epoch, the registry's settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.losses import info_nce
from selfsup.methods import MoCo, build_method
from selfsup.methods.feature_transform import FeatureTransform
from selfsup.models import resnet
from tests.methods.tiny_moco import tiny_moco, views

FT_BOTH = dict(extrapolate=True, interpolate=True)


def _qk(model: MoCo, v: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        q = F.normalize(model.head(model.backbone(v[0])), dim=1)
        k = F.normalize(model.head_k(model.backbone_k(v[1])), dim=1)
    return q, k


def test_ft_off_loss_is_bit_identical_to_info_nce():
    model = tiny_moco(queue_size=16).train()
    queue, v = model.queue.clone(), views(seed=3)
    loss, _ = model(v)
    q, k = _qk(model, v)
    assert torch.equal(loss, info_nce(q, k, queue, 0.2, normalize=False))


@pytest.mark.parametrize("granularity", ["batch", "sample", "dim"])
def test_ft_loss_and_scores_match_explicit_draws(granularity):
    ft = FeatureTransform(**FT_BOTH, granularity=granularity)
    model = tiny_moco(queue_size=16, ft=ft).train()
    model.generator = torch.Generator().manual_seed(5)
    queue, v = model.queue.clone(), views(seed=3)
    loss, metrics = model(v)
    q, k = _qk(model, v)
    g = torch.Generator().manual_seed(5)  # the same stream: λ_ex, λ_in, then the permutation
    lam = ft.draw_lambda_pos(q, g)
    mu = ft.draw_lambda_neg(queue, g)
    perm = ft.draw_perm(16, g, queue.device)
    q_hat, k_hat = lam * q + (1 - lam) * k, lam * k + (1 - lam) * q
    mixed = mu * queue + (1 - mu) * queue[perm]  # K x d
    torch.testing.assert_close(loss, info_nce(q_hat, k_hat, mixed, 0.2, normalize=False))
    assert not torch.allclose(loss, info_nce(q, k, queue, 0.2, normalize=False))
    # the score monitor: float64 recomputation from the same step's (transformed) embeddings
    pos = (q_hat.double() * k_hat.double()).sum(1)  # N
    neg = q_hat.double() @ mixed.double().T  # N x K
    torch.testing.assert_close(metrics["pos_sim"].double(), pos.mean())
    torch.testing.assert_close(metrics["neg_sim"].double(), neg.mean())
    torch.testing.assert_close(metrics["neg_var"].double(), neg.var(dim=1).mean())
    assert metrics["neg_hist"].sum().item() == 4 * 16 and metrics["pos_hist"].shape == (40,)
    # extrapolated q̂ is not unit: scores may leave [-1, 1]; the histogram clamps them
    hist = torch.histc(neg.clamp(-1, 1).float(), 40, -1, 1)
    assert (metrics["neg_hist"] - hist).abs().sum().item() <= 2  # a score on a bin edge


@pytest.mark.parametrize("symmetric", [False, True])
def test_ft_leaves_the_queue_to_the_original_keys(symmetric):
    model = tiny_moco(queue_size=16, symmetric=symmetric, ft=FeatureTransform(**FT_BOTH)).train()
    queue, v = model.queue.clone(), views(seed=2)
    _, k2 = _qk(model, v)
    keys = torch.cat([_qk(model, v[::-1])[1], k2]) if symmetric else k2
    model(v)
    n = keys.shape[0]
    assert torch.equal(model.queue[:n], keys)  # the un-mixed keys were enqueued
    assert torch.equal(model.queue[n:], queue[n:])  # the rest is untouched by the mixing


def test_ft_same_seed_same_loss_and_start_epoch():
    def loss_at(seed: int, epoch: float) -> torch.Tensor:
        model = tiny_moco(queue_size=16, ft=FeatureTransform(**FT_BOTH, start_epoch=1.0)).train()
        model.generator, model.epoch = torch.Generator().manual_seed(seed), epoch
        return model(views(seed=1))[0]

    assert torch.equal(loss_at(0, 1.0), loss_at(0, 1.0))
    assert not torch.equal(loss_at(0, 1.0), loss_at(1, 1.0))
    plain = tiny_moco(queue_size=16).train()(views(seed=1))[0]
    assert torch.equal(loss_at(0, 0.5), plain)  # before the start epoch: no FT
    assert not torch.equal(loss_at(0, 1.5), plain)


def test_ft_private_generator_is_seeded_zero():
    model = tiny_moco(queue_size=16, ft=FeatureTransform(**FT_BOTH)).train()
    loss = model(views())[0]
    assert model.generator is not None and torch.isfinite(loss)
    other = tiny_moco(queue_size=16, ft=FeatureTransform(**FT_BOTH)).train()
    other.generator = torch.Generator().manual_seed(0)
    assert torch.equal(other(views())[0], loss)


def test_registry_passes_ft_settings():
    cfg = load_config("moco-v2-fashion-mnist", [
        "--method.ft.extrapolate", "true", "--method.ft.granularity", "sample",
        "--method.ft.start_epoch", "2", "--run.score_bins", "20"])
    model = build_method(cfg, resnet(18, 0.125, "cifar", in_channels=1))
    assert model.ft == FeatureTransform(extrapolate=True, granularity="sample", start_epoch=2.0)
    assert model.score_bins == 20
