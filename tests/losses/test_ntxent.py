"""NT-Xent against a naive float64 double loop over the paper's formula (SimCLR eq. 1)."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import nt_xent


def naive_nt_xent(z1, z2, tau):
    """Chen et al. 2020 eq. (1), averaged over all 2N anchors, with explicit loops."""
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    n = n2 // 2

    def sim(a, b):
        return (a @ b) / (a.norm() * b.norm())

    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        num = math.exp(sim(z[i], z[j]) / tau)
        den = sum(math.exp(sim(z[i], z[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("d", [1, 5, 32])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_naive_reference(n, d, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    got = nt_xent(z1, z2, temperature=tau).item()
    assert got == pytest.approx(naive_nt_xent(z1, z2, tau), rel=1e-10, abs=1e-12)


def test_float32_close_to_reference():
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(naive_nt_xent(z1, z2, 0.5), rel=1e-5)


@pytest.mark.parametrize("n", [2, 7, 64])
def test_identical_embeddings_give_log_2n_minus_1(n):
    z = torch.ones(n, 4, dtype=torch.float64)
    assert nt_xent(z, z, 0.5).item() == pytest.approx(math.log(2 * n - 1), rel=1e-12)


def test_swapping_views_gives_same_loss():
    z1, z2 = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 6, dtype=torch.float64)
    assert nt_xent(z1, z2).item() == pytest.approx(nt_xent(z2, z1).item(), rel=1e-12)


def test_normalize_false_uses_raw_dot_products():
    z1 = F.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1)
    z2 = F.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1)
    a = nt_xent(z1, z2, 0.3, normalize=False).item()
    assert a == pytest.approx(nt_xent(z1 * 3, z2 * 2, 0.3).item(), rel=1e-12)


def test_gradcheck_float64():
    z1 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.5), (z1, z2))


def test_bfloat16_input_is_accepted():
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    ref = nt_xent(z1, z2).item()
    got = nt_xent(z1.bfloat16(), z2.bfloat16()).item()
    assert got == pytest.approx(ref, abs=0.05)


@pytest.mark.parametrize("bad", [(torch.randn(4, 3), torch.randn(5, 3)),
                                 (torch.randn(4), torch.randn(4)),
                                 (torch.randn(1, 3), torch.randn(1, 3))])
def test_bad_shapes_give_clear_errors(bad):
    with pytest.raises(ValueError, match="nt_xent"):
        nt_xent(*bad)


def test_nonpositive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), temperature=0.0)
