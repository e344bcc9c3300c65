"""A stopped rank ends a torchrun job within minutes at the default ``train.timeout_s``, while
the phases where the ranks drift apart for long (the first step, a checkpoint or the summary
that rank 0 writes alone, the k-NN monitor) wait patiently (issue 23 item 1)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.config import load_config
from selfsup.distributed import PATIENT_S, CollectiveTimeouts, init_distributed
from selfsup.train.checkpoint import load_checkpoint
from selfsup.train.logging import read_jsonl
from tests.train.test_resume_rules import DDP, _torchrun


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    timeouts = CollectiveTimeouts(steps_s=1.0)
    init_distributed(torch.device("cpu"), timeouts.initial_s)
    seen = {}
    with timeouts.steps():
        seen["in_steps"] = timeouts.now
        with timeouts.uneven():  # rank 0 alone, far longer than the steps' bound
            seen["uneven"] = timeouts.now
            if rank == 0:
                time.sleep(3)
        seen["after_uneven"] = timeouts.now
        if rank == 0:  # now rank 0 stops answering in the steps
            time.sleep(4)
        try:
            dist.all_reduce(torch.ones(1))
            seen["late_peer"] = "answered"
        except RuntimeError:
            seen["late_peer"] = "timed out"
    seen["after_steps"] = timeouts.now
    with open(f"{out}.{rank}", "w") as f:
        json.dump(seen, f)
    os._exit(0)  # the group is broken: skip its teardown


def test_steps_fail_fast_and_uneven_phases_wait(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path / "seen")), nprocs=2)
    seen = json.loads((tmp_path / "seen.1").read_text())
    assert seen == {"in_steps": 1.0, "uneven": PATIENT_S, "after_uneven": 1.0,
                    "late_peer": "timed out", "after_steps": PATIENT_S}


def test_the_patient_bound_is_never_shorter_than_the_steps_one():
    assert CollectiveTimeouts(5.0).patient_s == PATIENT_S
    assert CollectiveTimeouts(2 * PATIENT_S).patient_s == 2 * PATIENT_S
    assert load_config("quickstart").train.timeout_s == 120.0  # the default the slow test uses


@pytest.mark.slow
@pytest.mark.parametrize("log_every", ["1", "20"])  # 20: the peer is missed inside DDP's step
def test_a_stopped_rank_ends_the_run_with_one_error(tmp_path, log_every):
    args = [*DDP, "--run.out_dir", str(tmp_path), "--run.name", "stuck",
            "--train.timeout_s", "5", "--run.log_every", log_every]
    t0 = time.time()
    res = _torchrun(args, {"SELFSUP_FAULT": "hang@3@1"})
    assert res.returncode != 0 and time.time() - t0 < 120
    lines = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
    assert lines and "the other ranks did not answer at step 3 within train.timeout_s = 5 s" \
        in lines[0], res.stderr[-3000:]
    assert load_checkpoint(tmp_path / "stuck" / "checkpoints" / "last.pt")["step"] == 2
    summary = tmp_path / "stuck" / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())


@pytest.mark.slow
def test_a_stopped_rank_ends_the_job_within_minutes_at_the_default_timeout(tmp_path):
    args = [*DDP, "--run.out_dir", str(tmp_path), "--run.name", "stuck"]  # no train.timeout_s
    t0 = time.monotonic()
    res = _torchrun(args, {"SELFSUP_FAULT": "hang@3@1"}, timeout=600)
    took = time.monotonic() - t0
    print(f"the stuck job ended after {took:.0f} s")  # measured: 123 s (2 busy CPUs)
    lines = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
    assert res.returncode != 0 and len(lines) == 1, res.stderr[-3000:]
    assert "terminate called" not in res.stderr  # rank 0 ends with its error, no gloo abort
    assert "the other ranks did not answer at step 3 within train.timeout_s = 120 s" in lines[0]
    assert took < 300  # the bound the issue asks for; 120 s of it is the timeout itself
    assert load_checkpoint(tmp_path / "stuck" / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.slow
def test_slow_healthy_phases_outlast_the_step_timeout(tmp_path):
    """Rank 0 spends 12 s in each of the first step, the first checkpoint, the first k-NN
    monitor and the summary; the steps' bound is 5 s: the run must still finish."""
    args = [*DDP, "--run.out_dir", str(tmp_path), "--run.name", "slow", "--train.epochs", "2",
            "--eval.knn_every", "1", "--train.timeout_s", "5"]
    faults = ",".join(f"slow@{phase}@12" for phase in ("first", "save", "knn", "summary"))
    res = _torchrun(args, {"SELFSUP_FAULT": faults})
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "slow"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "knn_top1" in r] == [4, 8]
    assert "final_knn_top1" in json.loads((run / "summary.json").read_text())
