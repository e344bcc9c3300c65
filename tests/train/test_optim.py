"""LARS against the hand-computed SimCLR update; parameter groups."""

import pytest
import torch
from torch import nn

from selfsup.errors import ConfigError
from selfsup.train.optim import LARS, build_optimizer, param_groups


def test_one_step_equals_formula():
    torch.manual_seed(0)
    w0 = torch.randn(5, 3, dtype=torch.float64)
    g0 = torch.randn(5, 3, dtype=torch.float64)
    lr, m, wd, eta = 0.7, 0.9, 1e-3, 0.001
    w = nn.Parameter(w0.clone())
    opt = LARS([w], lr=lr, momentum=m, weight_decay=wd, eta=eta)
    for _ in range(2):  # second step exercises the momentum buffer
        w.grad = g0.clone()
        opt.step()
    # by hand
    wh, v = w0.clone(), torch.zeros_like(w0)
    for _ in range(2):
        g = g0 + wd * wh
        trust = eta * wh.norm() / g.norm()
        v = m * v + lr * trust * g
        wh = wh - v
    torch.testing.assert_close(w.detach(), wh, rtol=1e-12, atol=1e-12)


def test_excluded_group_is_plain_momentum_sgd():
    w0, g0 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    opt = LARS([{"params": [w], "lars_exclude": True}], lr=0.1, momentum=0.9, weight_decay=0.5)
    ref = nn.Parameter(w0.clone())
    sgd = torch.optim.SGD([ref], lr=0.1, momentum=0.9)
    for _ in range(3):
        w.grad, ref.grad = g0.clone(), g0.clone()
        opt.step()
        sgd.step()
    torch.testing.assert_close(w.detach(), ref.detach(), rtol=1e-12, atol=1e-12)


def test_zero_weight_gives_trust_one():
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    g = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    w.grad = g.clone()
    LARS([w], lr=0.5, momentum=0.0).step()
    torch.testing.assert_close(w.detach(), -0.5 * g)


def test_param_groups_exclude_bias_and_norm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 1e-4)
    assert [p.ndim for p in decay["params"]] == [4, 2]
    assert all(p.ndim == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4
    assert no_decay["lars_exclude"] and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_build_optimizer_steps(name):
    model = nn.Linear(3, 2)
    opt = build_optimizer(name, model, lr=0.1, weight_decay=1e-4)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()


def test_bad_optimizer_settings():
    with pytest.raises(ConfigError, match="unknown optimizer 'adam'"):
        build_optimizer("adam", nn.Linear(2, 2), 0.1, 0.0)
    with pytest.raises(ConfigError, match="lr"):
        LARS([nn.Parameter(torch.ones(1))], lr=-1.0)
