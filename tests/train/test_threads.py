"""Thread defaults, the oversubscription warning, and the random-init floor beside the result."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.cli import main
from selfsup.train import threads


def test_default_threads_share_the_available_cpus(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.default_threads() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert threads.default_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice wins
    assert threads.default_threads() == 3


def test_stages_use_the_default_threads_too(monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["knn", "/nonexistent-run"]) == 2  # fails after the threads are set
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_set_threads_warns_when_runs_would_oversubscribe(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "other_selfsup_processes", lambda: 1)
    try:
        with pytest.warns(UserWarning, match="1 other selfsup run.* share its 2 CPUs"):
            assert threads.set_threads(None) == 2
        monkeypatch.setattr(threads, "other_selfsup_processes", lambda: 0)
        assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_final_line_shows_the_random_init_floor(tiny_args, tmp_path, capsys):
    assert main(["pretrain", *tiny_args, "--eval.knn_every", "0", "--eval.knn_k", "20",
                 "--eval.knn_random_init", "true", "--run.name", "floor"]) == 0
    out = capsys.readouterr().out
    assert "(random init: top-1 " in out and "pretraining " in out and " points)" in out
    summary = json.loads((tmp_path / "runs" / "floor" / "summary.json").read_text())
    assert 0 <= summary["final_random_init_knn_top1"] <= 1


def test_the_floor_is_the_network_the_run_started_from(tiny_args):
    from selfsup.config import load_config
    from selfsup.experiment import make_backbone
    from selfsup.train.step import build_training

    cfg = load_config("quickstart", tiny_args)
    torch.manual_seed(cfg.train.seed)  # as pretrain's setup does
    data, *_, model, _ = build_training(cfg, torch.device("cpu"))
    torch.manual_seed(cfg.train.seed)
    floor = make_backbone(cfg, data.channels)
    start = model.backbone.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in floor.state_dict().items())
