"""Two CPU processes with gloo: gathered NT-Xent, sharded features, torchrun end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.distributed import gather_rows, my_rows
from selfsup.losses import nt_xent
from selfsup.train.checkpoint import load_checkpoint
from selfsup.train.logging import read_jsonl


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    z1 = torch.randn(8, 5, dtype=torch.float64)
    z2 = torch.randn(8, 5, dtype=torch.float64)
    n = 8 // world
    a = z1[rank * n:(rank + 1) * n].clone().requires_grad_()
    b = z2[rank * n:(rank + 1) * n].clone().requires_grad_()
    loss = nt_xent(a, b, 0.3)
    # DDP averages gradients over ranks: do the same by hand
    (loss / world).backward()
    grads = torch.cat([a.grad, b.grad], 1)
    dist.all_reduce(loss)
    all_grads = [torch.empty_like(grads) for _ in range(world)]
    dist.all_gather(all_grads, grads)
    rows = torch.arange(7.0)[my_rows(7)].view(-1, 1)  # 7 rows over 2 ranks: 4 + 3
    gathered = gather_rows(rows, 7)
    if rank == 0:
        torch.save({"loss": loss / world, "grads": torch.cat(all_grads), "rows": gathered}, out)
    dist.destroy_process_group()


def test_gathered_nt_xent_equals_single_process(tmp_path):
    out = tmp_path / "res.pt"
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'init'}", str(out)), nprocs=2)
    res = torch.load(out)
    torch.manual_seed(0)
    z1 = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    loss = nt_xent(z1, z2, 0.3)
    loss.backward()
    torch.testing.assert_close(res["loss"], loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res["grads"], torch.cat([z1.grad, z2.grad], 1), rtol=1e-10,
                               atol=1e-12)
    assert res["rows"].view(-1).tolist() == list(range(7))


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(29500 + os.getpid() % 1000),
           "-m", "selfsup", "pretrain", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_torchrun_two_processes_train_resume_one_log(tmp_path, method):
    args = ["--config", "quickstart", "--data.limit", "128", "--model.width", "0.125",
            "--train.batch_size", "32", "--train.epochs", "2", "--eval.knn_every", "0",
            "--run.progress", "false", "--run.log_every", "2", "--run.out_dir", str(tmp_path),
            "--run.name", "ddp", "--method.name", method]
    res = _torchrun(args, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "ddp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # one run folder, not two
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 8
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps))  # one writer: no duplicated records
    assert "final_knn_top1" in json.loads((run / "summary.json").read_text())

    res = _torchrun(["--resume", str(run), "--train.epochs", "3"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 12
