"""Readers: IDX, CIFAR-10/100 pickles, STL-10 binaries and ImageSet, on real and synthetic files."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.data import ImageSet, read_cifar10, read_cifar100, read_idx, read_idx_pair, read_stl10
from selfsup.errors import DataError

FASHION_TEST = "t10k-images-idx3-ubyte.gz"
CIFAR_FIRST_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---------------------------------------------------------------- IDX


def test_read_idx_real_fashion_test(fashion_dir: Path) -> None:
    images = read_idx(fashion_dir / FASHION_TEST)
    labels = read_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10


def test_read_idx_pair_real_mnist_train(mnist_dir: Path) -> None:
    data = read_idx_pair(mnist_dir / "train-images-idx3-ubyte.gz",
                         mnist_dir / "train-labels-idx1-ubyte.gz", name="mnist/train",
                         classes=[str(d) for d in range(10)])
    assert data.images.shape == (60000, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.images.is_contiguous() and data.labels is not None
    assert data.labels.dtype == torch.int64
    assert torch.bincount(data.labels).tolist() == MNIST_TRAIN_COUNTS


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path: Path, idx_writer, gz: bool) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    assert np.array_equal(read_idx(idx_writer(tmp_path / "a.idx", array, gz=gz)), array)
    # Multi-byte types are big-endian in the file and come back in native order.
    ints = np.array([[1, -2], [70000, 3]], np.int32)
    back = read_idx(idx_writer(tmp_path / "b.idx", ints, type_byte=0x0C, gz=gz))
    assert np.array_equal(back, ints) and back.dtype == np.int32


def test_truncated_gz_names_file(tmp_path: Path, idx_writer) -> None:
    path = idx_writer(tmp_path / "train-images-idx3-ubyte.gz",
                      np.random.default_rng(1).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated IDX file"):
        read_idx(path)


def test_truncated_real_gz_names_file(tmp_path: Path, fashion_dir: Path) -> None:
    path = tmp_path / FASHION_TEST
    path.write_bytes((fashion_dir / FASHION_TEST).read_bytes()[:1000])
    with pytest.raises(DataError, match=FASHION_TEST.replace(".", r"\.")):
        read_idx(path)


def test_truncated_raw_reports_sizes(tmp_path: Path, idx_writer) -> None:
    path = idx_writer(tmp_path / "x.idx", np.zeros((10, 28, 28), np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[: 16 + 1000])
    with pytest.raises(DataError, match=r"x\.idx: truncated IDX file: expected 7840 .* got 1000"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"\x00\x00\x09\x99" + bytes(8), b"hello world\n", b"",
                                     gzip.compress(b"<html>not found</html>")])
def test_bad_magic(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "labels.idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"labels\.idx: not an IDX file: bad magic"):
        read_idx(path)


def test_trailing_bytes_and_missing_file(tmp_path: Path, idx_writer) -> None:
    path = idx_writer(tmp_path / "t.idx", np.zeros(4, np.uint8), gz=False)
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(DataError, match=r"t\.idx: bytes after"):
        read_idx(path)
    with pytest.raises(DataError, match=r"nope\.gz: cannot read IDX file"):
        read_idx(tmp_path / "nope.gz")


def test_idx_pair_count_mismatch(tmp_path: Path, idx_writer) -> None:
    images = idx_writer(tmp_path / "i.gz", np.zeros((3, 2, 2), np.uint8))
    labels = idx_writer(tmp_path / "l.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"l\.gz: .* labels for 3 images"):
        read_idx_pair(images, labels)
    bad = idx_writer(tmp_path / "bad.gz", np.array([0, 1, 12], np.uint8))
    with pytest.raises(DataError, match=r"bad\.gz: labels span 0\.\.12, outside 0\.\.9"):
        read_idx_pair(images, bad, classes=[str(d) for d in range(10)])


# ---------------------------------------------------------------- CIFAR


def test_cifar10_real_subset(cifar_subset_dir: Path) -> None:
    train = read_cifar10(cifar_subset_dir, "train")  # a folder holding the batches folder
    assert train.images.shape == (5000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels is not None and train.labels[:10].tolist() == CIFAR_FIRST_LABELS
    assert torch.bincount(train.labels).tolist() == [508, 515, 478, 484, 527, 469, 497, 512,
                                                     518, 492]
    assert train.classes[:2] == ["airplane", "automobile"] and len(train.classes) == 10
    test = read_cifar10(cifar_subset_dir / "cifar-10-batches-py-first1000", "test")
    assert test.labels is not None and len(test) == 1000
    assert torch.bincount(test.labels).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106,
                                                    109]


def _pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def test_cifar10_synthetic_str_keys_and_layout(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    data = np.random.default_rng(2).integers(0, 256, (4, 3072), dtype=np.uint8)
    _pickle(folder / "test_batch", {"data": data, "labels": [0, 1, 2, 9]})  # Python 3 str keys
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    test = read_cifar10(tmp_path, "test")
    assert test.labels is not None and test.labels.tolist() == [0, 1, 2, 9]
    # Each row is R, G, B planes of 32x32, row-major.
    assert torch.equal(test.images[1, 2], torch.from_numpy(data[1, 2048:].reshape(32, 32)))
    assert test.name == "cifar10/test" and test.classes[9] == "c9"


def test_cifar100_synthetic_fine_and_coarse(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    data = np.zeros((3, 3072), np.uint8)
    for split in ("train", "test"):
        _pickle(folder / split, {b"data": data, b"fine_labels": [5, 99, 0],
                                 b"coarse_labels": [1, 19, 0]})
    _pickle(folder / "meta", {b"fine_label_names": [b"f%d" % i for i in range(100)],
                              b"coarse_label_names": [b"k%d" % i for i in range(20)]})
    fine = read_cifar100(tmp_path, "train")
    assert fine.labels is not None and fine.labels.tolist() == [5, 99, 0]
    assert len(fine.classes) == 100 and fine.classes[99] == "f99"
    coarse = read_cifar100(folder, "test", coarse=True)
    assert coarse.labels is not None and coarse.labels.tolist() == [1, 19, 0]
    assert len(coarse.classes) == 20


def test_garbage_pickle_names_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _pickle(folder / "batches.meta", {"label_names": ["a"] * 10})
    (folder / "test_batch").write_bytes(b"\x80\x02garbage, not a pickle at all")
    with pytest.raises(DataError, match=r"test_batch: not a valid CIFAR pickle"):
        read_cifar10(folder, "test")
    _pickle(folder / "test_batch", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(DataError, match=r"test_batch: 'data' must be uint8 \(N, 3072\)"):
        read_cifar10(folder, "test")


class _Exploit:
    def __reduce__(self):  # unpickling this would call os.system
        return (__import__("os").system, ("true",))


def test_pickle_refuses_arbitrary_globals(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _pickle(folder / "batches.meta", {"label_names": _Exploit()})
    with pytest.raises(DataError, match=r"batches\.meta: .*refusing to load"):
        read_cifar10(tmp_path, "train")


def test_cifar_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no batches.meta here nor in a cifar-10-batches-py"):
        read_cifar10(tmp_path)


# ---------------------------------------------------------------- STL-10


def _write_stl(folder: Path, part: str, images: np.ndarray, labels: list[int] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # The files store each channel column-major: the transpose of the upright image.
    (folder / f"{part}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
    if labels is not None:
        (folder / f"{part}_y.bin").write_bytes(bytes(labels))


def test_stl10_synthetic_all_splits(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    unlabeled = rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)
    _write_stl(folder, "train", train, [1, 10, 4])
    _write_stl(folder, "unlabeled", unlabeled, None)
    (folder / "class_names.txt").write_text("\n".join(f"n{i}" for i in range(10)) + "\n")
    data = read_stl10(tmp_path, "train")
    assert torch.equal(data.images, torch.from_numpy(train))
    assert data.labels is not None and data.labels.tolist() == [0, 9, 3]
    assert data.classes[0] == "n0" and data.name == "stl10/train"
    both = read_stl10(folder, "train+unlabeled", progress=False)
    assert both.labels is None and len(both) == 5
    assert torch.equal(both.images[3:], torch.from_numpy(unlabeled))


def test_stl10_corrupt(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    _write_stl(folder, "train", np.zeros((2, 3, 96, 96), np.uint8), [1, 11])
    with pytest.raises(DataError, match=r"train_y\.bin: expected 2 labels in 1\.\.10"):
        read_stl10(folder, "train")
    (folder / "train_X.bin").write_bytes(bytes(1000))
    with pytest.raises(DataError, match=r"train_X\.bin: 1000 bytes is not a whole number"):
        read_stl10(folder, "train")
    with pytest.raises(DataError, match="unknown STL-10 split 'val'"):
        read_stl10(folder, "val")


# ---------------------------------------------------------------- ImageSet


def test_imageset_subset_and_checks() -> None:
    data = ImageSet(torch.arange(24, dtype=torch.uint8).view(6, 1, 2, 2),
                    torch.tensor([0, 1, 0, 1, 0, 1]), ["a", "b"], "toy")
    part = data.subset(torch.tensor([5, 0]))
    assert len(part) == 2 and part.labels is not None and part.labels.tolist() == [1, 0]
    assert part.images[0, 0, 0, 0] == 20 and part.classes == ["a", "b"]
    assert len(data.subset(data.labels == 1)) == 3
    with pytest.raises(DataError, match="toy: images must be uint8"):
        ImageSet(torch.zeros(2, 1, 2, 2), None, [], "toy")
    with pytest.raises(DataError, match="toy: labels must be int64"):
        ImageSet(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3).long(), [], "toy")
