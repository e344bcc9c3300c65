"""load_dataset: names, splits, roots, verification, the embedded sample and resizing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup.data.download as download_module
from selfsup.data import DATASETS, default_cache_dir, load_dataset, read_idx
from selfsup.data.download import _record_file
from selfsup.data.registry import SAMPLE_ROOT
from selfsup.errors import ConfigError, DataError

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _copy_test_files(src: Path, dest: Path) -> Path:
    """A private copy of the Fashion-MNIST test files (copies, not links: tests change mtimes)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in TEST_FILES:
        shutil.copyfile(src / name, dest / name)
    return dest


def test_unknown_name_and_split() -> None:
    with pytest.raises(DataError, match="unknown data set 'imagenet'; known: cifar10, cifar100"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="fashion-mnist-sample: unknown split 'val'"):
        load_dataset("fashion-mnist-sample", split="val")
    with pytest.raises(ConfigError, match="size must be a positive integer"):
        load_dataset("fashion-mnist-sample", size=0)


def test_missing_root_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: data folder for mnist does not exist; "
                                        r"pass download=True .* data\.root"):
        load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"cache[/\\]fashion-mnist: data folder"):
        load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    (tmp_path / "partial").mkdir()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: mnist file missing"):
        load_dataset("mnist", tmp_path / "partial", split="test")


def test_default_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("SELFSUP_DATA")
    assert default_cache_dir() == Path.home() / ".cache" / "selfsup" / "data"


def test_fashion_mnist_real(fashion_dir: Path) -> None:
    train = load_dataset("fashion-mnist", fashion_dir, "train")
    test = load_dataset("fashion-mnist", str(fashion_dir), split="test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels is not None and test.labels is not None
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes[0] == "T-shirt/top" and train.name == "fashion-mnist/train"


def test_mnist_real_test_split(mnist_dir: Path) -> None:
    test = load_dataset("mnist", mnist_dir, "test")
    assert test.labels is not None and torch.bincount(test.labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cifar10_subset_loads_with_warning(cifar_subset_dir: Path) -> None:
    with pytest.raises(DataError, match=r"data_batch_1: not the official cifar10 file \(\d+ "
                       r"bytes, official 31035704\).*--data.verify warn"):
        load_dataset("cifar10", cifar_subset_dir, "train")
    with pytest.warns(UserWarning, match="not the official full set"):
        train = load_dataset("cifar10", cifar_subset_dir, "train", verify="warn")
    assert train.images.shape == (5000, 3, 32, 32)
    assert train.labels is not None and train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7,
                                                                        8, 3]
    with pytest.warns(UserWarning, match=r"test_batch \(3074203 bytes, official 31035526\)"):
        test = load_dataset("cifar10", cifar_subset_dir / "cifar-10-batches-py-first1000",
                            "test", verify="warn")
    assert len(test) == 1000


def test_checksum_mismatch_names_file_and_sums(tmp_path: Path, fashion_dir: Path) -> None:
    root = tmp_path / "fm"
    root.mkdir()
    shutil.copy(fashion_dir / TEST_FILES[0], root)
    raw = bytearray((fashion_dir / TEST_FILES[1]).read_bytes())
    raw[2000] ^= 0xFF  # same size, different content
    (root / TEST_FILES[1]).write_bytes(raw)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: md5 checksum mismatch: "
                                        r"expected bb300cfdad3c16e7a12a480ee83cd310, got [0-9a-f]"):
        load_dataset("fashion-mnist", root, "test")
    assert not (root / (TEST_FILES[1] + ".verified")).exists()
    assert not _record_file(root / TEST_FILES[1]).exists()  # a failure is never remembered


def test_verified_record_skips_rehash(tmp_path: Path, fashion_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy_test_files(fashion_dir, tmp_path / "fm")
    load_dataset("fashion-mnist", root, "test")
    assert all(_record_file(root / name).is_file() for name in TEST_FILES)

    def no_hashing(*args: object) -> None:
        raise AssertionError("hashed again although the record matches")

    monkeypatch.setattr(download_module, "_hash_file", no_hashing)
    assert len(load_dataset("fashion-mnist", root, "test")) == 10000
    assert len(load_dataset("fashion-mnist", root, "test", verify=False)) == 10000
    # A changed modification time invalidates the record: the file is hashed again.
    os.utime(root / TEST_FILES[0], ns=(0, 1))
    with pytest.raises(AssertionError, match="hashed again"):
        load_dataset("fashion-mnist", root, "test")


def test_the_data_folder_is_never_written(tmp_path: Path, fashion_dir: Path,
                                          data_cache: Path) -> None:
    """Issue 23 item 9: ``<file>.verified`` sidecars went into data.root; the record is kept
    in selfsup's cache (keyed by resolved path, size and mtime) instead."""
    root = _copy_test_files(fashion_dir, tmp_path / "fm")
    before = sorted(p.name for p in root.iterdir())
    assert len(load_dataset("fashion-mnist", root, "test")) == 10000
    assert sorted(p.name for p in root.iterdir()) == before
    records = list((data_cache / "verified").iterdir())
    assert len(records) == 2 and all(r.suffix == ".json" for r in records)


def test_an_old_sidecar_is_still_read(tmp_path: Path, fashion_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import json

    root = _copy_test_files(fashion_dir, tmp_path / "fm")
    for name in TEST_FILES:  # as selfsup before issue 23 wrote them
        info, data = (root / name).stat(), (root / name).read_bytes()
        (root / (name + ".verified")).write_text(json.dumps({
            "size": info.st_size, "mtime_ns": info.st_mtime_ns,
            "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}))

    def no_hashing(*args: object) -> None:
        raise AssertionError("hashed although the old sidecar matches")

    monkeypatch.setattr(download_module, "_hash_file", no_hashing)
    assert len(load_dataset("fashion-mnist", root, "test")) == 10000


def test_an_unwritable_cache_only_costs_a_hash(tmp_path: Path, fashion_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "file" / "cache"))  # ENOTDIR
    root = _copy_test_files(fashion_dir, tmp_path / "fm")
    assert len(load_dataset("fashion-mnist", root, "test")) == 10000
    assert sorted(p.name for p in root.iterdir()) == sorted(TEST_FILES)


def test_sample_loads_and_is_small() -> None:
    train = load_dataset("fashion-mnist-sample", "/ignored/root", split="train")
    test = load_dataset("fashion-mnist-sample", split="test")
    assert train.images.shape == (1600, 1, 28, 28) and test.images.shape == (400, 1, 28, 28)
    assert train.labels is not None and test.labels is not None
    assert len(train.classes) == 10 and set(train.labels.tolist()) == set(range(10))
    assert set(test.labels.tolist()) == set(range(10))
    assert not list(SAMPLE_ROOT.glob("*.verified"))  # loading never writes into the package
    total = sum(p.stat().st_size for p in SAMPLE_ROOT.rglob("*") if p.is_file())
    assert total <= 1_000_000, f"sample is {total} bytes"
    license_text = (SAMPLE_ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2017 Zalando SE" in license_text and "1708.07747" in license_text


def test_sample_is_the_start_of_the_official_files(fashion_dir: Path) -> None:
    for split, prefix, count in (("train", "train", 1600), ("test", "t10k", 400)):
        sample = load_dataset("fashion-mnist-sample", split=split)
        images = read_idx(fashion_dir / f"{prefix}-images-idx3-ubyte.gz")[:count]
        labels = read_idx(fashion_dir / f"{prefix}-labels-idx1-ubyte.gz")[:count]
        assert np.array_equal(sample.images[:, 0].numpy(), images)
        assert sample.labels is not None and np.array_equal(sample.labels.numpy(), labels)


def test_sample_files_are_not_git_ignored() -> None:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    files = [str(p) for p in SAMPLE_ROOT.iterdir()]
    result = subprocess.run(["git", "check-ignore", *files], cwd=SAMPLE_ROOT,
                            capture_output=True, text=True)
    if result.returncode == 128:
        pytest.skip("not inside a git checkout")
    assert result.returncode == 1 and not result.stdout, f"ignored: {result.stdout}"


def test_resize_tensor_sets() -> None:
    small = load_dataset("fashion-mnist-sample", split="test", size=14)
    assert small.images.shape == (400, 1, 14, 14) and small.images.dtype == torch.uint8
    assert load_dataset("fashion-mnist-sample", split="test", size=28).images.shape[-1] == 28


def test_folder_dataset_splits(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            (tmp_path / split / "a").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10, 10), (i, 0, 0)).save(tmp_path / split / "a" / f"{i}.png")
    assert load_dataset("folder", tmp_path, "val", size=8).images.shape == (2, 3, 8, 8)
    # val/ is the held-out split: "test" names it too
    assert load_dataset("folder", tmp_path, "test", size=8).images.shape == (2, 3, 8, 8)
    assert len(load_dataset("folder", tmp_path / "train")) == 3  # root itself
    with pytest.raises(DataError, match="no 'test' split"):
        load_dataset("folder", tmp_path / "train", "test")
    with pytest.raises(DataError, match="folder: no root given"):
        load_dataset("folder")


def test_stl10_synthetic_warns_not_official(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "test_X.bin").write_bytes(bytes(2 * 3 * 96 * 96))
    (folder / "test_y.bin").write_bytes(bytes([3, 7]))
    with pytest.raises(DataError, match="test_X.bin: not the official stl10 file"):
        load_dataset("stl10", tmp_path, "test")
    with pytest.warns(UserWarning, match="stl10: .* not the official full set"):
        data = load_dataset("stl10", tmp_path, "test", verify="warn")
    assert data.labels is not None and data.labels.tolist() == [2, 6]
    assert data.classes == list(DATASETS["stl10"].classes)
