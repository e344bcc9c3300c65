"""What a resume may change, elastic restarts and SyncBN on resume (issue 13; stuck peers:
test_stuck_ranks.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.methods import build_method
from selfsup.models import build_backbone
from selfsup.train.checkpoint import load_checkpoint
from selfsup.train.logging import read_jsonl
from selfsup.train.optim import build_optimizer


def _run(tiny_args, *extra) -> int:
    return main(["pretrain", *tiny_args, "--run.name", "r", *extra])


def test_resume_refuses_a_change_of_trajectory(tiny_args, tmp_path, capsys):
    assert _run(tiny_args) == 0
    run = tmp_path / "runs" / "r"
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(run), "--optim.lr", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: resume: optim.lr is None in the run, 0.5 now") and \
        "\n" not in err
    assert main(["pretrain", "--resume", str(run), "--train.seed", "3"]) == 2
    assert "train.seed is 0 in the run, 3 now" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8  # untouched


def test_resume_may_train_longer_and_records_it(tiny_args, tmp_path):
    assert _run(tiny_args) == 0
    run = tmp_path / "runs" / "r"
    assert main(["pretrain", "--resume", str(run), "--train.epochs", "3"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 12
    rec = read_jsonl(run / "resumes.jsonl")
    assert rec[-1]["step"] == 8 and rec[-1]["how"] == "--resume"
    assert rec[-1]["changes"] == {"train.epochs": {"was": 2, "now": 3}}


def test_run_resume_true_continues_the_named_run(tiny_args, tmp_path):
    assert _run(tiny_args, "--train.steps", "3") == 0
    # launched again by hand with the same name: the same folder, from its checkpoint
    assert _run(tiny_args, "--train.steps", "5", "--run.resume", "true") == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r"]
    assert load_checkpoint(tmp_path / "runs" / "r" / "checkpoints" / "last.pt")["step"] == 5
    # the default (auto) outside an elastic restart: a new folder
    assert _run(tiny_args, "--train.steps", "2") == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r", "r-2"]


def test_bad_resume_setting(tiny_args, capsys):
    assert _run(tiny_args, "--run.resume", "maybe") == 2
    assert "run.resume must be auto, true or false, got 'maybe'" in capsys.readouterr().err


def test_sync_bn_conversion_keeps_the_optimised_parameters():
    """pretrain converts BN to SyncBN after a resume loaded the optimiser: the conversion must
    keep the Parameter objects, so the optimiser and its loaded state stay attached."""
    cfg = load_config("quickstart", ["--model.width", "0.125"])
    model = build_method(cfg, build_backbone("resnet18", width=0.125, stem="cifar",
                                             in_channels=1))
    opt = build_optimizer("lars", model, 0.1, 1e-6, 0.9)
    before = {id(p) for g in opt.param_groups for p in g["params"]}
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert {id(p) for p in synced.parameters()} == before


def _torchrun(args: list[str], env: dict, restarts: int = 0,
              timeout: int = 300) -> subprocess.CompletedProcess:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--max-restarts", str(restarts), "--master_addr", "127.0.0.1", "--master_port",
           str(port), "-m", "selfsup", "pretrain", *args]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                          capture_output=True, text=True, timeout=timeout)


DDP = ["--config", "quickstart", "--data.limit", "128", "--model.width", "0.125",
       "--train.batch_size", "32", "--train.epochs", "3", "--eval.knn_every", "-1",
       "--run.progress", "false", "--run.log_every", "1", "--run.checkpoint_steps", "2"]


@pytest.mark.slow
def test_elastic_restart_continues_the_run_bit_identically(tmp_path):
    args = [*DDP, "--run.out_dir", str(tmp_path)]
    res = _torchrun([*args, "--run.name", "straight"], {})
    assert res.returncode == 0, res.stderr[-3000:]
    # the first attempt fails at step 7 (after the step-6 checkpoint); torchrun restarts it
    res = _torchrun([*args, "--run.name", "elastic"], {"SELFSUP_FAULT": "fail@7"}, restarts=1)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "injected failure at step 7" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elastic", "straight"]
    a, b = (load_checkpoint(tmp_path / n / "checkpoints" / "last.pt")
            for n in ("straight", "elastic"))
    assert a["step"] == b["step"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    resumes = read_jsonl(tmp_path / "elastic" / "resumes.jsonl")
    assert [r["how"] for r in resumes] == ["elastic restart"] and resumes[0]["step"] == 6
    steps = [r["step"] for r in read_jsonl(tmp_path / "elastic" / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 13))  # each step logged once


def test_timeout_setting_is_checked(tiny_args, capsys):
    assert _run(tiny_args, "--train.timeout_s", "0") == 2
    assert "train.timeout_s must be > 0" in capsys.readouterr().err


def test_resume_records_nothing_for_a_new_run(tiny_args, tmp_path):
    assert _run(tiny_args) == 0
    assert not Path(tmp_path / "runs" / "r" / "resumes.jsonl").exists()


def test_an_older_run_with_flat_method_keys_is_compared_in_sections(tmp_path):
    """config.yaml of runs made before the method sections: its flat keys still count."""
    from selfsup.train.resume import config_changes

    (tmp_path / "config.yaml").write_text("method:\n  name: moco\n  queue_size: 4096\n")
    cfg = load_config("moco-v2-fashion-mnist", ["--method.moco.queue_size", "1024"])
    with warnings.catch_warnings():  # the flat key's deprecation note (once per process)
        warnings.simplefilter("ignore", FutureWarning)
        changes = config_changes(tmp_path, cfg)
    assert changes["method.moco.queue_size"] == (4096, 1024)


def test_wrap_with_sync_bn_keeps_the_resumed_optimiser_attached(monkeypatch):
    """pretrain's own _wrap (SyncBN + DDP, faked here: SyncBN needs CUDA and a group) after a
    resume loaded the optimiser: a step of that optimiser must move the wrapped model. (The
    original bug, an optimiser rebuilt in pretrain after the conversion, is gone from the code;
    this guards _wrap, the one place that converts, not that removed line.)"""
    from selfsup.train import pretrain as loop

    cfg = load_config("quickstart", ["--model.width", "0.125", "--train.sync_bn", "true"])
    model = build_method(cfg, build_backbone("resnet18", width=0.125, stem="cifar",
                                             in_channels=1))
    opt = build_optimizer("sgd", model, 0.1, 0.0, 0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    state = opt.state_dict()  # as a checkpoint holds it
    opt.load_state_dict(state)
    monkeypatch.setattr(loop, "is_distributed", lambda: True)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda m, **kw: m)
    wrapped = loop._wrap(model, cfg, torch.device("cpu"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in wrapped.modules())
    params = list(wrapped.parameters())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in params}
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, params))
    assert all(opt.state[p]["momentum_buffer"] is not None for p in params)  # resumed state
