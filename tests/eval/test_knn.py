"""Weighted k-NN against a per-query float64 reference (InstDisc / MoCo CIFAR demo)."""

import math

import pytest
import torch

from selfsup.eval import knn_accuracy, knn_predict, knn_scores
from selfsup.eval.linear import linear_probe
from selfsup.train.supervised import SupervisedRecipe


def naive_knn(train, labels, test, c, k, t):
    out = []
    for q in test.double():
        sims = [(float(q @ x.double() / (q.norm() * x.double().norm())), int(y))
                for x, y in zip(train, labels)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * c
        for s, y in sims[:k]:
            votes[y] += math.exp(s / t)
        out.append(max(range(c), key=lambda i: votes[i]))
    return torch.tensor(out)


@pytest.mark.parametrize("k,t", [(1, 0.1), (5, 0.1), (20, 0.5), (200, 0.1)])
def test_matches_reference(k, t):
    g = torch.Generator().manual_seed(k)
    train, test = torch.randn(60, 8, generator=g), torch.randn(25, 8, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    got = knn_predict(train, labels, test, 4, k=k, temperature=t)
    assert torch.equal(got, naive_knn(train, labels, test, 4, k, t))


def reference_scores(train, labels, test, c, k, t):
    """(M, c) float64 class scores: Σ exp(cos/T) over each query's k nearest neighbours."""
    train, test = train.double(), test.double()
    out = torch.zeros(len(test), c, dtype=torch.float64)
    for i, q in enumerate(test):
        sims = sorted(((float(q @ x / (q.norm() * x.norm())), int(y))
                       for x, y in zip(train, labels)), key=lambda s: -s[0])
        for s, y in sims[:k]:
            out[i, y] += math.exp(s / t)
    return out


@pytest.mark.parametrize("chunk", [1024, 7])
def test_float64_features_give_float64_scores(chunk):
    g = torch.Generator().manual_seed(11)
    train = torch.randn(40, 6, generator=g, dtype=torch.float64)
    test = torch.randn(15, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (40,), generator=g)
    got = knn_scores(train, labels, test, 3, k=10, temperature=0.1, chunk=chunk)
    want = reference_scores(train, labels, test, 3, 10, 0.1)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_bfloat16_features_are_upcast_to_float32():
    g = torch.Generator().manual_seed(12)
    train, test = torch.randn(40, 6, generator=g), torch.randn(15, 6, generator=g)
    labels = torch.randint(0, 3, (40,), generator=g)
    got = knn_scores(train.bfloat16(), labels, test.bfloat16(), 3, k=10, temperature=0.5)
    assert got.dtype == torch.float32
    want = reference_scores(train.bfloat16(), labels, test.bfloat16(), 3, 10, 0.5)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_separable_clusters_are_perfect():
    centres = torch.eye(3) * 10
    train = centres.repeat_interleave(20, 0) + torch.randn(60, 3) * 0.1
    labels = torch.arange(3).repeat_interleave(20)
    test = centres + torch.randn(3, 3) * 0.1
    acc = knn_accuracy(train, labels, test, torch.arange(3), 3, k=10)
    assert acc["top1"] == 1.0 and acc["top5"] == 1.0


def test_shape_errors():
    with pytest.raises(ValueError, match="k-NN"):
        knn_predict(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 4), 2)


def test_linear_probe_learns_separable_features():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 4, generator=g)
    x = torch.randn(400, 16, generator=g)
    y = (x @ w).argmax(1)
    res = linear_probe(x[:300], y[:300], x[300:], y[300:], 4,
                       SupervisedRecipe(epochs=30, batch_size=64, lr=0.1))
    assert res["top1"] > 0.9 and res["top5"] == 1.0
