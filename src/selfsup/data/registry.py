"""Data sets by name: official files, sizes, checksums, download sources, and `load_dataset`.

Checksums are checked on load only for files whose size equals the official size: a file of
another size is not the official file (e.g. the shared CIFAR-10 first-1000-per-batch subset), so
it gets a warning instead, and its structure is still checked by the reader.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.data.download import default_cache_dir, download_file, extract_archive, verify_file
from selfsup.data.sources import (
    ImageSet,
    locate_data_folder,
    read_cifar10,
    read_cifar100,
    read_idx_pair,
    read_stl10,
)
from selfsup.errors import ConfigError, DataError


@dataclass(frozen=True)
class FileInfo:
    """One official file: name inside the data folder, bytes and checksums (None if unknown)."""

    name: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    unpacked_sha256: str | None = None  # of the decompressed twin of a .gz file


@dataclass(frozen=True)
class DatasetInfo:
    """What `load_dataset` knows about one data set."""

    name: str
    kind: str  # reader: "idx", "cifar10", "cifar100", "stl10", "folder"
    splits: Mapping[str, tuple[str, ...]]  # split -> the files it reads (first one: images)
    files: tuple[FileInfo, ...] = ()  # official files, checked on load
    urls: tuple[str, ...] = ()  # download prefixes (mirrors), tried in order
    archive: FileInfo | None = None  # downloaded and extracted instead of single files
    folder: str = ""  # sub-folder the archive unpacks to, e.g. "cifar-10-batches-py"
    classes: tuple[str, ...] = ()
    packaged: bool = False  # ships inside selfsup: `root` is ignored


def _idx_splits() -> dict[str, tuple[str, ...]]:
    return {s: (f"{s2}-images-idx3-ubyte.gz", f"{s2}-labels-idx1-ubyte.gz")
            for s, s2 in (("train", "train"), ("test", "t10k"))}


def _official(name: str) -> tuple[FileInfo, ...]:
    """The official files of ``name`` (sizes, md5, sha256) from ``checksums.json``."""
    table = json.loads((Path(__file__).resolve().parent / "checksums.json").read_text())
    return tuple(FileInfo(**f) for f in table[name])


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
SAMPLE_ROOT = Path(__file__).resolve().parent / "sample" / "fashion-mnist"
_KRIZ = "https://www.cs.toronto.edu/~kriz/"

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("mnist", "idx", _idx_splits(), files=_official("mnist"),
                urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
                classes=tuple(str(d) for d in range(10))),
    DatasetInfo("fashion-mnist", "idx", _idx_splits(), files=_official("fashion-mnist"),
                urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
                classes=FASHION_CLASSES),
    # The embedded sample (tools/make_sample.py): first 1600 train / 400 test images.
    DatasetInfo("fashion-mnist-sample", "idx", _idx_splits(),
                files=_official("fashion-mnist-sample"), classes=FASHION_CLASSES, packaged=True),
    DatasetInfo("cifar10", "cifar10", {
        "train": (*(f"data_batch_{i}" for i in range(1, 6)), "batches.meta"),
        "test": ("test_batch", "batches.meta"),
    }, files=_official("cifar10"), urls=(_KRIZ,), folder="cifar-10-batches-py",
        archive=FileInfo("cifar-10-python.tar.gz", 170498071, "c58f30108f718f92721af3b95e74349a")),
    DatasetInfo("cifar100", "cifar100", {"train": ("train", "meta"), "test": ("test", "meta")},
                urls=(_KRIZ,), archive=FileInfo("cifar-100-python.tar.gz",
                                                md5="eb9058c3a382ffc7106e4002c42a8d85"),
                folder="cifar-100-python"),
    DatasetInfo("stl10", "stl10", {
        "train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
        "unlabeled": ("unlabeled_X.bin",), "train+unlabeled": ("train_X.bin", "unlabeled_X.bin"),
    }, files=(  # sizes follow from the format: N x 3x96x96 bytes, N label bytes
        FileInfo("train_X.bin", 5000 * 27648), FileInfo("train_y.bin", 5000),
        FileInfo("test_X.bin", 8000 * 27648), FileInfo("test_y.bin", 8000),
        FileInfo("unlabeled_X.bin", 100000 * 27648),
    ), urls=("http://ai.stanford.edu/~acoates/stl10/",),
        archive=FileInfo("stl10_binary.tar.gz", md5="91f7769df0f17e558f3565bffb0c7dfb"),
        folder="stl10_binary", classes=("airplane", "bird", "car", "cat", "deer", "dog",
                                        "horse", "monkey", "ship", "truck")),
    DatasetInfo("folder", "folder", {}),  # packed once into a store: train (+ test/val)
    DatasetInfo("store", "store", {}),  # a store written by `selfsup pack`
)}


def _present(folder: Path, name: str) -> Path | None:
    """``folder/name``, or its decompressed twin for ``.gz`` names (torchvision keeps both)."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(folder: Path, split: str, info: DatasetInfo) -> ImageSet:
    images, labels = (_present(folder, f) or folder / f for f in info.splits[split])
    return read_idx_pair(images, labels, name=f"{info.name}/{split}", classes=list(info.classes))


_READERS: dict[str, Callable[[Path, str, DatasetInfo], ImageSet]] = {
    "idx": _read_idx,
    "cifar10": lambda folder, split, info: read_cifar10(folder, split),
    "cifar100": lambda folder, split, info: read_cifar100(folder, split),
    "stl10": lambda folder, split, info: read_stl10(folder, split, classes=list(info.classes)),
}


def _data_folder(info: DatasetInfo, root: Path, split: str) -> Path:
    """The folder holding the split's files: root, or the archive's folder (also ``folder*``)."""
    if not info.folder:
        return root
    return locate_data_folder(root, info.splits[split][0], info.folder) or root / info.folder


def _fetch(info: DatasetInfo, root: Path, missing: list[str], base_url: str | None) -> None:
    """Download the missing files (or the archive, then extract it) into ``root``."""
    prefixes = [base_url] if base_url else list(info.urls)
    official = {f.name: f for f in info.files}
    targets = [info.archive] if info.archive else [official[name] for name in missing]
    for spec in targets:
        dest = root / spec.name
        if dest.is_file():  # an archive kept from an earlier download: check, don't refetch
            verify_file(dest, md5=spec.md5, sha256=spec.sha256, size=spec.size)
            continue
        errors = []
        for prefix in prefixes:
            try:
                download_file(f"{prefix.rstrip('/')}/{spec.name}", dest, md5=spec.md5,
                              sha256=spec.sha256, size=spec.size)
                break
            except DataError as exc:
                errors.append(str(exc))
        else:
            raise DataError("; ".join(errors) or f"{info.name}: no download URL known")
    if info.archive:
        extract_archive(root / info.archive.name, root)


def _verify(info: DatasetInfo, folder: Path, names: tuple[str, ...], strict: bool = True) -> None:
    """Checksum the official files. A file whose size says it is not the official one is an
    error (``strict``: e.g. another data set's files under this name), else a warning."""
    official = {f.name: f for f in info.files}
    unofficial = []
    for name in names:
        spec, path = official.get(name), folder / name
        if spec is not None and not path.is_file() and spec.unpacked_sha256:
            _verify_twin(info, folder / name.removesuffix(".gz"), spec, strict)
        if spec is None or not path.is_file():
            continue
        size = path.stat().st_size
        if spec.size is not None and size != spec.size:
            unofficial.append(f"{name} ({size} bytes, official {spec.size})")
            continue
        # Never write into the installed package: the sample is small enough to hash each time.
        verify_file(path, md5=spec.md5, sha256=spec.sha256, remember=not info.packaged)
    if unofficial and strict:
        raise DataError(f"{folder / unofficial[0].split(' ')[0]}: not the official {info.name} "
                        f"file ({unofficial[0].split(' ', 1)[1][1:-1]}); point data.root at "
                        f"the {info.name} files, or pass --data.verify warn for a deliberate "
                        "partial copy (its structure is still checked)")
    if unofficial:
        more = f" and {len(unofficial) - 1} more files" if len(unofficial) > 1 else ""
        warnings.warn(f"{info.name}: {folder} is not the official full set: {unofficial[0]}"
                      f"{more} differ in size from the official files, so no checksum is "
                      "checked (the structure still is)", UserWarning, stacklevel=3)


def _verify_twin(info: DatasetInfo, twin: Path, spec: FileInfo, strict: bool) -> None:
    """The decompressed twin of an official .gz file against the official content's hash
    (MNIST and Fashion-MNIST twins have the same sizes: only the hash tells them apart)."""
    if not twin.is_file():
        return
    try:
        verify_file(twin, sha256=spec.unpacked_sha256, remember=not info.packaged)
    except DataError as exc:
        if strict:
            raise DataError(f"{exc}; point data.root at the {info.name} files, or pass "
                            "--data.verify warn for a deliberate copy") from None
        warnings.warn(f"{info.name}: {exc}", UserWarning, stacklevel=4)


def _resize(data: ImageSet, size: int) -> ImageSet:
    """Resample every image to size x size (bilinear, antialiased), in chunks to bound memory."""
    if tuple(data.images.shape[-2:]) == (size, size):
        return data
    chunks = [F.interpolate(block.float(), size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
              for block in data.images.split(4096)]
    return ImageSet(torch.cat(chunks), data.labels, data.classes, data.name)


def load_dataset(name: str, root: str | Path | None = None, split: str = "train", *,
                 download: bool = False, cache_dir: str | Path | None = None,
                 size: int | None = None, verify: bool | str = True,
                 base_url: str | None = None, store_dir: str | Path | None = None,
                 pack_workers: int | None = None, decoder: str = "pil",
                 progress: bool = True) -> ImageSet:
    """Load one split of a named data set as an :class:`ImageSet`.

    Args:
        name: a key of :data:`DATASETS` (``fashion-mnist``, ``mnist``, ``cifar10``,
            ``cifar100``, ``stl10``, ``folder``, ``store``, ``fashion-mnist-sample``).
        root: the folder holding the files (for CIFAR/STL-10 also the folder holding the
            extracted ``cifar-10-batches-py``-style folder); default ``cache_dir/<name>``.
            Ignored for the packaged sample; required for ``folder`` and ``store``.
        split: ``train`` or ``test``; STL-10 also ``unlabeled`` and ``train+unlabeled``; a
            ``folder`` has ``test`` when it holds ``train/`` and ``test/`` (or ``val/``).
        download: fetch missing files from the official URLs (or ``base_url``) into root.
        cache_dir: default parent of root; default :func:`default_cache_dir`.
        size: output side in pixels (resizes); for ``folder``: the packed side (shorter side
            resized, centre crop; None: :func:`selfsup.data.pack.auto_size`).
        verify: checksum official files (results cached in ``<data cache>/verified``); a file of
            another size than the official one is an error, or a warning with ``"warn"``
            (partial copies such as the CIFAR-10 first-1000 subset); False checks nothing.
        base_url: replaces the official URL prefix, e.g. a local mirror.
        store_dir, pack_workers, decoder, progress: where and how a ``folder`` is packed.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    info = DATASETS[name]
    if info.kind in ("folder", "store"):
        from selfsup.data.store import load_folder, open_store, store_split_name

        if root is None:
            raise DataError(f"{name}: no root given; pass root (the data.root setting)")
        if info.kind == "store":
            data = open_store(root, store_split_name(split))
            if size is not None and size != data.size:
                raise DataError(f"{root}: the store holds {data.size} px images, not {size}; "
                                "pack it again at that size (training crops from the stored "
                                "side, so data.size may be smaller)")
            return data
        return load_folder(root, split, size=size, cache_dir=store_dir, workers=pack_workers,
                           decoder=decoder, progress=progress)
    if split not in info.splits:
        raise DataError(f"{name}: unknown split {split!r}; known: {', '.join(info.splits)}")
    if info.packaged:
        root = SAMPLE_ROOT
    elif root is None:
        root = Path(cache_dir or default_cache_dir()).expanduser() / name
    root = Path(root).expanduser()
    if not root.exists() and not download:
        raise DataError(f"{root}: data folder for {name} does not exist; pass download=True "
                        f"(CLI: --data.download true) or set data.root to the {name} folder")
    folder = _data_folder(info, root, split)
    missing = [f for f in info.splits[split] if _present(folder, f) is None]
    if missing and download and not info.packaged:
        _fetch(info, root, missing, base_url)
        folder = _data_folder(info, root, split)
        missing = [f for f in info.splits[split] if _present(folder, f) is None]
    if missing:
        raise DataError(f"{folder / missing[0]}: {name} file missing; pass download=True "
                        f"(CLI: --data.download true) or set data.root to the {name} folder")
    if verify:
        _verify(info, folder, info.splits[split], strict=verify is True)
    data = _READERS[info.kind](folder, split, info)
    return _resize(data, size) if size is not None else data
