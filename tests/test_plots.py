"""`selfsup plot`: each histogram panel is labelled with the epoch of the records it draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfsup.plots import histogram_panels, plot_runs


def _scores(epochs: list[float]) -> list[dict]:
    return [{"step": int(10 * e), "epoch": e, "pos_hist": [0, 1, 3, 6], "neg_hist": [5, 3, 1, 1]}
            for e in epochs]


def test_panel_names_the_epoch_drawn_not_the_one_asked():
    # a short run: its only records are at epochs 1 and 2, asked for 0.2, 1 and 2
    panels = histogram_panels({"short": _scores([1.0, 2.0])}, [0.2, 1.0, 2.0])
    titles = [t for t, _ in panels]
    assert titles == ["scores at epoch 1", "scores at epoch 2"]  # 0.2 would repeat epoch 1
    assert [rec["epoch"] for _, [(_, rec)] in panels] == [1.0, 2.0]


def test_overlaid_runs_at_different_epochs_are_each_named():
    runs = {"long": _scores([1.0, 5.0, 10.0]), "short": _scores([1.0, 2.0])}
    panels = histogram_panels(runs, [1.0, 5.0, 10.0])
    titles = [t for t, _ in panels]
    assert titles[0] == "scores at epoch 1"
    assert titles[1] == "scores at epochs 5 (long), 2 (short)"
    assert titles[2] == "scores at epochs 10 (long), 2 (short)"
    assert [name for name, _ in panels[1][1]] == ["long", "short"]


def test_fractional_epochs_are_rounded_in_titles():
    panels = histogram_panels({"r": _scores([0.3333333, 1.0])}, [0.2])
    assert panels[0][0] == "scores at epoch 0.33"


def _run(root: Path, name: str, epochs: list[float]) -> Path:
    run = root / name
    run.mkdir()
    rows = [{"step": int(10 * e), "epoch": e, "loss": 1.0 / e, "lr": 0.1} for e in epochs]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _scores(epochs)))
    return run


def test_plot_runs_writes_the_histograms(tmp_path):
    pytest.importorskip("matplotlib")
    a, b = _run(tmp_path, "a", [1.0, 5.0, 10.0]), _run(tmp_path, "b", [1.0, 2.0])
    written = plot_runs([a, b], tmp_path / "plots")
    assert tmp_path / "plots" / "histograms.png" in written
