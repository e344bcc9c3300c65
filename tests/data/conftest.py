"""Fixtures shared by the data tests: where the real shared data sets are, and an IDX writer.

The real data (``shared/data``) is found by :func:`tests.conftest.shared_data_dir`
(``$SELFSUP_SHARED_DATA`` or walking up from the tests); tests that need it skip when absent.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data_dir


def _shared(sub: str) -> Path:
    root = shared_data_dir()
    if root is None or not (root / sub).is_dir():
        pytest.skip(f"shared data {sub!r} not found (set SELFSUP_SHARED_DATA to shared/data)")
    return root / sub


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The official Fashion-MNIST .gz files."""
    return _shared("fashion-mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The official MNIST .gz files."""
    return _shared("mnist")


@pytest.fixture(scope="session")
def cifar_subset_dir() -> Path:
    """Folder holding ``cifar-10-batches-py-first1000`` (5000 train / 1000 test images)."""
    return _shared("cifar10-subset")


def write_idx(path: Path, array: np.ndarray, *, type_byte: int = 0x08, gz: bool = True) -> Path:
    """Write ``array`` as an IDX file (big-endian), gzip-compressed when ``gz``."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_byte]
    data = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += np.ascontiguousarray(array, dtype).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def idx_writer() -> Callable[..., Path]:
    """:func:`write_idx`, as a fixture so test modules need not import this conftest."""
    return write_idx


@pytest.fixture(autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
               ) -> Path:
    """selfsup's data cache (where verification records go) in a temporary folder, for every
    data test: none writes into the user's ``~/.cache``."""
    cache = tmp_path_factory.mktemp("data-cache")
    monkeypatch.setenv("SELFSUP_DATA", str(cache))
    return cache
