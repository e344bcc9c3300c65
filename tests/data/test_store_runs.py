"""A user's photo folder end to end from the command line, and exact resume from a store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from selfsup.cli import main
from selfsup.train.checkpoint import load_checkpoint
from selfsup.train.logging import read_jsonl
from tests.data.folders import BAD, make_folder

FAST = ["--config", "quickstart", "--model.width", "0.125", "--train.batch_size", "8",
        "--train.epochs", "2",
        "--eval.knn_every", "0", "--eval.knn_k", "5", "--run.progress", "false",
        "--run.log_every", "1", "--train.num_threads", "1"]


def test_photo_folder_pack_pretrain_knn_linear_export(tmp_path: Path, capsys) -> None:
    src = make_folder(tmp_path / "photos", per_class=8, test_per_class=3)
    store = tmp_path / "photos-24"
    assert main(["pack", str(src), str(store), "--size", "24", "--workers", "2",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "packed 16 train + 6 test images at 24 px, 3 channels, 2 classes" in out
    assert f"train: 3 files left out, with reasons: {store / 'train' / 'skipped.jsonl'}" in out
    skipped = (store / "train" / "skipped.jsonl").read_text()
    assert all(name in skipped for name in BAD)

    runs = ["--run.out_dir", str(tmp_path / "runs")]
    # the store at 24 px, trained at 16 px: crops come from the larger stored image
    assert main(["pretrain", *FAST, *runs, "--data.dataset", "store", "--data.root", str(store),
                 "--data.size", "16", "--run.name", "photos"]) == 0
    out = capsys.readouterr().out
    assert "k-NN k=5 T=0.1 on store (16 train / 6 test)" in out
    run = tmp_path / "runs" / "photos"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["input"]["size"] == 16

    assert main(["knn", str(run), "--k", "5", "--device", "cpu"]) == 0
    assert "k-NN k=5" in capsys.readouterr().out
    assert main(["linear", str(run), "--epochs", "2", "--batch-size", "8", "--device",
                 "cpu"]) == 0
    assert "linear probe" in capsys.readouterr().out

    # the folder itself, mixed sizes and data.size: packed on first use into the cache
    cache = tmp_path / "cache"
    assert main(["pretrain", *FAST, *runs, "--data.dataset", "folder", "--data.root", str(src),
                 "--data.size", "16", "--data.cache_dir", str(cache),
                 "--run.name", "folder"]) == 0
    capsys.readouterr()
    assert [p.name for p in cache.iterdir() if p.is_dir()] == ["photos-16px-" +
                                                                 _key(src, 16)]

    # the data gone: export needs only the run; knn says what to do
    shutil.rmtree(src)
    shutil.rmtree(store)
    shutil.rmtree(cache)
    assert main(["export", str(run)]) == 0
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["input"]["size"] == 16 and config["input"]["channels"] == 3
    assert main(["knn", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a packed store" in err
    # pointed at data elsewhere: a moved store
    moved = tmp_path / "moved"
    make_folder(tmp_path / "again", per_class=8, test_per_class=3)
    assert main(["pack", str(tmp_path / "again"), str(moved), "--size", "24",
                 "--no-progress"]) == 0
    assert main(["knn", str(run), "--k", "5", "--data.root", str(moved)]) == 0


def _key(src: Path, size: int) -> str:
    from selfsup.data.store import cache_path

    return cache_path(src, size, "x").name.rsplit("-", 1)[1]


def _kill_when(metrics: Path, step: int, proc: subprocess.Popen, marker: str = "") -> None:
    """SIGKILL ``proc`` (and, with ``marker``, every process whose command line holds it:
    torchrun's workers live in sessions of their own) once ``step`` is logged."""
    deadline = time.time() + 300
    while time.time() < deadline:
        if any(r.get("step", 0) >= step and "loss" in r for r in read_jsonl(metrics)):
            break
        time.sleep(0.01)
    pids = [proc.pid]
    if marker:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker in cmdline.read_bytes().decode(errors="replace"):
                    pids.append(int(cmdline.parent.name))
            except OSError:
                pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _same_final_state(a: Path, b: Path) -> None:
    ca, cb = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (a, b))
    assert ca["step"] == cb["step"]
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k


def _packed(tmp_path: Path) -> Path:
    src = make_folder(tmp_path / "photos", per_class=24, test_per_class=2)
    assert main(["pack", str(src), str(tmp_path / "store"), "--size", "16", "--workers", "0",
                 "--no-progress"]) == 0
    return tmp_path / "store"


RESUME = ["--config", "quickstart", "--data.dataset", "store", "--model.width", "0.125",
          "--train.batch_size", "8", "--train.epochs", "4", "--eval.knn_every", "-1",
          "--run.progress", "false", "--run.log_every", "1", "--run.checkpoint_steps", "3"]


@pytest.mark.slow
def test_resume_from_store_is_bit_identical(tmp_path: Path) -> None:
    store = _packed(tmp_path)
    cmd = [sys.executable, "-m", "selfsup", "pretrain", *RESUME, "--data.root", str(store),
           "--train.num_threads", "1", "--run.out_dir", str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*cmd, "--run.name", "straight"], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cmd, "--run.name", "killed"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _kill_when(tmp_path / "runs" / "killed" / "metrics.jsonl", 7, proc)
    killed_at = load_checkpoint(tmp_path / "runs" / "killed" / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < 20, "the run must be stopped mid-way for this test to mean anything"
    subprocess.run([sys.executable, "-m", "selfsup", "pretrain", "--resume",
                    str(tmp_path / "runs" / "killed")], check=True, env=env, capture_output=True)
    _same_final_state(tmp_path / "runs" / "straight", tmp_path / "runs" / "killed")


@pytest.mark.slow
def test_torchrun_resume_from_store_is_bit_identical(tmp_path: Path) -> None:
    store = _packed(tmp_path)
    with socket.socket() as sock:  # a free port: an earlier test's may linger in TIME_WAIT
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def torchrun(args: list[str]) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "selfsup",
                "pretrain", *args]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # the photo folder itself: the first launch packs it on local rank 0 while rank 1 waits
    args = [*RESUME, "--data.dataset", "folder", "--data.root", str(tmp_path / "photos"),
            "--data.pack_size", "16", "--data.cache_dir", str(tmp_path / "cache"),
            "--run.out_dir", str(tmp_path / "runs")]
    res = subprocess.run(torchrun([*args, "--run.name", "straight"]), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    proc = subprocess.Popen(torchrun([*args, "--run.name", "killed"]), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(tmp_path / "runs" / "killed" / "metrics.jsonl", 7, proc,
               marker=str(tmp_path / "runs"))
    killed_at = load_checkpoint(tmp_path / "runs" / "killed" / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < 20, "the run must be stopped mid-way for this test to mean anything"
    res = subprocess.run(torchrun(["--resume", str(tmp_path / "runs" / "killed")]), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    _same_final_state(tmp_path / "runs" / "straight", tmp_path / "runs" / "killed")
    cached = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(cached) == 1  # packed once, by one process, reused by the later launches
    assert (cached[0] / "train" / "images.u8").read_bytes() == \
        (store / "train" / "images.u8").read_bytes()


def test_folder_preset_trains_on_a_photo_folder(tmp_path: Path, capsys) -> None:
    src = make_folder(tmp_path / "photos", per_class=8, test_per_class=3)
    assert main(["pretrain", "--config", "simclr-folder", "--data.root", str(src),
                 "--data.cache_dir", str(tmp_path / "cache"), "--train.steps", "2",
                 "--train.batch_size", "8", "--model.width", "0.125", "--eval.knn_every", "0",
                 "--eval.knn_k", "5", "--run.progress", "false", "--train.num_threads", "1",
                 "--run.out_dir", str(tmp_path / "runs"), "--run.name", "photos"]) == 0
    out = capsys.readouterr().out
    assert "k-NN k=5 T=0.1 on folder (16 train / 6 test), simclr resnet18 imagenet w0.125" in out
    store = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert read_meta_size(store) == 112  # the preset's pack_size; training crops 96 px


def read_meta_size(store: Path) -> int:
    return json.loads((store / "meta.json").read_text())["size"]


def test_training_side_larger_than_the_stored_side_is_refused(capsys) -> None:
    assert main(["pretrain", "--config", "simclr-folder", "--data.root", "x",
                 "--data.size", "128"]) == 2
    assert "data.size 128 is larger than data.pack_size 112" in capsys.readouterr().err


def test_a_folder_run_without_config_takes_the_folder_preset(tmp_path: Path, capsys) -> None:
    """No --config and --data.dataset folder: the simclr-folder preset (ImageNet stem, its
    own run name), not the Fashion-MNIST quickstart named quickstart-N."""
    src = make_folder(tmp_path / "photos", per_class=4, test_per_class=1)
    assert main(["pretrain", *FAST[2:], "--data.dataset", "folder", "--data.root", str(src),
                 "--data.size", "16", "--data.cache_dir", str(tmp_path / "cache"),
                 "--run.out_dir", str(tmp_path / "runs"), "--model.width", "0.125"]) == 0
    assert "using the simclr-folder preset" in capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    assert not run.name.startswith("quickstart")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["stem"] == "imagenet" and saved["data"]["dataset"] == "folder"
