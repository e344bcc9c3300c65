"""The run folder: its name, exclusive creation, resume of finished and killed runs."""

from __future__ import annotations

import multiprocessing as mp

import pytest

import selfsup.train.pretrain as pretrain_module
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.train.pretrain import new_run_dir


@pytest.mark.parametrize("name", ["../../x", "/abs/x", ".", "..", "a/b", "a\\b", "..\\x"])
def test_run_name_must_be_one_plain_path_component(tiny_args, tmp_path, monkeypatch, capsys,
                                                   name):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the run name was checked")

    monkeypatch.setattr(pretrain_module, "load_data", no_data)
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
