"""SimCLR v2's fine-tune and distill stages on the embedded sample, end to end and their errors."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.config import load_config
from selfsup.data.subsets import load_subset
from selfsup.errors import ConfigError, DataError
from selfsup.experiment import load_run_backbone
from selfsup.semi import distill, finetune, load_classifier
from selfsup.stages import classifier_from_pretrained, pretrained_model
from selfsup.train.checkpoint import load_checkpoint
from selfsup.train.pretrain import pretrain
from selfsup.train.supervised import SupervisedRecipe
from tests.conftest import TINY

FAST = SupervisedRecipe(epochs=1, batch_size=32, lr=0.05)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("semi")
    cfg = load_config("quickstart", [*TINY, "--model.head_layers", "3", "--run.out_dir", str(out),
                                     "--run.name", "pre", "--train.epochs", "1"])
    return pretrain(cfg)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_classifier_keeps_exactly_the_first_k_head_layers(pretrained, k):
    model, _, _ = pretrained_model(pretrained)
    net = classifier_from_pretrained(model, k, 10)
    assert net.backbone is model.backbone
    assert len(net.head) == k
    assert all(net.head[i] is model.head.layers[i] for i in range(k))
    kept = {id(p) for p in net.parameters()}
    for i, layer in enumerate(model.head.layers):
        assert all((id(p) in kept) == (i < k) for p in layer.parameters())
    assert net.fc.in_features == model.head.dims[k]
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_head_layer_beyond_the_head(pretrained):
    with pytest.raises(ConfigError, match="beyond the projection head"):
        finetune(pretrained, label_fraction=0.1, head_layer=4, recipe=FAST, progress=False)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_label_fraction(pretrained, fraction):
    with pytest.raises(ConfigError, match="label fraction"):
        finetune(pretrained, label_fraction=fraction, recipe=FAST, progress=False)


def test_finetune_then_distill_end_to_end(pretrained, tmp_path):
    ft = finetune(pretrained, label_fraction=0.1, head_layer=1, recipe=FAST,
                  out_dir=tmp_path / "ft", progress=False)
    info = json.loads((ft / "stage.json").read_text())
    idx = load_subset(ft / "subset.txt", 128)
    assert info["labelled_images"] == len(idx) and info["head_layers"] == 1
    summary = json.loads((ft / "summary.json").read_text())
    assert 0.0 <= summary["test_top1"] <= summary["test_top5"] <= 1.0
    # the saved classifier reloads exactly; the pretraining run is untouched
    net, _, _ = load_classifier(ft)
    state = load_checkpoint(ft / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert sorted({k.split(".")[0] for k in state}) == ["backbone", "fc", "head"]
    # the same subset again: reusing subset.txt gives the same labels
    ft2 = finetune(pretrained, subset_file=ft / "subset.txt", recipe=FAST,
                   out_dir=tmp_path / "ft2", progress=False)
    assert torch.equal(load_subset(ft2 / "subset.txt", 128), idx)

    st = distill(ft, student="resnet18", student_width=0.125, recipe=FAST, alpha=0.5,
                 out_dir=tmp_path / "st", progress=False)
    s = json.loads((st / "summary.json").read_text())
    assert {"test_top1", "teacher_test_top1"} <= set(s)
    backbone, cfg, _ = load_run_backbone(st)  # exportable like any encoder
    assert cfg.model.backbone == "resnet18" and cfg.model.width == 0.125
    teacher_pretrain, _, _ = load_run_backbone(pretrained)
    assert backbone.feature_dim == teacher_pretrain.feature_dim


def test_distill_errors(pretrained, tmp_path):
    ft = finetune(pretrained, per_class=2, head_layer=0, recipe=FAST, out_dir=tmp_path / "ft",
                  progress=False)
    with pytest.raises(ConfigError, match="unknown student"):
        distill(ft, student="resnet19", recipe=FAST, progress=False)
    with pytest.raises(ConfigError, match="temperature"):
        distill(ft, temperature=0.0, recipe=FAST, progress=False)
    # a teacher whose classes do not match the data set
    info = json.loads((ft / "stage.json").read_text())
    ck = load_checkpoint(ft / "checkpoints" / "last.pt")
    ck["model"]["fc.weight"], ck["model"]["fc.bias"] = ck["model"]["fc.weight"][:7], \
        ck["model"]["fc.bias"][:7]
    torch.save(ck, ft / "checkpoints" / "last.pt")
    (ft / "stage.json").write_text(json.dumps({**info, "num_classes": 7}))
    with pytest.raises(ConfigError, match="predicts 7 classes"):
        distill(ft, student="resnet18", student_width=0.125, recipe=FAST, progress=False)


def test_finetune_from_a_stage_run_keeps_its_backbone_only(pretrained, tmp_path):
    ft = finetune(pretrained, per_class=1, recipe=FAST, out_dir=tmp_path / "ft", progress=False)
    with pytest.raises(ConfigError, match="beyond the projection head"):
        finetune(ft, per_class=1, head_layer=1, recipe=FAST, progress=False)
    lr0 = SupervisedRecipe(epochs=1, batch_size=32, lr=0.0)
    again = finetune(ft, per_class=1, head_layer=0, recipe=lr0, out_dir=tmp_path / "ft2",
                     progress=False)
    before, after = load_run_backbone(ft)[0].state_dict(), load_run_backbone(again)[0].state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert all("running" in k or "num_batches" in k for k in changed), changed
    with pytest.raises(ConfigError, match="not found"):
        finetune(pretrained, subset_file=tmp_path / "none.txt", recipe=FAST, progress=False)


def test_scratch_baseline_starts_from_random_weights(pretrained, tmp_path):
    lr0 = SupervisedRecipe(epochs=1, batch_size=32, lr=0.0)
    ft = finetune(pretrained, per_class=1, head_layer=0, recipe=lr0, scratch=True,
                  out_dir=tmp_path / "scratch", progress=False)
    trained = load_run_backbone(pretrained)[0].state_dict()
    fresh = load_run_backbone(ft)[0].state_dict()
    assert json.loads((ft / "stage.json").read_text())["scratch"] is True
    assert not torch.equal(trained["conv1.weight"], fresh["conv1.weight"])


def test_a_checkpoint_of_another_width_is_one_error(pretrained, tmp_path):
    """Issue 23: ``finetune --model.width 0.25`` of a w0.125 run raised torch's RuntimeError;
    now the one line knn, export and the others give, before any folder is made."""
    with pytest.raises(DataError, match=r"checkpoint does not fit model.backbone resnet18 "
                                        r"w0.25 \(size mismatch for backbone"):
        finetune(pretrained, label_fraction=0.1, recipe=FAST, overrides=["--model.width",
                 "0.25"], out_dir=tmp_path / "ft", progress=False)
    assert not (tmp_path / "ft").exists()


def test_the_output_folder_is_checked_before_any_work(pretrained, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"cannot write the run folder \(.*file is a file"):
        finetune(pretrained, label_fraction=0.1, recipe=FAST, out_dir=tmp_path / "file" / "ft")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml.bak").write_text("the user's")  # not a run folder: never written into
    with pytest.raises(ConfigError, match="not empty and not a selfsup run folder"):
        finetune(pretrained, label_fraction=0.1, recipe=FAST, out_dir=mine)
    with pytest.raises(ConfigError, match="--device must be auto, cpu"):
        distill(pretrained, device="tpu", out_dir=tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]
    assert [p.name for p in mine.iterdir()] == ["config.yaml.bak"]
