"""Feature Transformation (Zhu et al., ICCV 2021): closed forms, formulas, draws, Beta sampler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.errors import ConfigError
from selfsup.methods.feature_transform import (
    FeatureTransform,
    extrapolate_positives,
    interpolate_negatives,
    sample_beta,
)


def unit_pairs(n: int = 64, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    # a mix of easy and hard pairs: k = q + noise of varying size
    k = q + torch.rand(n, 1, generator=g, dtype=torch.float64) * torch.randn(
        n, d, generator=g, dtype=torch.float64)
    return q, F.normalize(k, dim=1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("granularity", ["batch", "sample"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extrapolated_score_matches_closed_form_and_is_harder(granularity, seed):
    q, k = unit_pairs(seed=seed)
    s = (q * k).sum(1)  # N
    ft = FeatureTransform(extrapolate=True, granularity=granularity)
    lam = ft.draw_lambda_pos(q, gen(seed))  # () or N x 1
    assert lam.shape == {"batch": (), "sample": (64, 1)}[granularity]
    assert bool(((lam >= 1) & (lam <= 2)).all())
    q_hat, k_hat = extrapolate_positives(q, k, lam)
    s_hat = (q_hat * k_hat).sum(1)  # N
    lam_n = lam.reshape(-1)  # 1 or N: broadcasts over the N pairs
    torch.testing.assert_close(s_hat, s + 2 * lam_n * (1 - lam_n) * (1 - s))
    assert bool((s_hat <= s + 1e-12).all())


def test_per_dimension_extrapolation_matches_definition_and_is_harder():
    q, k = unit_pairs()
    ft = FeatureTransform(extrapolate=True, granularity="dim")
    lam = ft.draw_lambda_pos(q, gen())  # N x d
    assert lam.shape == q.shape and lam.dtype == q.dtype
    assert len(lam.unique()) == lam.numel()  # one draw per entry
    q_hat, k_hat = extrapolate_positives(q, k, lam)
    for i in range(0, 64, 7):
        for j in range(8):
            lij = lam[i, j].item()
            assert q_hat[i, j].item() == pytest.approx(lij * q[i, j] + (1 - lij) * k[i, j])
            assert k_hat[i, j].item() == pytest.approx(lij * k[i, j] + (1 - lij) * q[i, j])
    # score: Σ_j (λ_j q_j + (1-λ_j) k_j)(λ_j k_j + (1-λ_j) q_j), entrywise
    ref = (lam * lam * q * k + lam * (1 - lam) * (q * q + k * k) + (1 - lam) ** 2 * k * q).sum(1)
    torch.testing.assert_close((q_hat * k_hat).sum(1), ref)
    s = (q * k).sum(1)
    assert bool(((q_hat * k_hat).sum(1) <= s + 1e-12).all())


def test_fixed_lambda_and_interpolation_raises_the_score():
    q, k = unit_pairs()
    s = (q * k).sum(1)
    ft = FeatureTransform(extrapolate=True, lambda_pos=1.5, granularity="sample")
    assert torch.equal(ft.draw_lambda_pos(q, gen()), torch.full((64, 1), 1.5, dtype=q.dtype))
    for lam in (0.2, 0.5, 0.9):  # λ < 1 interpolates: an easier pair
        q_hat, k_hat = extrapolate_positives(q, k, lam)
        s_hat = (q_hat * k_hat).sum(1)
        torch.testing.assert_close(s_hat, s + 2 * lam * (1 - lam) * (1 - s))
        assert bool((s_hat >= s - 1e-12).all())


@pytest.mark.parametrize("granularity,shape", [("batch", ()), ("sample", (32, 1)),
                                               ("dim", (32, 8))])
def test_interpolated_negatives_equal_formula_for_drawn_mu_and_perm(granularity, shape):
    negatives = F.normalize(torch.randn(32, 8, generator=gen(5)), dim=1)  # K x d
    ft = FeatureTransform(interpolate=True, granularity=granularity)
    mixed, perm = ft.negatives(negatives, gen(7))
    g = gen(7)  # the same stream: μ first, then the permutation
    mu = ft.draw_lambda_neg(negatives, g)
    assert mu.shape == shape and bool(((mu >= 0) & (mu <= 1)).all())
    assert torch.equal(perm, ft.draw_perm(32, g, negatives.device))
    assert sorted(perm.tolist()) == list(range(32))
    mu_full = mu.expand(32, 8)
    for i in range(32):
        expected = mu_full[i] * negatives[i] + (1 - mu_full[i]) * negatives[perm[i]]
        torch.testing.assert_close(mixed[i], expected)
    torch.testing.assert_close(mixed, interpolate_negatives(negatives, mu, perm))


def test_renormalize_gives_unit_vectors():
    q, k = unit_pairs()
    ft = FeatureTransform(extrapolate=True, interpolate=True, renormalize=True,
                          granularity="dim")
    q_hat, k_hat = ft.positives(q, k, gen())
    mixed, _ = ft.negatives(q, gen())
    for x in (q_hat, k_hat, mixed):
        torch.testing.assert_close(x.norm(dim=1), torch.ones(64, dtype=x.dtype))


def test_draws_repeat_with_the_seed():
    q, _ = unit_pairs()
    ft = FeatureTransform(extrapolate=True, interpolate=True, granularity="sample")
    a = [ft.draw_lambda_pos(q, gen(3)), ft.negatives(q, gen(3))[1]]
    b = [ft.draw_lambda_pos(q, gen(3)), ft.negatives(q, gen(3))[1]]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(ft.draw_lambda_pos(q, gen(4)), a[0])


@pytest.mark.parametrize("alpha", [1.6, 2.0, 0.5])
def test_beta_sampler_mean_and_variance(alpha):
    x = sample_beta(alpha, (100_000,), gen(11)).double()
    assert bool(((x >= 0) & (x <= 1)).all())
    var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance a² / ((2a)² (2a + 1))
    # standard errors at 100k samples: mean √(var/n) ≈ 8e-4, variance ≈ 3e-4 relative 1 %
    assert x.mean().item() == pytest.approx(0.5, abs=4e-3)
    assert x.var().item() == pytest.approx(var, rel=0.03)
    # and the shape: P(X < 1/4) against torch's own Beta sampler
    ref = torch.distributions.Beta(alpha, alpha).sample((100_000,))
    assert (x < 0.25).double().mean().item() == pytest.approx(
        (ref < 0.25).double().mean().item(), abs=0.01)


def test_active_from_start_epoch():
    assert not FeatureTransform().active(5.0)  # nothing enabled
    ft = FeatureTransform(interpolate=True, start_epoch=2.5)
    assert not ft.active(0.0) and not ft.active(2.49)
    assert ft.active(2.5) and ft.active(10.0)


@pytest.mark.parametrize("kw,match", [
    (dict(alpha_pos=0.0), "alpha"), (dict(alpha_neg=-1.0), "alpha"),
    (dict(lambda_pos=0.5), "lambda_pos"), (dict(granularity="pixel"), "granularity"),
    (dict(start_epoch=-1.0), "start_epoch"),
])
def test_bad_settings_raise(kw, match):
    with pytest.raises(ConfigError, match=match):
        FeatureTransform(**kw)
