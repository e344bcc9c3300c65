"""Packed stores: open one as an :class:`ImageSet` over a memory map; pack a folder on first use.

A store (written by :func:`selfsup.data.pack.pack_folder`) is complete only when its
``meta.json`` exists; :func:`open_store` refuses anything else. Opening maps
``<split>/images.u8`` copy-on-write: no byte is read until a batch indexes it, every process
on a node that maps the file shares the same page-cache copy, and opening takes the same time
for ten thousand images as for a million.

:func:`ensure_store` is what ``data.dataset: folder`` does: find the cached store of that
folder at that size (``data.cache_dir``, keyed by the folder's path and the settings), check
it was packed from exactly the current listing (else repack), and pack it if needed. Under
``torchrun`` the first process of each node packs while the others wait on the file marker
``meta.json`` (not on a collective, which would time out on a long pack); an exclusive file
lock keeps two runs started at once from packing the same folder twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from selfsup.data.image_source import ImageSet
from selfsup.data.pack import FORMAT, VERSION, pack_folder
from selfsup.errors import DataError


def read_meta(path: str | Path) -> dict:
    """The ``meta.json`` of a complete store; DataError naming what is wrong otherwise."""
    path = Path(path).expanduser()
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        if (path / "state.json").is_file():
            raise DataError(f"{path}: packing was interrupted (no meta.json); run "
                            f"`selfsup pack SRC {path} --size S` again to finish it")
        raise DataError(f"{path}: not a packed store (no meta.json); make one with "
                        "`selfsup pack SRC OUT --size S`")
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, OSError) as exc:  # JSON, UTF-8, or a read error (EISDIR, EACCES...)
        why = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:120]
        raise DataError(f"{meta_file}: unreadable store metadata ({why})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_file}: store metadata is a {type(meta).__name__}, not an object; "
                        "the store is damaged, pack it again")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"{meta_file}: not a {FORMAT} v{VERSION} store "
                        f"(format {meta.get('format')!r} v{meta.get('version')!r})")
    _check_meta(meta, meta_file)
    return meta


def _check_meta(meta: dict, meta_file: Path) -> None:
    """Every field a reader relies on, with its type and range (a hand-edited or damaged
    meta.json once surfaced as a KeyError / ValueError traceback deep in open_store)."""
    def bad(what: str) -> DataError:
        return DataError(f"{meta_file}: {what}; the store is damaged, pack it again")

    def count(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if meta.get("channels") not in (1, 3) or isinstance(meta.get("channels"), bool):
        raise bad(f"channels is {meta.get('channels')!r}, not 1 or 3")
    if not count(meta.get("size")) or meta["size"] < 1:
        raise bad(f"size is {meta.get('size')!r}, not a positive integer")
    classes = meta.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("classes is not a list of names")
    splits = meta.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise bad("it lists no splits")
    for name, info in splits.items():
        if not isinstance(info, dict) or not count(info.get("images")):
            raise bad(f"split {name!r} has no image count (a non-negative integer)")
        for key in ("mean", "std"):
            v = info.get(key)
            if v is None:
                continue
            if not (isinstance(v, list) and len(v) == meta["channels"] and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    and (x >= 0 if key == "std" else True) for x in v)):
                raise bad(f"split {name!r} {key} is {v!r}, not {meta['channels']} finite "
                          + ("non-negative numbers" if key == "std" else "numbers"))


def open_store(path: str | Path, split: str = "train") -> ImageSet:
    """One split of a packed store as an :class:`ImageSet` whose images are a memory map."""
    path = Path(path).expanduser()
    meta = read_meta(path)
    if split not in meta["splits"]:
        raise DataError(f"{path}: no {split!r} split (the store has "
                        f"{', '.join(meta['splits'])})")
    info, c, s = meta["splits"][split], int(meta["channels"]), int(meta["size"])
    n, file = int(info["images"]), path / split / "images.u8"
    if n == 0:
        raise DataError(f"{path}: the {split!r} split holds no images; pack it again")
    if not file.is_file() or file.stat().st_size != n * c * s * s:
        raise DataError(f"{file}: expected {n} x {c} x {s} x {s} bytes; the store is damaged, "
                        "pack it again")
    # copy-on-write: torch wants a writable array, and nothing must reach the file
    images = torch.from_numpy(np.memmap(file, np.uint8, "c", shape=(n, c, s, s)))
    labels = None
    if info.get("labelled"):
        labels = torch.from_numpy(_labels(path / split / "labels.npy", n,
                                          len(meta.get("classes", []))))
    files = _files(path / split / "files.txt", n)
    stats = (tuple(info["mean"]), tuple(info["std"])) if "mean" in info else None
    name = f"store:{Path(meta.get('source', path)).name}/{split}"
    return ImageSet(images, labels, list(meta.get("classes", [])), name, files, stats,
                    mapped=True)


def _labels(file: Path, n: int, classes: int) -> np.ndarray:
    """``labels.npy``: n integer labels in [0, classes); never unpickles anything."""
    try:
        labels = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # missing, garbage, pickled, truncated
        why = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:100]
        raise DataError(f"{file}: unreadable labels ({why}); the store is damaged, pack it "
                        "again") from None
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise DataError(f"{file}: {labels.dtype} labels of shape {labels.shape}, expected {n} "
                        "integers; the store is damaged, pack it again")
    if n and (labels.min() < 0 or (classes and labels.max() >= classes)):
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise DataError(f"{file}: label {bad} is outside the {classes} classes [0, {classes}) "
                        "of meta.json; the store is damaged, pack it again")
    return labels.astype(np.int64)


def _files(file: Path, n: int) -> list[str]:
    """``files.txt``: one name per row (names never hold a line break: pack skips those)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DataError(f"{file}: unreadable file list ({why}); the store is damaged, pack it "
                        "again") from None
    names = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []
    if len(names) != n:
        raise DataError(f"{file}: {len(names)} file names for {n} images; the store is damaged, "
                        "pack it again")
    return names


def cache_path(src: str | Path, size: int, cache_dir: str | Path, channels="auto",
               decoder: str = "pil") -> Path:
    """The cached store of folder ``src`` at these settings: ``<cache>/<name>-<key>``."""
    src = Path(src).expanduser().resolve()
    key = hashlib.sha256(f"{src}|{size}|{channels}|{decoder}".encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{src.name}-{size}px-{key}"


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _launch_token() -> str:
    """Names this torchrun launch (and restart), so a marker left by an earlier one never counts."""
    env = os.environ
    return "|".join(env.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                                             "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"))


def ensure_store(src: str | Path, size: int, cache_dir: str | Path, *, channels="auto",
                 decoder: str = "pil", workers: int | None = None, progress: bool = True,
                 poll_s: float = 1.0) -> Path:
    """The packed store of folder ``src`` at side ``size``, packing (or repacking) it if the
    cache holds none made from the current files; returns its folder."""
    out = cache_path(src, size, cache_dir, channels, decoder)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out.parent}: cannot create the store cache ({exc.strerror or exc}); "
                        "set data.cache_dir (or $SELFSUP_STORES) to a writable folder") from None
    if _local_rank() != 0:
        return _wait_for(out, poll_s)
    failed = out.with_name(out.name + ".failed")
    try:
        failed.unlink(missing_ok=True)
        lock = open(out.with_name(out.name + ".lock"), "w")
    except OSError as exc:
        raise DataError(f"{out.parent}: cannot write to the store cache ({exc.strerror or exc}); "
                        "set data.cache_dir (or $SELFSUP_STORES) to a writable folder") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run packing the same folder: wait for it
        try:
            # pack_folder returns at once when meta.json matches the current listing
            pack_folder(src, out, size, workers=workers, channels=channels, decoder=decoder,
                        progress=progress)
        except BaseException as exc:
            # the waiting ranks stop too, with this error
            failed.write_text(f"{_launch_token()}\n{type(exc).__name__}: {exc}")
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    (out / ".ready").write_text(_launch_token())
    return out


def _wait_for(out: Path, poll_s: float) -> Path:
    """Wait for local rank 0 to finish packing: ``.ready`` written after its check, or a
    ``.failed`` marker (its error). torchrun stops the group if rank 0 dies outright."""
    failed, ready, token = out.with_name(out.name + ".failed"), out / ".ready", _launch_token()
    while True:
        if _read(ready) == token and (out / "meta.json").is_file():
            return out
        head, _, error = _read(failed).partition("\n")
        if head == token:
            raise DataError(f"packing {out} failed on local rank 0: {error}")
        time.sleep(poll_s)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def default_store_cache() -> Path:
    """Where packed folders go: ``$SELFSUP_STORES``, else ``<data cache>/stores``."""
    from selfsup.data.registry import default_cache_dir

    env = os.environ.get("SELFSUP_STORES")
    return Path(env).expanduser() if env else default_cache_dir() / "stores"


def store_split_name(split: str) -> str:
    """``val`` is the folder name; the store calls every held-out split ``test``."""
    return "test" if split == "val" else split


def load_folder(root: str | Path, split: str = "train", *, size: int | str | None = None,
                cache_dir: str | Path | None = None, workers: int | None = None,
                decoder: str = "pil", progress: bool = True) -> ImageSet:
    """One split of an image folder, through its packed store (packed on first use)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: image folder does not exist")
    store = ensure_store(root, size or "auto", cache_dir or default_store_cache(),
                         decoder=decoder, workers=workers, progress=progress)
    split = store_split_name(split)
    meta = read_meta(store)
    if split not in meta["splits"]:
        raise DataError(f"{root}: no {split!r} split (a folder has one when it holds train/ "
                        "and test/ or val/ sub-folders)")
    skipped = meta["splits"][split].get("skipped", 0)
    if skipped and split == "train" and _local_rank() == 0:
        import warnings

        files = "1 file" if skipped == 1 else f"{skipped} files"
        warnings.warn(f"{root}: {files} could not be read and left out; the list with reasons "
                      f"is {store / split / 'skipped.jsonl'}", stacklevel=2)
    return open_store(store, split)
