"""Every bad value is refused up front in one ``error:`` line with exit status 2, never a
traceback and never a silently wrong result (issue 13, items 10-12)."""

from __future__ import annotations

import dataclasses
import typing

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
