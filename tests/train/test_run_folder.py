"""The run folder: its name, exclusive creation, resume of finished and killed runs."""

from __future__ import annotations

import pytest

import selfsup.train.pretrain as pretrain_module
from selfsup.cli import main


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
