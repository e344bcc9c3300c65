"""distillation_loss against a float64 reference, its closed-form gradient and its limits."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import distillation_loss


def reference(s, t, tau, labels=None, alpha=1.0):
    """SimCLR v2 eq. (3) written out with explicit sums, in float64."""
    s, t = s.double(), t.double()
    total = 0.0
    for i in range(len(s)):
        zt = sum(math.exp(v / tau) for v in t[i].tolist())
        zs = sum(math.exp(v / tau) for v in s[i].tolist())
        total -= sum(math.exp(t[i, y].item() / tau) / zt * (s[i, y].item() / tau - math.log(zs))
                     for y in range(s.shape[1]))
    distill = total / len(s)
    if labels is None:
        return distill
    ce = [-(s[i, y] - torch.logsumexp(s[i], 0)).item() for i, y in enumerate(labels.tolist())
          if y >= 0]
    return (1 - alpha) * (sum(ce) / max(len(ce), 1)) + alpha * distill


@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_matches_float64_reference(tau):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g) * 2
    assert distillation_loss(s, t, tau).item() == pytest.approx(reference(s, t, tau), rel=1e-5)


def test_label_mix_matches_reference_and_skips_unlabeled_rows():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.tensor([0, -1, 3, 2, -1, -1, 1, 0])
    got = distillation_loss(s, t, 2.0, labels=labels, alpha=0.3).item()
    assert got == pytest.approx(reference(s, t, 2.0, labels, 0.3), rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    y = torch.randint(0, 3, (7,), generator=g)
    assert torch.allclose(distillation_loss(s, t, 4.0, labels=y, alpha=0.0), F.cross_entropy(s, y))


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_gradient_is_student_minus_teacher_probabilities_over_tau(tau):
    g = torch.Generator().manual_seed(3)
    s = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 6, generator=g, dtype=torch.float64)
    distillation_loss(s, t, tau).backward()
    expected = (F.softmax(s.detach() / tau, 1) - F.softmax(t / tau, 1)) / (tau * len(s))
    assert s.grad.dtype == torch.float64 and torch.allclose(s.grad, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("labels", [None, torch.tensor([0, -1, 2, 1, -1])])
def test_float64_logits_keep_float64(labels):
    g = torch.Generator().manual_seed(4)
    s = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.randn(5, 3, generator=g, dtype=torch.float64) * 3
    alpha = 1.0 if labels is None else 0.4
    got = distillation_loss(s, t, 0.7, labels=labels, alpha=alpha)
    assert got.dtype == torch.float64
    assert abs(got.item() - reference(s, t, 0.7, labels, alpha)) < 1e-12


def test_half_precision_logits_are_upcast_to_float32():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    for dtype in (torch.bfloat16, torch.float16):
        got = distillation_loss(s.to(dtype), t.to(dtype), 0.5)
        assert got.dtype == torch.float32
        want = reference(s.to(dtype), t.to(dtype), 0.5)  # the same rounded logits, in float64
        assert got.item() == pytest.approx(want, rel=1e-5)
    # mixed: a bfloat16 teacher (autocast) with a float32 student gives float32
    assert distillation_loss(s, t.bfloat16(), 0.5).dtype == torch.float32


def test_teacher_gets_no_gradient_and_equal_logits_give_the_entropy():
    t = torch.randn(4, 3, requires_grad=True)
    loss = distillation_loss(t.detach().clone().requires_grad_(), t, 1.0)
    loss.backward()
    assert t.grad is None
    p = F.softmax(t.detach(), 1)
    assert loss.item() == pytest.approx(-(p * p.log()).sum(1).mean().item(), rel=1e-5)


@pytest.mark.parametrize("kwargs, word", [
    ({"temperature": 0.0}, "temperature"), ({"alpha": 1.5}, "alpha"),
    ({"alpha": 0.5}, "no labels"), ({"labels": torch.zeros(3, dtype=torch.long), "alpha": 0.5},
                                    "labels must be"),
])
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        distillation_loss(torch.zeros(4, 3), torch.zeros(4, 3), **kwargs)
    with pytest.raises(ValueError, match="both be"):
        distillation_loss(torch.zeros(4, 3), torch.zeros(4, 5))
