"""The validation split recipes are chosen on (PROTOCOLS.md, "Validation split"; issue 24):
deterministic, class-balanced 10 % of the train split, disjoint from the k-NN memory and the
pretraining set."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.data import load_dataset
from selfsup.data.subsets import validation_split
from selfsup.experiment import load_data
from tests.conftest import TINY, error_line


def test_the_split_is_deterministic_class_balanced_disjoint_and_complete() -> None:
    labels = torch.tensor([c for c in range(10) for _ in range(50 + 7 * c)])  # uneven classes
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]
    keep, val = validation_split(labels)
    again_keep, again_val = validation_split(labels.clone())
    assert torch.equal(keep, again_keep) and torch.equal(val, again_val)
    assert not set(keep.tolist()) & set(val.tolist())
    assert sorted(keep.tolist() + val.tolist()) == list(range(len(labels)))
    for c in range(10):
        n = 50 + 7 * c
        assert int((labels[val] == c).sum()) == int(0.1 * n + 0.5)  # 10 % of every class


def test_load_data_holds_val_out_of_the_memory_and_the_pretraining_set() -> None:
    full = load_dataset("fashion-mnist-sample", split="train")
    cfg = load_config("quickstart", ["--eval.split", "val"])
    data = load_data(cfg)
    keep, val = validation_split(full.labels)
    assert data.split == "val" and len(data.test) == len(val) == 161
    assert len(data.memory) == 1600 - 161
    assert data.train is data.memory  # the probe pretrains on the memory, never on val
    assert torch.equal(data.test.images, full.images[val])
    assert torch.equal(data.memory.images, full.images[keep])
    assert torch.equal(data.test.labels, full.labels[val])
    per_class = torch.bincount(full.labels).tolist()  # 151 to 176 in the sample
    assert torch.bincount(data.test.labels).tolist() == [int(0.1 * n + 0.5) for n in per_class]
    # data.limit cuts the pretraining set after the split: val stays the same images
    limited = load_data(load_config("quickstart", ["--eval.split", "val", "--data.limit", "300"]))
    assert torch.equal(limited.test.images, data.test.images) and len(limited.train) == 300


def test_a_val_run_says_val_in_its_summary_and_line(capsys, tmp_path) -> None:
    out = tmp_path / "runs"
    assert main(["pretrain", "--config", "quickstart", *TINY, "--eval.split", "val",
                 "--eval.knn_every", "0", "--run.out_dir", str(out), "--run.name", "v"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(128 train / 161 val)" in line, line
    summary = json.loads((out / "v" / "summary.json").read_text())
    assert summary["split"] == "val" and summary["test_images"] == 161
    assert main(["knn", str(out / "v"), "--k", "20", "--device", "cpu"]) == 0
    rec = json.loads((out / "v" / "eval" / "knn-20.json").read_text())
    assert rec["split"] == "val" and rec["protocol"]["queries"] == "val split"
    capsys.readouterr()
    err = error_line(capsys, ["pretrain", "--resume", str(out / "v"), "--eval.split", "test"])
    assert "resume: eval.split is 'val' in the run, 'test' now" in err


@pytest.mark.parametrize("extra,needle", [
    (["--eval.split", "train"], "eval.split must be test or val, got 'train'"),
    (["--eval.split", "val", "--data.train_split", "train+unlabeled"],
     "eval.split val holds out part of the train split"),
])
def test_bad_split_settings(capsys, extra, needle) -> None:
    assert needle in error_line(capsys, ["pretrain", "--config", "quickstart", *extra])
