"""Progress of feature extraction: on a terminal by default, in the k-NN monitor too."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from selfsup.config import load_config
from selfsup.eval.features import extract_features
from selfsup.models import resnet
from selfsup.train.monitor import knn_monitor


def _tf(x, gen=None):
    return x.float() / 255


@pytest.fixture
def net():
    return resnet(18, width=0.125, stem="cifar", in_channels=1)


def _images(n: int = 24) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)


@pytest.mark.parametrize("progress, tty, shown", [
    (None, False, False), (None, True, True), (True, False, True), (False, True, False)])
def test_progress_none_means_on_a_terminal(net, capsys, monkeypatch, one_thread,
                                           progress, tty, shown):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    feats = extract_features(net, _images(), _tf, batch_size=8, progress=progress,
                             desc="feats-bar")
    assert feats.shape == (24, net.feature_dim)
    assert ("feats-bar" in capsys.readouterr().err) == shown


@pytest.mark.parametrize("progress", [True, False])
def test_knn_monitor_shows_a_bar_with_run_progress(net, capsys, monkeypatch, one_thread,
                                                   progress):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    cfg = load_config("quickstart", ["--run.progress", str(progress).lower(),
                                     "--eval.knn_k", "5", "--eval.batch_size", "8"])
    labels = torch.arange(24) % 3
    split = SimpleNamespace(images=_images(), labels=labels)
    data = SimpleNamespace(memory=split, test=split)
    res = knn_monitor(net, data, _tf, cfg, torch.device("cpu"))
    assert 0.0 <= res["knn_top1"] <= 1.0
    err = capsys.readouterr().err
    assert ("k-NN monitor: memory features" in err) == progress
    assert ("k-NN monitor: test features" in err) == progress
