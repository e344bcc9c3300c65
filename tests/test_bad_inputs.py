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


# --- Config- and run-level bad inputs (issue 23, items 5 and 8) ---------------------------
# Each refusal is one line and leaves the folder it was pointed at as it was. The tests run as
# root, which chmod does not stop: "cannot write" is a path below a regular file (ENOTDIR),
# /proc/sys (read-only to root too: procfs), or a mocked mkdir raising EROFS, as said per case.


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _proc_sys() -> Path:
    """A folder even root cannot write in (procfs's /proc/sys), else the test is skipped."""
    ro = Path("/proc/sys")
    if not ro.is_dir() or os.access(ro, os.W_OK):
        pytest.skip("no folder here that root cannot write in")
    return ro


def _erofs_below(monkeypatch, top: Path) -> None:
    """Path.mkdir of ``top`` and below fails as on a read-only file system (mocked)."""
    import errno

    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == top or top in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def _out_dir_below_a_file(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    return ["--run.out_dir", str(tmp_path / "file" / "runs")], "file is a file, not a folder"


def _out_dir_a_file(tmp_path, monkeypatch):
    (tmp_path / "runs").write_text("x")
    return ["--run.out_dir", str(tmp_path / "runs")], "not a folder"


def _out_dir_read_only(tmp_path, monkeypatch):  # real: /proc/sys
    return ["--run.out_dir", str(_proc_sys() / "runs")], "(/proc/sys"


def _out_dir_erofs(tmp_path, monkeypatch):  # mocked: mkdir says EROFS
    _erofs_below(monkeypatch, tmp_path / "runs")
    return (["--run.out_dir", str(tmp_path / "runs")],
            "cannot create the run folder quickstart (Read-only file system)")


def _name_300(tmp_path, monkeypatch):
    return (["--run.out_dir", str(tmp_path / "runs"), "--run.name", "n" * 300],
            "is 300 bytes long; a folder name may have at most 255 bytes")


def _name_multibyte(tmp_path, monkeypatch):  # 128 characters, 256 bytes in UTF-8
    return (["--run.out_dir", str(tmp_path / "runs"), "--run.name", "é" * 128],
            "is 256 bytes long")


def _cache_below_a_file(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    return (["--data.cache_dir", str(tmp_path / "file" / "c")],
            f"data.cache_dir {tmp_path / 'file' / 'c'}: cannot write there ({tmp_path / 'file'}"
            " is a file, not a folder)")


def _cache_read_only(tmp_path, monkeypatch):  # real: /proc/sys
    return (["--data.cache_dir", str(_proc_sys() / "c")],
            "/proc/sys/c: cannot write there (/proc/sys: no write permission)")


def _cache_erofs(tmp_path, monkeypatch):  # mocked: the file system reports read-only
    ro, real = tmp_path / "ro", os.access
    ro.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real(p, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda p: type("S", (), {"f_flag": os.ST_RDONLY})())
    return ["--data.cache_dir", str(ro / "c")], f"({ro}: a read-only file system)"


@pytest.mark.parametrize("make", [
    _out_dir_below_a_file, _out_dir_a_file, _out_dir_read_only, _out_dir_erofs, _name_300,
    _name_multibyte, _cache_below_a_file, _cache_read_only, _cache_erofs,
])
def test_run_and_cache_folders_that_cannot_be_written(capsys, packed, tmp_path, monkeypatch,
                                                       make):
    args, needle = make(tmp_path, monkeypatch)
    folder = ["--data.dataset", "folder", "--data.root", str(packed.parent / "photos"),
              "--data.pack_size", "16"]
    if "--run.out_dir" not in args:
        args += ["--run.out_dir", str(tmp_path / "runs")]
    if "--data.cache_dir" not in args:  # the packed photos: the cache is only read
        folder = []
    before = _listing(tmp_path)
    err = error_line(capsys, ["pretrain", "--config", "quickstart", *TINY, *folder, *args])
    assert needle in err
    assert _listing(tmp_path) == before  # no run folder, no store cache, nothing


SECTION_CASES = [
    ("train: 5\n", [], "config section train must be a mapping of keys, got 5"),
    ("data: [a, b]\n", [], "config section data must be a mapping of keys, got ['a', 'b']"),
    ("method:\n  name: moco\n  moco: 4096\n", [], "config section method.moco must be"),
    ("run: fast\n", [], "config section run must be a mapping"),
    (None, ["--train", "5", "--train.epochs", "1"], "--train is a section"),
    (None, ["--train.epochs", "1", "--train", "5"], "--train is a section"),
]


@pytest.mark.parametrize("text,extra,needle", SECTION_CASES)
def test_a_section_given_as_a_value_is_refused_not_replaced(capsys, tmp_path, text, extra,
                                                           needle):
    config = tmp_path / "c.yaml"
    config.write_text(text or "model:\n  width: 0.125\n")
    before = _listing(tmp_path)
    # the overrides of TINY (--train.epochs, ...) once replaced `train: 5` without a word
    err = error_line(capsys, ["pretrain", "--config", str(config), *TINY, *extra,
                              "--run.out_dir", str(tmp_path / "runs")])
    assert needle in err and (text is None or str(config) in err)
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("extra,needle", [
    (["--optim.optimizer", "sgd", "--optim.lr", "1e6"],
     "optim.lr 1e+06 is above 100, the most optim.optimizer sgd takes"),
    (["--optim.optimizer", "lars", "--optim.lr", "1000"], "optim.lr 1000 is above 100"),
    (["--optim.lr_scaling", "linear", "--optim.base_lr", "1e4"],
     "optim.base_lr 10000 (lr 1250 with linear scaling at batch 32) is above 100"),
    (["--optim.optimizer", "adamw", "--optim.lr", "5"], "optim.lr 5 is above 1"),
])
def test_a_learning_rate_that_is_surely_wrong(capsys, tmp_path, extra, needle):
    err = error_line(capsys, ["pretrain", "--config", "quickstart", *TINY, *extra,
                              "--run.out_dir", str(tmp_path / "runs")])
    assert needle in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("key,value,needle", [
    ("std", [0.2, 0.0, 0.2], "std 0 for channel 1, whose pixels vary"),
    ("std", [0.2, 0.9, 0.2], "std 0.9 for channel 1 (must be in [0, 0.5])"),
    ("mean", [0.5, 1.5, 0.5], "mean 1.5 for channel 1 (must be in [0, 1])"),
])
def test_store_statistics_that_cannot_be_normalised_by(capsys, packed, tmp_path, key, value,
                                                       needle):
    """Checked where the pipeline takes them (experiment.load_data): a NaN loss with a hint
    about optim.lr was all these gave."""
    store = tmp_path / "store"
    shutil.copytree(packed, store)
    _split(key, value)(store)
    capsys.readouterr()
    err = error_line(capsys, ["pretrain", "--config", "quickstart", *TINY, "--data.dataset",
                              "store", "--data.root", str(store), "--data.size", "16",
                              "--run.out_dir", str(tmp_path / "runs")])
    assert needle in err and str(store) in err and "meta.json" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("stats,needle", [
    (([float("nan")], [0.2]), "mean nan for channel 0"),
    (([0.5], [float("nan")]), "std nan for channel 0"),
    (([0.5], [-0.1]), "std -0.1 for channel 0"),
    (([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]), "3 mean values for 1 channels"),
])
def test_store_statistics_are_checked_whoever_read_them(stats, needle):
    import torch

    from selfsup.data import ImageSet
    from selfsup.errors import DataError
    from selfsup.experiment import check_store_stats

    images = torch.arange(4 * 64, dtype=torch.uint8).view(4, 1, 8, 8)
    with pytest.raises(DataError, match=r"^where: the store's meta.json has ") as e:
        check_store_stats(ImageSet(images, None, stats=stats), "where")
    assert needle in str(e.value)
    constant = ImageSet(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), None, stats=([0.0], [0.0]))
    check_store_stats(constant, "where")  # a channel that is constant has std 0: kept


@pytest.fixture(scope="module")
def jigsaw_last(tmp_path_factory):
    out = tmp_path_factory.mktemp("jigsaw")
    assert main(["pretrain", *TINY, "--train.epochs", "1", "--method.name", "jigsaw",
                 "--run.out_dir", str(out), "--run.name", "j"]) == 0
    return out / "j" / "checkpoints" / "last.pt"


@pytest.mark.parametrize("argv", [["knn", "{run}"], ["linear", "{run}", "--epochs", "1"],
                                  ["export", "{run}"],
                                  ["finetune", "{run}", "--per-class", "2", "--epochs", "1"]])
def test_a_checkpoint_of_another_method_is_refused(capsys, run, jigsaw_last, tmp_path, argv):
    """A Jigsaw last.pt copied into a SimCLR run loads (same backbone) and was reported as
    SimCLR; the checkpoint records its method."""
    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    shutil.copy(jigsaw_last, copy / "checkpoints" / "last.pt")
    before = _listing(tmp_path)
    err = error_line(capsys, [a.replace("{run}", str(copy)) for a in argv])
    assert "last.pt: a jigsaw checkpoint, but the run's config says method.name simclr" in err
    assert _listing(tmp_path) == before  # no eval/ record, no export


def test_the_knn_monitor_reports_the_k_it_used(capsys, tmp_path):
    from selfsup.train.logging import read_jsonl

    assert main(["pretrain", *TINY, "--eval.knn_every", "1", "--eval.knn_k", "100000",
                 "--run.out_dir", str(tmp_path), "--run.name", "k"]) == 0
    assert "k-NN k=128 " in capsys.readouterr().out  # 128 images in the memory set
    ks = [r["knn_k"] for r in read_jsonl(tmp_path / "k" / "metrics.jsonl") if "knn_k" in r]
    assert ks and set(ks) == {128}


# --- Stage outputs that cannot be written; stage arguments once taken silently -------------
# (issue 23 items 5, 8, 9: pictures, embed, finetune, distill, transfer, cluster, plot,
# export, pack --workers, cache). The tests run as root, which chmod does not stop, so the
# read-only folder {ro} is simulated as a read-only mount behaves: os.access says no (it
# does so to root as well there), and every mkdir or open for writing below it fails with
# EROFS. {file} is real: a path below a regular file (ENOTDIR).


def _stage_tree(*roots: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_size if p.is_file() else -1)
                  for r in roots for p in r.rglob("*"))


@pytest.fixture
def stage_places(tmp_path, monkeypatch) -> dict[str, str]:
    import builtins
    import errno
    import io

    (tmp_path / "file").write_text("x")
    (tmp_path / "mine.files.txt").write_text("the user's own file\n")
    ro = tmp_path / "ro"
    ro.mkdir()

    def below(path) -> bool:
        if isinstance(path, int):
            return False
        p = Path(os.fsdecode(path)).absolute()
        return p == ro or ro in p.parents

    def erofs(path):
        return OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))

    real_access, real_mkdir, real_os_open, real_open = os.access, os.mkdir, os.open, io.open

    def access(path, mode, *args, **kwargs):
        return False if below(path) and mode & os.W_OK else real_access(path, mode, *args,
                                                                        **kwargs)

    def mkdir(path, *args, **kwargs):
        if below(path):
            raise erofs(path)
        return real_mkdir(path, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if below(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise erofs(path)
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if below(file) and any(c in mode for c in "wax+"):
            raise erofs(file)
        return real_open(file, mode, *args, **kwargs)

    for module, name, fake in ((os, "access", access), (os, "mkdir", mkdir),
                               (os, "open", os_open), (io, "open", open_),
                               (builtins, "open", open_)):
        monkeypatch.setattr(module, name, fake)
    return {"{tmp}": str(tmp_path), "{ro}": str(ro), "{file}": str(tmp_path / "file")}


EMBED = ["embed", "{run}", "fashion-mnist-sample", "--no-progress"]
FINETUNE = ["finetune", "{run}", "--label-fraction", "0.1", "--no-progress"]

STAGE_OUTPUTS = [
    (["pictures", "{run}", "--out", "{ro}/p"], "p: cannot write the pictures ({ro} is not "
     "writable)"),
    (["pictures", "{run}", "--out", "{file}/p"], "({file} is a file, not a folder)"),
    (["pictures", "{run}", "--out", "{file}"], "cannot write the pictures (it exists and is not "
     "a folder)"),
    (["pictures", "{run}", "--k", "100000", "--out", "{tmp}/p"], "pictures --k must be <= 50"),
    (["pictures", "{run}", "--map", "tsne", "--map-points", "1", "--out", "{tmp}/p"],
     "pictures --map-points must be >= 10"),
    (["pictures", "{run}", "--device", "tpu", "--out", "{tmp}/p"],
     "--device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ([*EMBED, "--out", "{ro}/e.npy"], "e.npy: cannot write the embeddings ({ro} is not "
     "writable)"),
    ([*EMBED, "--out", "{file}/e.npy"], "({file} is a file, not a folder)"),
    ([*EMBED, "--out", "{tmp}/e.npy", "--device", "tpu"], "got 'tpu'"),
    ([*EMBED, "--out", "{tmp}/mine.npy"], "mine.files.txt: already exists; selfsup replaces "
     "a file only with --overwrite"),
    ([*FINETUNE, "--model.width", "0.25", "--out", "{tmp}/ft"],
     "checkpoint does not fit model.backbone resnet18 w0.25 (size mismatch"),
    ([*FINETUNE, "--out", "{ro}/ft"], "cannot write the run folder ({ro} is not writable)"),
    ([*FINETUNE, "--out", "{file}/ft"], "cannot write the run folder ({file} is a file"),
    (["distill", "--teacher", "{run}", "--out", "{file}/d"], "({file} is a file, not a folder)"),
    (["transfer", "{run}", "--out", "{ro}/t"], "cannot write the run folder ({ro} is not"),
    (["cluster", "{run}", "--k", "4", "--out", "{ro}/c"], "c: cannot write the cluster run "
     "({ro} is not writable)"),
    (["cluster", "{run}", "--k", "4", "--out", "{file}/c"], "({file} is a file, not a folder)"),
    (["cluster", "{run}", "--k", "4", "--device", "tpu", "--out", "{tmp}/c"], "got 'tpu'"),
    (["plot", "{run}", "--out", "{ro}/p"], "cannot write the plots ({ro} is not writable)"),
    (["plot", "{run}", "--out", "{file}"], "cannot write the plots (it exists and is not a "
     "folder)"),
    (["export", "{run}", "--out", "{ro}/x"], "cannot write the export (Read-only file system)"),
    (["pack", "{tmp}", "{tmp}/store", "--size", "16", "--workers", "-1"],
     "argument --workers: must be >= 0, got -1"),
    (["cache", "clean", "--older-than", "-1", "--dir", "{tmp}/c"],
     "argument --older-than: must be a finite number >= 0, got -1"),
    (["knn", "{run}", "--device", "tpu"], "got 'tpu'"),
]


@pytest.mark.parametrize("argv,needle", STAGE_OUTPUTS)
def test_stage_outputs_that_cannot_be_written(capsys, run, stage_places, argv, needle):
    def fill(text: str) -> str:
        for key, value in {"{run}": str(run), **stage_places}.items():
            text = text.replace(key, value)
        return text

    tmp = Path(stage_places["{tmp}"])
    before = _stage_tree(tmp, run)
    err = error_line(capsys, [fill(a) for a in argv])
    assert fill(needle) in err
    assert _stage_tree(tmp, run) == before  # nothing created, nothing replaced
    assert (tmp / "mine.files.txt").read_text() == "the user's own file\n"
