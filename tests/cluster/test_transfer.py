"""Knowledge transfer by clustering on the embedded sample: teacher -> k-means -> target."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from selfsup.cli import main
from selfsup.cluster import nearest_centroids
from selfsup.cluster.pseudo_labels import (
    cluster,
    cluster_statistics,
    load_plain,
    load_pseudo_labels,
)
from selfsup.cluster.teacher import Teacher, layer_features, load_teacher
from selfsup.cluster.transfer import transfer
from selfsup.config import load_config
from selfsup.errors import ConfigError, DataError
from selfsup.eval.protocols import evaluate_knn
from selfsup.export import export_run
from selfsup.semi import finetune
from selfsup.train.pretrain import pretrain
from selfsup.train.supervised import SupervisedRecipe
from tests.conftest import TINY

FAST = SupervisedRecipe(epochs=1, batch_size=64, lr=0.05)
SAMPLE_TRAIN = 1600  # images in the embedded sample's train split


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("kt")
    cfg = load_config("quickstart", [*TINY, "--run.out_dir", str(out), "--run.name", "teacher",
                                     "--train.epochs", "1"])
    return pretrain(cfg)


@pytest.fixture(scope="module")
def clustered(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("kt-cluster") / "c"
    return cluster(teacher, 5, iters=10, out_dir=out, device="cpu", progress=False)


def test_cluster_run_folder(clustered, teacher):
    info = json.loads((clustered / "cluster.json").read_text())
    assert info["k"] == 5 and info["labelled"]["images"] == SAMPLE_TRAIN
    assert info["layer"] == "output" and info["feature_dim"] == 64  # resnet18 w1/8
    labels, _ = load_pseudo_labels(clustered, SAMPLE_TRAIN)
    assert labels.shape == (SAMPLE_TRAIN,) and 0 <= labels.min() and labels.max() < 5
    stats = info["labelled_stats"]
    assert stats["empty_clusters"] == 0 and 0.0 <= stats["nmi"] <= 1.0
    cents = load_plain(clustered / "centroids.pt")["centroids"]
    assert cents.shape == (5, 64)
    # the pseudo-labels are the nearest centroids of the teacher's features
    feats = layer_features(load_teacher(teacher), _train_images(teacher))
    assert torch.equal(nearest_centroids(feats, cents, False), labels)


def _train_images(run) -> torch.Tensor:
    from selfsup.data import load_dataset
    from selfsup.experiment import run_config

    d = run_config(run).data
    return load_dataset(d.dataset, d.root, split="train").images


def test_cluster_statistics_closed_forms():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    perfect = cluster_statistics(torch.tensor([2, 2, 0, 0, 1, 1]), 3, labels)
    assert perfect["purity"] == 1.0 and perfect["nmi"] == pytest.approx(1.0)
    one = cluster_statistics(torch.tensor([0, 1, 0, 1, 0, 1]), 2, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert one["sizes_min"] == 3 and one["purity"] == pytest.approx(4 / 6)
    assert one["nmi"] == pytest.approx(0.0817, abs=1e-3)  # sklearn's normalized_mutual_info_score


def test_layer_features_and_bad_layer(teacher):
    t = load_teacher(teacher)
    x = _train_images(teacher)[:8]
    assert layer_features(t, x, "layer3").shape == (8, 32)  # 256 x 1/8 channels, pooled
    assert layer_features(t, x, "layer4.1.conv2").shape == (8, 64)
    with pytest.raises(ConfigError, match="layer 'layer9' does not exist"):
        layer_features(t, x, "layer9")


class _NaNNet(nn.Module):
    feature_dim = 4

    def forward(self, x):
        return torch.full((x.shape[0], 4), float("nan"))


def test_nan_features_are_refused():
    t = Teacher(_NaNNet(), "nan-teacher", 28, 1, (0.5,), (0.5,), None)
    with pytest.raises(DataError, match="8 non-finite"):
        layer_features(t, torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("k", [1, SAMPLE_TRAIN + 1])
def test_bad_k(teacher, tmp_path, k):
    with pytest.raises(ConfigError, match="k must be in"):
        cluster(teacher, k, out_dir=tmp_path / "c", device="cpu", progress=False)


def test_clusters_label_another_data_set(teacher, tmp_path):
    """Colour images of a folder, labelled by the grey teacher's centroids (luma conversion)."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            arr = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / c / f"{i}.png")
    out = cluster(teacher, 4, iters=5, data="folder", data_root=str(tmp_path / "imgs"),
                  out_dir=tmp_path / "c", device="cpu", progress=False)
    info = json.loads((out / "cluster.json").read_text())
    assert info["clustered"]["images"] == SAMPLE_TRAIN and info["labelled"]["images"] == 12
    labels, _ = load_pseudo_labels(out, 12)
    assert labels.max() < 4


def test_transfer_end_to_end(clustered, tmp_path):
    out = transfer(clustered, arch="resnet18", width=0.125, recipe=FAST,
                   out_dir=tmp_path / "t", device="cpu", progress=False)
    stage = json.loads((out / "stage.json").read_text())
    assert stage["stage"] == "transfer" and stage["num_classes"] == 5
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["pseudo_label_train_top1"] <= 1.0
    rec = evaluate_knn(out, k=20, device="cpu", progress=False)
    assert 0.0 <= rec["top1"] <= 1.0
    assert (export_run(out, tmp_path / "exp") / "model.safetensors").is_file()
    ft = finetune(out, per_class=2, head_layer=0, recipe=FAST, out_dir=tmp_path / "ft",
                  progress=False)
    assert json.loads((ft / "summary.json").read_text())["labelled_images"] == 20
    # an export folder is a teacher too
    again = cluster(tmp_path / "exp", 3, iters=3, data="fashion-mnist-sample",
                    out_dir=tmp_path / "c2", device="cpu", progress=False)
    assert json.loads((again / "cluster.json").read_text())["feature_dim"] == 64


def test_transfer_errors(clustered, tmp_path):
    with pytest.raises(ConfigError, match="unknown target architecture 'vgg'"):
        transfer(clustered, arch="vgg", recipe=FAST, out_dir=tmp_path / "t", progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("config.yaml", "cluster.json"):
        (bad / f).write_text((clustered / f).read_text())
    torch.save({"labels": torch.zeros(10, dtype=torch.int64)}, bad / "pseudo_labels.pt")
    with pytest.raises(DataError, match=f"10 pseudo-labels for a data set of {SAMPLE_TRAIN}"):
        transfer(bad, width=0.125, recipe=FAST, out_dir=tmp_path / "t", progress=False)
    with pytest.raises(DataError, match="not a cluster run"):
        load_pseudo_labels(tmp_path, 10)


def test_cli_cluster_and_transfer(teacher, tmp_path, capsys):
    c = tmp_path / "c"
    assert main(["cluster", str(teacher), "--k", "3", "--iters", "3", "--out", str(c),
                 "--device", "cpu", "--no-progress"]) == 0
    assert "NMI with the true classes" in capsys.readouterr().out
    assert main(["transfer", str(c), "--width", "0.125", "--epochs", "1", "--batch-size", "64",
                 "--out", str(tmp_path / "t"), "--device", "cpu", "--no-progress"]) == 0
    assert "learned the 3 clusters" in capsys.readouterr().out
    assert main(["cluster", str(teacher), "--k", "1", "--out", str(tmp_path / "x")]) == 2
    assert "k must be in [2, 1600]" in capsys.readouterr().err
    assert main(["cluster", str(teacher), "--k", "3", "--layer", "nope",
                 "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "layer 'nope' does not exist" in capsys.readouterr().err
    assert (c / "plots" / "cluster_sizes.png").is_file()


def test_a_jigsaw_trunk_is_a_teacher_like_any_other(tmp_path):
    cfg = load_config("jigsaw-fashion-mnist", [
        *TINY, "--data.dataset", "fashion-mnist-sample", "--train.steps", "2",
        "--method.jigsaw_hidden", "16", "--run.out_dir", str(tmp_path), "--run.name", "jig"])
    out = cluster(pretrain(cfg), 3, iters=3, out_dir=tmp_path / "c", device="cpu",
                  progress=False)
    info = json.loads((out / "cluster.json").read_text())
    assert info["labelled"]["images"] == SAMPLE_TRAIN and info["labelled_stats"]["sizes_min"] > 0
