"""`selfsup cluster`'s output folder: named after the layer, checked before any features."""

from __future__ import annotations

import json

import pytest

import selfsup.cluster.pseudo_labels as pseudo_labels
from selfsup.cli import main
from selfsup.cluster.pseudo_labels import cluster
from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.train.pretrain import pretrain
from tests.conftest import TINY


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cl-out")
    cfg = load_config("quickstart", [*TINY, "--run.out_dir", str(out), "--run.name", "t",
                                     "--train.epochs", "1", "--optim.warmup_epochs", "0"])
    return pretrain(cfg)


def _no_features(*args, **kwargs):
    raise AssertionError("features extracted before the output folder was checked")


def test_default_folder_names_the_layer(teacher, monkeypatch, capsys, one_thread):
    plain = cluster(teacher, 3, iters=2, device="cpu", progress=False)
    assert plain.name == "cluster-t-fashion-mnist-sample-k3-s0"
    deep = cluster(teacher, 3, layer="layer3", iters=2, device="cpu", progress=False)
    assert deep.name == "cluster-t-fashion-mnist-sample-k3-layer3-s0" and deep != plain
    assert json.loads((deep / "cluster.json").read_text())["layer"] == "layer3"

    # the same clustering again: refused before the data or any feature is touched
    monkeypatch.setattr(pseudo_labels, "layer_features", _no_features)
    monkeypatch.setattr(pseudo_labels, "_images", _no_features)
    with pytest.raises(ConfigError, match="already holds a cluster run"):
        cluster(teacher, 3, layer="layer3", iters=2, device="cpu", progress=False)
    assert main(["cluster", str(teacher), "--k", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(plain) in err


def test_non_empty_out_is_refused_first(teacher, tmp_path, monkeypatch):
    monkeypatch.setattr(pseudo_labels, "layer_features", _no_features)
    monkeypatch.setattr(pseudo_labels, "_images", _no_features)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=f"{busy}: already holds files"):
        cluster(teacher, 3, out_dir=busy, device="cpu", progress=False)
