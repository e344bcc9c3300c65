"""SimCLR: plain NT-Xent path, Feature Transformation against a float64 loop, score statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import load_config
from selfsup.losses import nt_xent
from selfsup.methods import SimCLR, build_method
from selfsup.methods.feature_transform import FeatureTransform
from selfsup.models import resnet
from selfsup.train.logging import read_jsonl
from selfsup.train.pretrain import pretrain

FT_BOTH = dict(extrapolate=True, interpolate=True)


def tiny_simclr(**kw) -> SimCLR:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
    return SimCLR(backbone, nn.Linear(6, 3), temperature=0.5, **kw).train()


def views(n: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)]


def embeddings(model: SimCLR, v: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        z = model.head(model.backbone(torch.cat(v)))  # 2N x d, BN on the same batch
    n = v[0].shape[0]
    return z[:n], z[n:]


def naive_ft_loss(z1, z2, tau, lam, mu, perm):
    """Float64 loops over the documented FT NT-Xent; also returns the scores it used."""
    z1, z2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    n = z1.shape[0]
    lam, mu = lam.double().expand(n, z1.shape[1]), mu.double().expand(2 * n, z1.shape[1])
    h1, h2 = lam * z1 + (1 - lam) * z2, lam * z2 + (1 - lam) * z1  # extrapolated pairs
    anchors, z_all = torch.cat([h1, h2]), torch.cat([z1, z2])
    total, pos, neg = 0.0, [], []
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        s_pos = float(anchors[i] @ anchors[p])
        row = []
        for j in range(2 * n):
            if j in (i, p):
                continue
            if int(perm[j]) in (i, p):  # the partner is the anchor's own image: not mixed
                cand = z_all[j]
            else:
                cand = mu[j] * z_all[j] + (1 - mu[j]) * z_all[perm[j]]
            row.append(float(anchors[i] @ cand))
        den = math.exp(s_pos / tau) + sum(math.exp(s / tau) for s in row)
        total += -(s_pos / tau - math.log(den))
        pos.append(s_pos)
        neg.append(row)
    return total / (2 * n), torch.tensor(pos, dtype=torch.float64), torch.tensor(
        neg, dtype=torch.float64)


def check_scores(metrics, pos, neg):
    torch.testing.assert_close(metrics["pos_sim"].double(), pos.mean())
    torch.testing.assert_close(metrics["neg_sim"].double(), neg.mean())
    # per anchor over its own 2(N-1) negatives, then the mean (FT authors' code)
    torch.testing.assert_close(metrics["neg_var"].double(), neg.var(dim=1).mean())
    assert metrics["neg_hist"].sum().item() == neg.numel()
    assert metrics["pos_hist"].sum().item() == pos.numel()


def test_ft_off_loss_is_bit_identical_to_nt_xent_and_scores_match():
    model = tiny_simclr(score_bins=16)
    v = views()
    loss, metrics = model(v)
    z1, z2 = embeddings(model, v)
    assert torch.equal(loss, nt_xent(z1, z2, 0.5))
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)  # 2N x d
    s = z @ z.T
    pos = torch.cat([s.diagonal(5), s.diagonal(-5)])  # 2N
    keep = ~torch.eye(10, dtype=torch.bool) & ~torch.eye(10, dtype=torch.bool).roll(5, 1)
    check_scores(metrics, pos, s[keep].view(10, 8))
    assert metrics["neg_hist"].shape == (16,)
    assert all(not t.requires_grad for t in metrics.values())


@pytest.mark.parametrize("granularity", ["batch", "sample", "dim"])
def test_ft_loss_and_scores_match_float64_loop(granularity):
    ft = FeatureTransform(**FT_BOTH, granularity=granularity)
    model = tiny_simclr(ft=ft)
    model.generator = torch.Generator().manual_seed(3)
    v = views()
    loss, metrics = model(v)
    z1, z2 = embeddings(model, v)
    g = torch.Generator().manual_seed(3)  # the same stream: λ_ex, λ_in, then the permutation
    lam = ft.draw_lambda_pos(z1, g)
    mu = ft.draw_lambda_neg(torch.cat([z1, z2]), g)
    perm = ft.draw_perm(10, g, z1.device)
    ref, pos, neg = naive_ft_loss(z1, z2, 0.5, lam, mu, perm)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    check_scores(metrics, pos, neg)
    assert loss.item() != pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=1e-4)
    loss.backward()
    assert model.backbone[0].weight.grad is not None


def test_extrapolation_alone_lowers_the_positive_score():
    v = views()
    plain = tiny_simclr()(v)[1]["pos_sim"]
    hard = tiny_simclr(ft=FeatureTransform(extrapolate=True, lambda_pos=1.5))(v)[1]["pos_sim"]
    assert hard < plain


def test_ft_same_seed_same_loss_and_start_epoch():
    def loss_at(seed: int, epoch: float) -> torch.Tensor:
        model = tiny_simclr(ft=FeatureTransform(**FT_BOTH, start_epoch=1.0))
        model.generator, model.epoch = torch.Generator().manual_seed(seed), epoch
        return model(views())[0]

    assert torch.equal(loss_at(0, 2.0), loss_at(0, 2.0))
    assert not torch.equal(loss_at(0, 2.0), loss_at(1, 2.0))
    plain = tiny_simclr()(views())[0]
    assert torch.equal(loss_at(0, 0.99), plain)  # before the start epoch: plain NT-Xent
    assert not torch.equal(loss_at(0, 1.0), plain)
    model = tiny_simclr(ft=FeatureTransform(**FT_BOTH)).eval()  # FT is for training only
    assert torch.equal(model(views())[0], tiny_simclr().eval()(views())[0])


def test_registry_passes_ft_settings():
    cfg = load_config("quickstart", ["--method.ft.interpolate", "true",
                                     "--method.ft.renormalize", "true"])
    model = build_method(cfg, resnet(18, 0.125, "cifar", in_channels=1))
    assert isinstance(model, SimCLR)
    assert model.ft == FeatureTransform(interpolate=True, renormalize=True)
    assert model.score_bins == cfg.run.score_bins


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_pretrain_loop_runs_with_ft(tiny_args, method):
    cfg = load_config("quickstart", [
        *tiny_args, "--method.name", method, "--method.moco.queue_size", "64",
        "--train.epochs", "1", "--method.ft.extrapolate", "true", "--method.ft.interpolate", "true",
        "--method.ft.granularity", "sample"])
    records = [r for r in read_jsonl(pretrain(cfg) / "metrics.jsonl") if "loss" in r]
    assert len(records) == 4 and all(math.isfinite(r["loss"]) and r["neg_var"] >= 0
                                      for r in records)
