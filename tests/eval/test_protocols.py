"""Run-level protocols: the linear probe's check that the frozen backbone did not change."""

from __future__ import annotations

import pytest
import torch

import selfsup.eval.protocols as protocols
from selfsup.config import load_config
from selfsup.eval.protocols import evaluate_linear
from selfsup.train.pretrain import pretrain
from selfsup.train.supervised import SupervisedRecipe

FAST = SupervisedRecipe(epochs=1, batch_size=64)


@pytest.fixture
def run(tiny_args):
    return pretrain(load_config("quickstart", [*tiny_args, "--train.steps", "2"]))


def test_linear_probe_reports_an_unchanged_backbone(run):
    rec = evaluate_linear(run, FAST, progress=False)
    assert rec["backbone_unchanged"] is True


def test_linear_probe_fails_when_feature_extraction_changes_the_backbone(run, monkeypatch):
    real = protocols.extract_features

    def extract_and_change(backbone, *args, **kwargs):
        with torch.no_grad():  # e.g. BatchNorm left in train mode updates its running stats
            next(backbone.parameters()).add_(1.0)
        return real(backbone, *args, **kwargs)

    monkeypatch.setattr(protocols, "extract_features", extract_and_change)
    with pytest.raises(RuntimeError, match="backbone changed"):
        evaluate_linear(run, FAST, progress=False)
    assert not (run / "eval" / "linear-feat.json").exists()


def test_a_read_only_run_folder_still_gives_the_number(run, monkeypatch):
    """The record is a copy of the printed result: a run folder that cannot take it (shared
    read-only; simulated, as root writes through chmod) warns instead of failing."""
    import errno

    from selfsup.eval.protocols import evaluate_knn

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(protocols, "atomic_write_text", read_only)
    with pytest.warns(UserWarning, match=r"knn-128\.json: not written \(Read-only file system"):
        rec = evaluate_knn(run, k=500, device="cpu", progress=False)
    assert rec["protocol"]["k"] == 128 and 0 <= rec["top1"] <= 1
    assert not (run / "eval" / "knn-128.json").exists()
