"""The run folder: its name, exclusive creation, resume of finished and killed runs."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

import selfsup.train.pretrain as pretrain_module
import selfsup.train.pretrain_run as run_module
import selfsup.train.step as step_module
from selfsup import plots
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.train.checkpoint import load_checkpoint
from selfsup.train.logging import read_jsonl
from selfsup.train.pretrain import new_run_dir, pretrain


@pytest.mark.parametrize("name", ["../../x", "/abs/x", ".", "..", "a/b", "a\\b", "..\\x"])
def test_run_name_must_be_one_plain_path_component(tiny_args, tmp_path, monkeypatch, capsys,
                                                   name):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the run name was checked")

    monkeypatch.setattr(step_module, "load_data", no_data)
    rc = main(["pretrain", "--config", "quickstart", *tiny_args, "--run.name", name])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and repr(name) in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _race(out_dir: str, rounds: int, barrier, results) -> None:
    for i in range(rounds):
        cfg = load_config("quickstart", ["--run.out_dir", out_dir, "--run.name", f"r{i}"])
        barrier.wait()  # both processes ask for the same name at the same moment
        results.put((i, str(new_run_dir(cfg))))


def test_two_runs_started_at_once_get_two_folders(tmp_path):
    ctx, rounds = mp.get_context("fork"), 40
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), rounds, barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    got: dict[int, list[str]] = {}
    for _ in range(2 * rounds):
        i, path = results.get(timeout=60)
        got.setdefault(i, []).append(path)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for i, paths in got.items():
        assert len(set(paths)) == 2, paths
        assert sorted(paths) == [str(tmp_path / f"r{i}"), str(tmp_path / f"r{i}-2")]


def test_a_name_holding_a_run_gets_a_suffix(tmp_path):
    cfg = load_config("quickstart", ["--run.out_dir", str(tmp_path), "--run.name", "q"])
    (tmp_path / "q" / "checkpoints").mkdir(parents=True)
    (tmp_path / "q-2").mkdir()
    (tmp_path / "q-2" / "metrics.jsonl").write_text("")
    assert new_run_dir(cfg) == tmp_path / "q-3" and (tmp_path / "q-3").is_dir()
    assert new_run_dir(cfg) == tmp_path / "q-4"


def test_the_run_target_is_checked_without_writing(tmp_path):
    """``check_run_target`` (for pretrain to call before any data is read) writes nothing,
    even for a good target: out_dir is created only with the run folder."""
    from selfsup.errors import ConfigError, DataError
    from selfsup.runs import check_run_target

    def cfg(*args):
        return load_config("quickstart", ["--run.out_dir", str(tmp_path / "a" / "b"), *args])

    check_run_target(cfg())
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="is 256 bytes long"):
        check_run_target(cfg("--run.name", "x" * 256))
    (tmp_path / "a").write_text("")
    with pytest.raises(DataError, match=r"run.out_dir .*/a/b: cannot write there \(.*/a is a"):
        check_run_target(cfg())


def test_a_suffix_past_the_name_limit_is_one_error(tmp_path):
    """A 255-byte name is allowed; taken, its suffix makes 257 bytes: ENAMETOOLONG at mkdir
    becomes one DataError, not a traceback."""
    from selfsup.errors import DataError

    name = "n" * 255
    (tmp_path / name).mkdir()
    cfg = load_config("quickstart", ["--run.out_dir", str(tmp_path), "--run.name", name])
    with pytest.raises(DataError, match=r"cannot create the run folder n+-2 \(File name too"):
        new_run_dir(cfg)


def _finished_run(tiny_args, capsys):
    assert main(["pretrain", "--config", "quickstart", *tiny_args, "--eval.knn_every", "0",
                 "--run.name", "done"]) == 0
    capsys.readouterr()
    run = Path(tiny_args[-1]) / "done"
    return run, json.loads((run / "summary.json").read_text())


def test_resume_of_a_finished_run_says_so_and_keeps_its_summary(tiny_args, capsys):
    run, summary = _finished_run(tiny_args, capsys)
    text = (run / "summary.json").read_text()
    n_records = len(read_jsonl(run / "metrics.jsonl"))
    assert summary["final_loss"] is not None
    assert main(["pretrain", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and f"final loss {summary['final_loss']:.4f}" in out
    assert (run / "summary.json").read_text() == text
    assert len(read_jsonl(run / "metrics.jsonl")) == n_records


def test_resume_after_the_final_checkpoint_finishes_knn_summary_and_plots(tiny_args, capsys):
    run, summary = _finished_run(tiny_args, capsys)  # as if killed during the final k-NN
    (run / "summary.json").unlink()
    for png in (run / "plots").glob("*.png"):
        png.unlink()
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert f"final loss {summary['final_loss']:.4f}" in capsys.readouterr().out
    again = json.loads((run / "summary.json").read_text())
    for key in ("steps", "epochs", "final_loss", "final_knn_top1", "final_knn_top5",
                "collapse_step", "train_images"):
        assert again[key] == summary[key], key
    trained_s = load_checkpoint(run / "checkpoints" / "last.pt")["train_s"]
    assert 0 < trained_s <= again["train_s"] + 0.01  # the run's training time, not this session's
    assert (run / "plots" / "training.png").is_file()
    knn_steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "knn_top1" in r]
    assert knn_steps == [summary["steps"]]  # the final k-NN logged once


def test_resume_removes_stale_temporaries_of_the_checkpoint_writer(tiny_args, capsys):
    run, _ = _finished_run(tiny_args, capsys)
    ckpts = run / "checkpoints"
    stale = [ckpts / ".last.pt.k2x_9abq.tmp", ckpts / ".epoch_0002.pt.0abcdefg.tmp"]
    others = [ckpts / "notes.tmp", ckpts / ".last.pt.tmp", ckpts / "mine.pt.abcdefgh.tmp"]
    for f in stale + others:
        f.write_bytes(b"half a checkpoint")
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert not any(f.exists() for f in stale)
    assert all(f.exists() for f in others)


def test_epoch_checkpoint_is_written_before_last(tiny_args, monkeypatch):
    written = []
    real = run_module.atomic_save

    def recording_save(obj, path):
        written.append((obj["step"], Path(path).name))
        real(obj, path)

    monkeypatch.setattr(run_module, "atomic_save", recording_save)
    pretrain(load_config("quickstart", [*tiny_args, "--run.checkpoint_every", "1"]))
    # killed between the two writes, a run keeps its epoch file
    assert written == [(4, "epoch_0001.pt"), (4, "last.pt"), (8, "epoch_0002.pt"), (8, "last.pt")]


class _Killed(Exception):
    pass


def test_resume_from_a_mid_epoch_checkpoint_logs_each_step_once(tiny_args, monkeypatch):
    cfg = load_config("quickstart", [*tiny_args, "--run.checkpoint_steps", "3",
                                     "--run.name", "killed"])
    real, calls = pretrain_module.optimisation_step, []

    def killed_in_step_8(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "optimisation_step", killed_in_step_8)
    with pytest.raises(_Killed):
        pretrain(cfg)
    run = Path(cfg.run.out_dir) / "killed"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r] == [*range(1, 8)]
    monkeypatch.setattr(pretrain_module, "optimisation_step", real)

    pretrain(cfg, run_dir=run, resume=True)
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [*range(1, 9)]
    assert [r.get("event") for r in records].count("start") == 1
    scores = read_jsonl(run / "scores.jsonl")
    assert scores and [r["step"] for r in scores] == [*range(1, 9)]


def test_plots_keep_the_last_record_of_each_step(tmp_path):
    lines = [{"event": "start", "step": 0},
             *({"step": s, "epoch": s / 4, "loss": 5.0 - s, "lr": 0.1} for s in (1, 2, 3)),
             *({"step": s, "epoch": s / 4, "loss": 1.0 - s, "lr": 0.2} for s in (2, 3, 4)),
             {"step": 4, "epoch": 1.0, "knn_top1": 0.2, "knn_top5": 0.5},
             {"step": 4, "epoch": 1.0, "knn_top1": 0.3, "knn_top5": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    train, knn, _ = plots._records(tmp_path)
    assert [(r["step"], r["loss"]) for r in train] == [(1, 4.0), (2, -1.0), (3, -2.0), (4, -3.0)]
    assert [(r["step"], r["knn_top1"]) for r in knn] == [(4, 0.3)]
    assert plots.plot_run(tmp_path) == tmp_path / "plots" / "training.png"
