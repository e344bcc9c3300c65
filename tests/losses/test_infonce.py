"""info_nce against a float64 loop-over-queries reference, closed forms and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import info_nce
from selfsup.losses.infonce import info_nce_logits


def reference(q: torch.Tensor, k: torch.Tensor, neg: torch.Tensor, t: float) -> torch.Tensor:
    """-log softmax at the positive, one query at a time, in float64."""
    q, k, neg = (F.normalize(x.double(), dim=1) for x in (q, k, neg))
    total = torch.zeros((), dtype=torch.float64)
    for i in range(q.shape[0]):
        pos = torch.exp(q[i] @ k[i] / t)
        negs = sum(torch.exp(q[i] @ neg[j] / t) for j in range(neg.shape[0]))
        total = total - torch.log(pos / (pos + negs))
    return total / q.shape[0]


@pytest.mark.parametrize("n,d,k_neg,t", [(1, 3, 1, 0.07), (4, 8, 5, 0.2), (7, 16, 32, 0.5),
                                         (3, 2, 9, 1.0)])
def test_matches_reference(n, d, k_neg, t):
    g = torch.Generator().manual_seed(n * 100 + d)
    q, k = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    neg = torch.randn(k_neg, d, generator=g)
    want = reference(q, k, neg, t)
    torch.testing.assert_close(info_nce(q.double(), k.double(), neg.double(), t), want,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(info_nce(q, k, neg, t).double(), want, rtol=1e-5, atol=1e-5)


def test_unnormalized_is_raw_dot_products():
    g = torch.Generator().manual_seed(0)
    q, k, neg = (torch.randn(s, 4, generator=g, dtype=torch.float64) for s in (3, 3, 6))
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ neg.T], 1) / 0.3
    want = F.cross_entropy(logits, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(info_nce(q, k, neg, 0.3, normalize=False), want)


@pytest.mark.parametrize("k_neg", [1, 4, 100])
def test_identical_vectors_give_log_k_plus_1(k_neg):
    v = torch.randn(1, 6, dtype=torch.float64)
    loss = info_nce(v.expand(5, 6), v.expand(5, 6) * 3.0, v.expand(k_neg, 6), 0.1)
    assert loss.item() == pytest.approx(math.log(k_neg + 1), rel=1e-12)


def test_logits_are_cosine_scores():
    q, k, neg = torch.randn(4, 5), torch.randn(4, 5), torch.randn(7, 5)
    _, l_pos, l_neg = info_nce_logits(q, k, neg, 0.2)
    torch.testing.assert_close(l_pos, F.cosine_similarity(q, k, dim=1))
    torch.testing.assert_close(l_neg, F.normalize(q, dim=1) @ F.normalize(neg, dim=1).T)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    q, k, neg = (torch.randn(s, 4, generator=g, dtype=torch.float64, requires_grad=True)
                 for s in (3, 3, 5))
    assert torch.autograd.gradcheck(lambda a, b, c: info_nce(a, b, c, 0.2), (q, k, neg))


def test_no_gradient_to_detached_negatives():
    queue = F.normalize(torch.randn(8, 4), dim=1)  # a buffer, as MoCo's queue
    q = torch.randn(3, 4, requires_grad=True)
    k = torch.randn(3, 4, requires_grad=True)
    info_nce(q, k, queue.clone().detach(), 0.2).backward()
    assert q.grad is not None and k.grad is not None
    assert not queue.requires_grad and queue.grad is None


def test_half_precision_logits_are_upcast():
    q, k, neg = torch.randn(4, 8), torch.randn(4, 8), torch.randn(16, 8)
    loss = info_nce(q.bfloat16(), k, neg, 0.07)  # k, negatives follow q's dtype
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(info_nce(q, k, neg, 0.07).item(), rel=0.05)


@pytest.mark.parametrize("shapes,match", [(((3, 4), (2, 4), (5, 4)), "same shape"),
                                          (((3, 4), (3, 4), (5, 3)), "negatives of shape"),
                                          (((3,), (3,), (5, 3)), "same shape")])
def test_shape_errors(shapes, match):
    q, k, neg = (torch.randn(*s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        info_nce(q, k, neg)


@pytest.mark.parametrize("t", [0.0, -0.1, float("nan")])
def test_temperature_must_be_positive(t):
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(2, 3), torch.randn(2, 3), torch.randn(4, 3), t)
