"""Every bad value is refused up front in one ``error:`` line with exit status 2, never a
traceback and never a silently wrong result (issue 13, items 10-12)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest

from selfsup.cli import main
from selfsup.config import Config
from tests.conftest import TINY, error_line


def _fields(kind: type, cls: type = Config, prefix: str = "") -> list[str]:
    """Every config key whose type admits ``kind`` (float: also the float members of unions),
    nested sections (method.moco, method.ft, method.jigsaw) included."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _fields(kind, tp, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(tp) or (tp,)
        if kind in args and not (kind is int and bool in args):
            out.append(f"{prefix}{f.name}")
    return out


FLOATS = _fields(float)
INTS = [k for k in _fields(int) if k not in FLOATS]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOATS)
def test_every_float_setting_must_be_finite(capsys, key, value):
    err = error_line(capsys, ["pretrain", "--config", "quickstart", f"--{key}", value])
    assert f"config key {key} must be a finite number" in err


@pytest.mark.parametrize("key", INTS)
def test_every_integer_setting_takes_integers_only(capsys, key):
    err = error_line(capsys, ["pretrain", "--config", "quickstart", f"--{key}", "1.5x"])
    assert key in err


@pytest.mark.parametrize("extra,needle", [
    (["--eval.batch_size", "0"], "eval.batch_size must be >= 1, got 0"),
    (["--run.score_bins", "0"], "run.score_bins must be >= 1, got 0"),
    (["--train.num_threads", "-1"], "train.num_threads must be >= 1, got -1"),
    (["--train.seed", "-1"], "train.seed must be in [0, 2**31), got -1"),
    (["--train.seed", "1000000000000"], "train.seed must be in [0, 2**31), got 1000000000000"),
    (["--train.device", "tpu"], "train.device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["--model.head_hidden", "0"], "model.head_hidden must be >= 1, got 0"),
    (["--run.checkpoint_steps", "-2"], "run.checkpoint_steps must be >= 0, got -2"),
    (["--run.checkpoint_every", "-1"], "run.checkpoint_every must be >= 0, got -1"),
    (["--optim.final_lr", "-0.1"], "optim.final_lr must be >= 0, got -0.1"),
    (["--method.temperature", "0"], "method.temperature must be > 0, got 0.0"),
    (["--model.sk_ratio", "1"], "model.sk_ratio must be in [0, 1), got 1.0"),
    (["--eval.knn_every", "-3"], "eval.knn_every must be >= -1"),
    (["--augment.crop_scale", "[0.5, 0.2]"], "augment.crop_scale must be [min, max]"),
    (["--augment.strength", "-1"], "augment.strength must be >= 0"),
    (["--data.verify", "maybe"], "data.verify must be true, warn or false, got 'maybe'"),
    (["--data.on_device", "2"], "data.on_device"),
    (["--data.pack_workers", "-1"], "data.pack_workers must be >= 0"),
    (["--data.decoder", "turbo"], "data.decoder must be pil or simplejpeg"),
    (["--run.name", "../x"], "run.name '../x' is not a plain folder name"),
])
def test_bad_values(capsys, extra, needle):
    assert needle in error_line(capsys, ["pretrain", "--config", "quickstart", *extra])


def test_binary_config_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(bytes(range(256)))
    err = error_line(capsys, ["pretrain", "--config", str(bad)])
    assert "not a text file (a YAML config)" in err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["pretrain", *TINY, "--run.out_dir", str(out), "--run.name", "r",
                 "--eval.knn_every", "0"]) == 0
    return out / "r"


@pytest.mark.parametrize("argv,needle", [
    (["knn", "{run}", "--k", "-5"], "k-NN k must be >= 1, got -5"),
    (["knn", "{run}", "--k", "0"], "k-NN k must be >= 1, got 0"),
    (["knn", "{run}", "--temperature", "0"], "temperature must be a finite number > 0"),
    (["knn", "{run}", "--temperature", "-1"], "temperature must be a finite number > 0"),
    (["knn", "{run}", "--k", "x"], "argument --k: invalid int value"),
    (["linear", "{run}", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["linear", "{run}", "--lr", "-1"], "--lr must be a finite number >= 0, got -1.0"),
    (["linear", "{run}", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["linear", "{run}", "--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["finetune", "{run}", "--label-fraction", "0.1", "--epochs", "0"],
     "--epochs must be >= 1, got 0"),
    (["cluster", "{run}", "--k", "4", "--iters", "0"], "cluster --iters must be >= 1, got 0"),
    (["cluster", "{run}", "--k", "4", "--n-init", "0"], "cluster --n-init must be >= 1, got 0"),
    (["knn", "{run}", "--model.width", "0.25"], "checkpoint does not fit model.backbone"),
    (["export", "{run}", "--checkpoint", "nope.pt"], "nope.pt"),
    (["knn", "{run}/nothing"], "not a selfsup run folder"),
    (["pretrain", "--resume", "{run}", "--model.width", "0.5"],
     "resume: model.width is 0.125 in the run, 0.5 now"),
])
def test_bad_stage_arguments(capsys, run, argv, needle):
    argv = [a.replace("{run}", str(run)) for a in argv]
    assert needle in error_line(capsys, argv)


def test_export_onto_a_file_or_into_a_file(capsys, run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = error_line(capsys, ["export", str(run), "--out", str(blocker)])
    assert "cannot write the export" in err
    err = error_line(capsys, ["export", str(run), "--out", str(blocker / "sub")])
    assert "cannot write the export" in err


def test_binary_subset_file(capsys, run, tmp_path):
    bad = tmp_path / "subset.txt"
    bad.write_bytes(bytes(range(256)))
    err = error_line(capsys, ["finetune", str(run), "--subset", str(bad), "--epochs", "1"])
    assert "not a text file" in err


def test_knn_reports_the_k_it_used(capsys, run):
    assert main(["knn", str(run), "--k", "100000", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "k-NN k=128 " in out  # the memory set has 128 images


def test_the_config_walk_alone_covers_sixty_keys_and_values():
    assert 3 * len(FLOATS) + len(INTS) >= 60  # drops if settings lose their number types


# -- damaged stores and pack outputs (issue 23 items 4, 5) ----------------------------------

def _json_edit(fn):
    """A tampering that rewrites meta.json through ``fn(meta) -> new object``."""
    def edit(store):
        meta = json.loads((store / "meta.json").read_text())
        (store / "meta.json").write_text(json.dumps(fn(meta)))
    return edit


def _split(key, value):
    return _json_edit(lambda m: {**m, "splits": {**m["splits"], "train": {
        **m["splits"]["train"], key: value}}})


def _labels(array):
    return lambda store: np.save(store / "train" / "labels.npy", array)


STORE_DAMAGE = {
    "labels missing": (lambda s: (s / "train" / "labels.npy").unlink(), "unreadable labels"),
    "labels garbage": (lambda s: (s / "train" / "labels.npy").write_bytes(b"\x93NUMPY junk"),
                       "unreadable labels"),
    "labels pickled": (lambda s: np.save(s / "train" / "labels.npy",
                                         np.array([{"a": 1}] * 8, dtype=object)),
                       "unreadable labels"),
    "labels negative": (_labels(np.array([0, 1, -1, 0, 1, 0, 1, 0])), "label -1 is outside"),
    "labels above the classes": (_labels(np.array([0, 1, 7, 0, 1, 0, 1, 0])),
                                 "label 7 is outside the 2 classes"),
    "labels float": (_labels(np.zeros(8, np.float32) + 0.5), "float32 labels"),
    "labels too few": (_labels(np.zeros(5, np.int64)), "expected 8 integers"),
    "files.txt missing": (lambda s: (s / "train" / "files.txt").unlink(),
                          "unreadable file list"),
    "files.txt short": (lambda s: (s / "train" / "files.txt").write_text("a.png\n"),
                        "1 file names for 8 images"),
    "files.txt binary": (lambda s: (s / "train" / "files.txt").write_bytes(b"\xff\xfe\xfa\n"),
                         "unreadable file list (not UTF-8 text)"),
    "meta a list": (lambda s: (s / "meta.json").write_text("[1, 2]"), "is a list, not an object"),
    "meta a folder": (lambda s: ((s / "meta.json").unlink(), (s / "meta.json").mkdir()),
                      "not a packed store"),
    "meta without splits": (_json_edit(lambda m: {k: v for k, v in m.items() if k != "splits"}),
                            "it lists no splits"),
    "count not a number": (_split("images", "many"), "split 'train' has no image count"),
    "count negative": (_split("images", -3), "split 'train' has no image count"),
    "count zero": (_split("images", 0), "the 'train' split holds no images"),
    "mean NaN": (_split("mean", [float("nan")] * 3), "split 'train' mean is [nan, nan, nan]"),
    "std negative": (_split("std", [-1.0, 0.2, 0.2]), "not 3 finite non-negative numbers"),
    "channels 2": (_json_edit(lambda m: {**m, "channels": 2}), "channels is 2, not 1 or 3"),
    "size a string": (_json_edit(lambda m: {**m, "size": "big"}), "not a positive integer"),
    "classes a string": (_json_edit(lambda m: {**m, "classes": "cat,dog"}),
                         "classes is not a list of names"),
    "another format": (_json_edit(lambda m: {**m, "format": "ffcv"}), "not a selfsup-store v1"),
    "images cut": (lambda s: os.truncate(s / "train" / "images.u8", 10), "the store is damaged"),
}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from tests.data.folders import make_folder

    root = tmp_path_factory.mktemp("packed")
    src = make_folder(root / "photos", per_class=4, test_per_class=1)
    assert main(["pack", str(src), str(root / "store"), "--size", "16", "--workers", "0",
                 "--no-progress"]) == 0
    return root / "store"


@pytest.mark.parametrize("case", list(STORE_DAMAGE))
def test_a_damaged_store_is_one_line_and_starts_nothing(capsys, packed, tmp_path, case):
    tamper, needle = STORE_DAMAGE[case]
    store = tmp_path / "store"
    shutil.copytree(packed, store)
    capsys.readouterr()
    tamper(store)
    err = error_line(capsys, ["pretrain", "--config", "quickstart", *TINY, "--data.dataset",
                              "store", "--data.root",
                              str(store), "--data.size", "16", "--run.out_dir",
                              str(tmp_path / "runs")])
    assert needle in err
    assert not (tmp_path / "runs").exists()  # no run folder for a run that cannot start


def _below_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "store"


def _read_only(tmp_path, monkeypatch):
    """Root ignores chmod (CI runs as root): a read-only file system, as mkdir reports it."""
    import errno

    real = Path.mkdir

    def erofs(self, *args, **kwargs):
        if tmp_path in self.parents or self == tmp_path / "ro":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", erofs)
    return tmp_path / "ro" / "store"


@pytest.mark.parametrize("make,args,needle", [
    (_below_a_file, [], "cannot create the store folder (Not a directory)"),
    ("read-only", [], "cannot create the store folder (Read-only file system)"),
    (lambda t: t / "out", ["--size", "100000"], "pack size must be <= 4096"),
    (lambda t: t / "out", ["--size", "4"], "pack size must be an integer >= 8"),
    (lambda t: t / "out", ["--workers", "-1"], "workers"),
])
def test_pack_outputs_that_cannot_be_written(capsys, packed, tmp_path, monkeypatch, make, args,
                                             needle):
    src = packed.parent / "photos"
    out = _read_only(tmp_path, monkeypatch) if make == "read-only" else make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    argv = ["pack", str(src), str(out), "--workers", "0", "--no-progress", *args]
    if "--size" not in args:
        argv += ["--size", "16"]
    assert needle in error_line(capsys, argv)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created


def test_a_pack_larger_than_the_free_disk_is_refused_before_writing(capsys, packed, tmp_path,
                                                                    monkeypatch):
    import collections
    import shutil as sh

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    err = error_line(capsys, ["pack", str(packed.parent / "photos"), str(tmp_path / "out"),
                              "--size", "512", "--workers", "0", "--no-progress"])
    assert "the store needs 0.01 GB and its disk has 0.00 GB free" in err
    assert not (tmp_path / "out" / "train").exists()  # nothing preallocated


def test_disk_full_while_checkpointing_is_one_line(capsys, tmp_path, monkeypatch):
    import errno

    import torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    err = error_line(capsys, ["pretrain", *TINY, "--run.out_dir", str(tmp_path),
                               "--run.name", "full"])
    assert "last.pt: cannot write (No space left on device)" in err
    assert not list((tmp_path / "full" / "checkpoints").glob("*.tmp"))  # nothing half-written


@pytest.mark.parametrize("limit_kb", [8, 200])  # the first / a later checkpoint write fails
def test_a_real_file_size_limit_is_one_line(tmp_path, limit_kb):
    """A real failed write (RLIMIT_FSIZE: EFBIG, as ENOSPC would be), not a mocked one: torch
    reports it as a RuntimeError of its zip writer, which once escaped as a traceback."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_kb * 1024, limit_kb * 1024))

    cmd = [sys.executable, "-m", "selfsup", "pretrain", *TINY, "--run.out_dir", str(tmp_path),
           "--run.name", "full", "--train.num_threads", "1", "--run.log_every", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    lines = [x for x in res.stderr.strip().splitlines() if not x.startswith(" ")
             and "Warning" not in x and "warnings.warn" not in x]
    assert res.returncode == 2 and lines[-1].startswith("error: "), res.stderr[-2000:]
    assert "cannot write" in lines[-1] and "Traceback" not in res.stderr
    assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written left behind


def test_a_metrics_log_that_cannot_be_written_is_one_error(tmp_path):
    from selfsup.errors import DataError
    from selfsup.train.logging import MetricsLogger

    logger = MetricsLogger(tmp_path)
    (tmp_path / "metrics.jsonl").mkdir()  # any OSError of the append: EISDIR here, ENOSPC live
    with pytest.raises(DataError, match="metrics.jsonl: cannot write"):
        logger.log({"step": 1, "loss": 1.0})


def test_a_run_shorter_than_its_warm_up_warns(tmp_path):
    from selfsup.config import load_config
    from selfsup.train.pretrain import pretrain

    cfg = load_config("quickstart", [*TINY, "--run.out_dir", str(tmp_path), "--train.steps",
                                     "2", "--optim.warmup_epochs", "5"])
    with pytest.warns(UserWarning, match=r"warm-up \(5 epochs = 20 steps\) is not shorter than "
                      r"the run \(2 steps\)"):
        pretrain(cfg)
