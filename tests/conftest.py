"""Shared fixtures: where the real data sets live, a tiny fast pretraining config, and a
backbone whose output turns NaN."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from torch import nn


def shared_data_dir() -> Path | None:
    """``$SELFSUP_SHARED_DATA``, else the first ``shared/data`` above this file, else None.

    The real data (read-only, never copied into the repository); tests that need it skip
    when it is absent."""
    env = os.environ.get("SELFSUP_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(autouse=True, scope="session")
def _store_cache(tmp_path_factory):
    """Packed image folders go to a temporary cache, never the user's ~/.cache."""
    os.environ["SELFSUP_STORES"] = str(tmp_path_factory.mktemp("stores"))
    yield


@pytest.fixture
def shared_data() -> Path:
    root = shared_data_dir()
    if root is None:
        pytest.skip("real data not found (set SELFSUP_SHARED_DATA to the shared/data folder)")
    return root


# A SimCLR run that takes a second or two on a CPU: 128 sample images, width 1/8.
TINY = [
    "--data.limit", "128", "--model.width", "0.125", "--train.batch_size", "32",
    "--train.epochs", "2", "--eval.knn_every", "-1", "--run.progress", "false",
    "--run.log_every", "1", "--train.num_threads", "1",
]


@pytest.fixture
def tiny_args(tmp_path) -> list[str]:
    return [*TINY, "--run.out_dir", str(tmp_path / "runs")]


@pytest.fixture
def one_thread():
    """One torch thread for tests of tiny tensors: extra threads only wait on each other on a
    busy CPU (measured: the Jigsaw solvability test took 75 s instead of 3 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _GoesNaN(nn.Module):
    """A backbone whose output turns NaN after ``after`` training forward calls."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 8
        self.calls, self.after = 0, after

    def forward(self, x):
        if self.training:
            self.calls += 1
        out = self.net(x)
        return out * float("nan") if self.calls > self.after else out


def _goes_nan_after_6(**kwargs) -> nn.Module:
    return _GoesNaN(after=6)


def error_line(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit status 2 and exactly one ``error:`` line; return it."""
    from selfsup.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def nan_backbone() -> str:
    """The name of a registered backbone whose output is NaN from its 7th training step on."""
    from selfsup.models import register_backbone

    register_backbone("conftest_goes_nan")(_goes_nan_after_6)  # idempotent: same function
    return "conftest_goes_nan"
