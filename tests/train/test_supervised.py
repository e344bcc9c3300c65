"""The one supervised loop (``fit_classifier``) that the linear probe, fine-tune, distill,
scratch baseline and transfer stages all train on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import ConfigError
from selfsup.train.schedule import warmup_cosine
from selfsup.train.supervised import SupervisedRecipe, fit_classifier


def _blobs(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two uniform squares of side 2 in 2-D, centred at x = -3 and 3: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2  # N
    noise = torch.rand(n, 2, generator=g) * 2 - 1  # N x 2 in [-1, 1)
    x = noise + torch.tensor([[-3.0, 0.0], [3.0, 0.0]])[y]  # N x 2
    return x, y


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(2, 2)


def test_fits_a_linearly_separable_problem(one_thread):
    x, y = _blobs()
    model = _linear()
    history = fit_classifier(model, x, y, SupervisedRecipe(epochs=20, batch_size=32, lr=0.1))
    assert len(history) == 20 and history[-1] < 0.05 < history[0]
    assert (model(x).argmax(1) == y).all()


def test_the_lr_of_every_step_is_the_cosine_of_warmup_cosine(monkeypatch, one_thread):
    seen, logged = [], []
    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    x, y = _blobs(100)
    recipe = SupervisedRecipe(epochs=3, batch_size=32, lr=0.4)  # 3 steps an epoch: 100 // 32
    fit_classifier(_linear(), x, y, recipe, log=logged.append)
    total = 9
    assert seen == [warmup_cosine(s, total, 0, 0.4) for s in range(total)]
    assert seen == pytest.approx([0.2 * (1 + math.cos(math.pi * s / total))
                                  for s in range(total)], rel=1e-12)
    assert [r["epoch"] for r in logged] == [1, 2, 3]
    assert [r["lr"] for r in logged] == [seen[2], seen[5], seen[8]]  # each epoch's last step


def test_host_side_views_and_memory_maps_train_like_a_contiguous_tensor(tmp_path, one_thread):
    x, y = _blobs(96)
    recipe = SupervisedRecipe(epochs=2, batch_size=16, lr=0.1)
    ref = _linear()
    fit_classifier(ref, x, y, recipe)
    wide = torch.zeros(96, 2, 3)
    wide[:, :, 1] = x
    view = wide[:, :, 1]  # N x 2, strides (6, 3): not contiguous
    assert not view.is_contiguous()
    path = tmp_path / "x.f32"
    x.numpy().tofile(path)
    mapped = torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c", shape=(96, 2)))
    labels = torch.from_numpy(y.numpy().copy())
    for inputs in (view, mapped):
        model = _linear()
        fit_classifier(model, inputs, labels, recipe)
        for a, b in zip(model.parameters(), ref.parameters()):
            assert torch.equal(a, b)


def test_transform_and_objective_are_used(one_thread):
    x, y = _blobs(64)
    calls = {"transform": 0, "objective": 0}

    def transform(batch, gen):
        calls["transform"] += 1
        assert isinstance(gen, torch.Generator)
        return batch * 2

    def objective(model, xb, yb):
        calls["objective"] += 1
        assert xb.abs().max() > 4  # the transformed batch
        return F.cross_entropy(model(xb), yb)

    fit_classifier(_linear(), x, y, SupervisedRecipe(epochs=2, batch_size=16), transform=transform,
                   objective=objective)
    assert calls == {"transform": 8, "objective": 8}


def test_a_nan_loss_raises(one_thread):
    x, y = _blobs(64)
    with pytest.raises(FloatingPointError, match="loss became nan in epoch 1"):
        fit_classifier(_linear(), x, y, SupervisedRecipe(epochs=3, batch_size=16),
                       objective=lambda m, xb, yb: m(xb).sum() * float("nan"))


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "--epochs must be >= 1, got 0"),
    ("batch_size", 0, "--batch-size must be >= 1"),
    ("lr", -0.1, "--lr must be a finite number >= 0"),
    ("lr", float("nan"), "--lr must be a finite number >= 0"),
    ("weight_decay", float("inf"), "--weight-decay must be a finite number >= 0"),
    ("momentum", 1.0, r"--momentum must be in \[0, 1\)"),
    ("optimizer", "adam", "--optimizer must be sgd or lars"),
])
def test_bad_recipes_raise_config_errors(field, value, message):
    with pytest.raises(ConfigError, match=message):
        SupervisedRecipe(**{field: value})


def test_bad_data_raises():
    x, y = _blobs(8)
    with pytest.raises(ValueError, match="8 inputs but 7 targets"):
        fit_classifier(_linear(), x, y[:7], SupervisedRecipe(epochs=1))
    with pytest.raises(ValueError, match="no training examples"):
        fit_classifier(_linear(), x[:0], y[:0], SupervisedRecipe(epochs=1))
