"""Readers of the binary data set formats: IDX (MNIST, Fashion-MNIST), CIFAR-10/100 python
pickles and STL-10 binaries (image folders: :mod:`selfsup.data.folder`).

Every reader returns an :class:`ImageSet` of uint8 (N, C, H, W) images and checks the structure
as it reads (magic, sizes, shapes, label ranges), so a damaged or truncated file surfaces as one
:class:`~selfsup.errors.DataError` naming that file, never as a traceback from gzip or pickle.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from math import prod
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from selfsup.data.image_source import ImageSet
from selfsup.errors import DataError

__all__ = ["ImageSet", "load_cifar_pickle", "locate_data_folder", "read_cifar10", "read_cifar100",
           "read_idx", "read_idx_pair", "read_stl10"]


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

# IDX type byte -> element type; multi-byte values are big-endian in the file.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for reading, decompressing on the fly when it starts with the gzip magic."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def _fill(f: BinaryIO, buffer: memoryview) -> int:
    """Read into ``buffer`` until it is full or the stream ends; return the bytes read."""
    done = 0
    try:
        while done < len(buffer) and (n := f.readinto(buffer[done:])):
            done += n
    except EOFError:  # gzip stream cut short: report it as truncation, with the count so far
        pass
    return done


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into an array shaped as its header says.

    Magic is ``00 00 <type> <ndim>`` (0x0803 for MNIST images, 0x0801 for labels), then ``ndim``
    big-endian uint32 sizes, then the data. Truncated data, trailing bytes and bad magic raise
    DataError.
    """
    path = Path(path)
    try:
        with _open_binary(path) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES \
                    or not 1 <= magic[3] <= 4:
                raise DataError(f"{path}: not an IDX file: bad magic 0x{magic.hex()} "
                                "(expected 0x00000803 for images or 0x00000801 for labels)")
            if len(raw_dims := f.read(4 * magic[3])) < 4 * magic[3]:
                raise DataError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{magic[3]}I", raw_dims)
            out = np.empty(prod(dims), np.dtype(_IDX_DTYPES[magic[2]]))
            got = _fill(f, memoryview(out).cast("B"))
            if got < out.nbytes:
                raise DataError(f"{path}: truncated IDX file: expected {out.nbytes} bytes of "
                                f"data for shape {dims}, got {got}")
            if f.read(1):
                raise DataError(f"{path}: bytes after the {out.nbytes} the IDX header announces")
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, MemoryError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DataError(f"{path}: cannot read IDX file: {reason}") from exc
    return out.reshape(dims).astype(out.dtype.newbyteorder("="), copy=False)


def read_idx_pair(images_path: str | Path, labels_path: str | Path, *, name: str = "",
                  classes: list[str] | None = None) -> ImageSet:
    """An MNIST-style set from an IDX image file (N, H, W) and an IDX label file (N,)."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{images_path}: expected uint8 images (N, H, W), "
                        f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape} labels for {images.shape[0]} images "
                        f"in {images_path}")
    labels_t = torch.from_numpy(labels.astype(np.int64))
    _check_labels(labels_t, len(classes or []), labels_path)
    return ImageSet(torch.from_numpy(images).unsqueeze(1), labels_t, list(classes or []), name)


def _check_labels(labels: torch.Tensor, num_classes: int, path: Path | str) -> None:
    """Labels must index the class list; a bad one would otherwise crash a loss much later."""
    low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
    if num_classes and (low < 0 or high >= num_classes):
        raise DataError(f"{path}: labels span {low}..{high}, outside 0..{num_classes - 1}")


def locate_data_folder(root: str | Path, marker: str, prefix: str) -> Path | None:
    """The folder holding ``marker``: ``root`` itself or its one sub-folder named ``prefix*``.

    The prefix match accepts both the official name (``cifar-10-batches-py``) and derived
    copies such as ``cifar-10-batches-py-first1000``. None when there is no such folder.
    """
    root = Path(root)
    if (root / marker).is_file():
        return root
    found = sorted(p for p in root.glob(prefix + "*") if (p / marker).is_file())
    if len(found) > 1:
        raise DataError(f"{root}: several data folders ({', '.join(p.name for p in found)}); "
                        "pass the one to use as the root")
    return found[0] if found else None


def _require_folder(root: str | Path, marker: str, prefix: str) -> Path:
    """Like :func:`locate_data_folder`, but a missing folder is an error."""
    if (folder := locate_data_folder(root, marker, prefix)) is None:
        raise DataError(f"{root}: no {marker} here nor in a {prefix}* sub-folder")
    return folder


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers and numpy arrays only: a pickle may call anything it names, and
    these files come from the internet."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),  # py3 bytes
                ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 moved it; no warning
        return super().find_class(module, name)


def load_cifar_pickle(path: str | Path) -> dict[str, object]:
    """One CIFAR pickle as a dict with str keys (the official files have Python 2 byte keys)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except Exception as exc:  # garbage raises UnpicklingError, EOFError, ValueError, KeyError...
        raise DataError(f"{path}: not a valid CIFAR pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (n, 3072) and labels (n,) of one batch file, checked."""
    batch = load_cifar_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: no 'data' or '{label_key}' entry (keys: {sorted(batch)})")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.dtype.kind not in "iu" or labels.shape != (data.shape[0],):
        raise DataError(f"{path}: '{label_key}' must be {data.shape[0]} integers, "
                        f"got {labels.dtype} {labels.shape}")
    return data, labels.astype(np.int64)


def _names(meta_path: Path, key: str) -> list[str]:
    """Class names from a CIFAR meta file."""
    names = load_cifar_pickle(meta_path).get(key)
    if not isinstance(names, list):
        raise DataError(f"{meta_path}: no '{key}' list")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _cifar(folder: Path, files: list[str], label_key: str, classes: list[str],
           name: str) -> ImageSet:
    parts = [_cifar_batch(folder / f, label_key) for f in files]
    # Rows are R(1024) G(1024) B(1024) planes, each row-major: that is already (3, 32, 32).
    images = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    _check_labels(labels, len(classes), folder / files[0])
    return ImageSet(torch.from_numpy(images), labels, classes, name)


def read_cifar10(root: str | Path, split: str = "train") -> ImageSet:
    """CIFAR-10 python version; ``root`` is ``cifar-10-batches-py*`` or a folder holding it."""
    folder = _require_folder(root, "batches.meta", "cifar-10-batches-py")
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    if split not in files:
        raise DataError(f"{folder}: unknown CIFAR-10 split {split!r} (train, test)")
    classes = _names(folder / "batches.meta", "label_names")
    return _cifar(folder, files[split], "labels", classes, f"cifar10/{split}")


def read_cifar100(root: str | Path, split: str = "train", *, coarse: bool = False) -> ImageSet:
    """CIFAR-100 python version (100 fine labels, or the 20 coarse super-classes)."""
    folder = _require_folder(root, "meta", "cifar-100-python")
    if split not in ("train", "test"):
        raise DataError(f"{folder}: unknown CIFAR-100 split {split!r} (train, test)")
    kind = "coarse" if coarse else "fine"
    classes = _names(folder / "meta", f"{kind}_label_names")
    return _cifar(folder, [split], f"{kind}_labels", classes, f"cifar100/{split}")


# ---------------------------------------------------------------- STL-10
_STL_BYTES = 3 * 96 * 96
_STL_PARTS = {"train": ["train"], "test": ["test"], "unlabeled": ["unlabeled"],
              "train+unlabeled": ["train", "unlabeled"]}


def _stl_count(path: Path) -> int:
    """Number of images in an STL-10 ``*_X.bin`` file, from its size."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    size = path.stat().st_size
    if size == 0 or size % _STL_BYTES:
        raise DataError(f"{path}: {size} bytes is not a whole number of 3x96x96 images "
                        f"({_STL_BYTES} bytes each): truncated?")
    return size // _STL_BYTES


def read_stl10(root: str | Path, split: str = "train", *, progress: bool | None = None,
               classes: list[str] | None = None) -> ImageSet:
    """STL-10 binary version; labels 1..10 become 0..9. Splits: train, test, unlabeled,
    train+unlabeled (the last two have labels None)."""
    if split not in _STL_PARTS:
        raise DataError(f"{root}: unknown STL-10 split {split!r} ({', '.join(_STL_PARTS)})")
    parts = _STL_PARTS[split]
    folder = _require_folder(root, f"{parts[0]}_X.bin", "stl10_binary")
    paths = [folder / f"{p}_X.bin" for p in parts]
    counts = [_stl_count(p) for p in paths]
    # Filled chunk by chunk: the unlabeled part is 2.7 GB, so no second full-size copy.
    out = np.empty((sum(counts), 3, 96, 96), np.uint8)
    show = progress if progress is not None else len(out) > 20_000
    start, chunk = 0, 4096
    with tqdm(total=len(out), unit="img", desc=f"stl10/{split}", disable=not show) as bar:
        for path, n in zip(paths, counts):
            with open(path, "rb") as f:
                for lo in range(0, n, chunk):
                    k = min(chunk, n - lo)
                    block = np.fromfile(f, np.uint8, count=k * _STL_BYTES).reshape(k, 3, 96, 96)
                    out[start + lo:start + lo + k] = block.transpose(0, 1, 3, 2)  # column-major
                    bar.update(k)
            start += n
    names_file = folder / "class_names.txt"
    names = names_file.read_text().split() if names_file.is_file() else list(classes or [])
    labels = None
    if split in ("train", "test"):
        label_path = folder / f"{split}_y.bin"
        if not label_path.is_file():
            raise DataError(f"{label_path}: file not found")
        raw = np.fromfile(label_path, np.uint8)
        if raw.shape[0] != counts[0] or (len(raw) and not 1 <= raw.min() <= raw.max() <= 10):
            raise DataError(f"{label_path}: expected {counts[0]} labels in 1..10, got "
                            f"{raw.shape[0]} in {raw.min(initial=0)}..{raw.max(initial=0)}")
        labels = torch.from_numpy(raw.astype(np.int64) - 1)
    return ImageSet(torch.from_numpy(out), labels, names, f"stl10/{split}")
