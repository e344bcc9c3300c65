"""The pretraining loop end to end: logs, checkpoints, exact resume, NaN handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfsup.config import load_config
from selfsup.errors import TrainingError
from selfsup.train.checkpoint import load_checkpoint
from selfsup.train.logging import read_jsonl
from selfsup.train.pretrain import pretrain


def test_tiny_run_writes_everything(tiny_args):
    run = pretrain(load_config("quickstart", [*tiny_args, "--eval.knn_every", "0"]))
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    records = read_jsonl(run / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 8  # 128 images / batch 32 x 2 epochs, logged every step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and 0 <= summary["final_knn_top1"] <= 1
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 8 and ckpt["config"]["train"]["batch_size"] == 32


def test_time_budget_stops_cleanly(tiny_args):
    cfg = load_config("quickstart", [*tiny_args, "--train.epochs", "1000",
                                     "--train.max_time_s", "0.5"])
    run = pretrain(cfg)
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 0 < step < 4000


def _final_state(run: Path) -> dict:
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    return ckpt


def _assert_identical(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for k in sa:
        assert torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"])


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    args = ["--data.limit", "256", "--model.width", "0.125", "--train.batch_size", "32",
            "--train.epochs", "6", "--eval.knn_every", "-1", "--run.progress", "false",
            "--run.log_every", "1", "--run.checkpoint_steps", "3", "--train.num_threads", "1",
            "--run.out_dir", str(tmp_path)]
    cmd = [sys.executable, "-m", "selfsup", "pretrain", "--config", "quickstart", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*cmd, "--run.name", "straight"], check=True, env=env, capture_output=True)

    proc = subprocess.Popen([*cmd, "--run.name", "killed"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once step 13 is logged: mid-epoch 2, after a checkpoint
        if any(r.get("step", 0) >= 13 for r in read_jsonl(metrics)):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < 48, "the run must be stopped mid-way for this test to mean anything"

    subprocess.run([sys.executable, "-m", "selfsup", "pretrain", "--resume",
                    str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    _assert_identical(_final_state(tmp_path / "straight"), _final_state(tmp_path / "killed"))


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tiny_args, nan_backbone):
    cfg = load_config("quickstart", [*tiny_args, "--model.backbone", nan_backbone,
                                     "--train.epochs", "4"])
    with pytest.raises(TrainingError, match=r"loss became nan by step 7 .*last good checkpoint"):
        pretrain(cfg)
    run = Path(cfg.run.out_dir) / cfg.run.name
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4  # end of epoch 1; nothing written after the NaN
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_run_shorter_than_an_epoch_still_checkpoints(tiny_args):
    run = pretrain(load_config("quickstart", [*tiny_args, "--train.steps", "3"]))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
