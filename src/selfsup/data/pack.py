"""``selfsup pack``: decode an image folder once into a packed, memory-mapped store.

Worker processes decode chunks of files (:func:`selfsup.data.decode.decode`) and write each
chunk's rows straight into a preallocated uint8 (N, C, S, S) file per split with one
``pwrite``: memory stays bounded by a chunk per worker whatever N is. Every finished chunk is
appended to ``progress.jsonl`` after its rows are written, so a killed pack resumes where it
stopped. Files that fail to decode are listed with their reason in ``skipped.jsonl`` and their
rows are squeezed out at the end. ``meta.json`` is written last, atomically: a store without it
is never read as complete (:mod:`selfsup.data.store`).

Layout of a store folder::

    meta.json                  format, settings, listing hash, splits, classes (written last)
    <split>/images.u8          raw uint8 (N, C, S, S), row-major
    <split>/labels.npy         int64 (N,), labelled splits only
    <split>/files.txt          source file of each row, relative to the packed folder
    <split>/skipped.jsonl      {"file": ..., "reason": ...} per file left out
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from selfsup.data.decode import DECODERS, GRAY_MODES
from selfsup.data.folder import Listing, list_splits, listing_hash
from selfsup.data.pack_jobs import (
    ProgressLog,
    available_cpus,
    make_pool,
    pack_chunk,
    probe_chunk,
    squeeze,
    write_json,
)
from selfsup.data.pack_out import FORMAT, claimed, clear
from selfsup.errors import ConfigError, DataError

VERSION = 1
MAX_SIZE = 4096  # a stored side above this is surely a typo (100000 px preallocated 1.2 TB)
_pack_chunk = pack_chunk  # looked up here at call time (a test interrupts a pack through it)
# str.splitlines() breaks a name at any of these, and files.txt holds one name per line; a tab
# would make the tab-separated outputs of `selfsup embed` ambiguous
_NAME_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\t")


def auto_size(modes: dict[str, list[str]], cap: int = 224) -> int:
    """The stored side when none is given: the median shorter side of the train images, at
    most ``cap`` (a folder of 32 px icons stays 32 px; photos become 224 px), at least 8."""
    sides = sorted(min(int(v) for v in m.split(" ")[1].split("x"))
                   for m in modes["train"] if m[0] != "!")
    return max(8, min(cap, sides[len(sides) // 2])) if sides else cap


def pack_folder(src: str | Path, out: str | Path, size: int | str, *, workers: int | None = None,
                channels: int | str = "auto", decoder: str = "pil", chunk: int = 64,
                progress: bool = True) -> Path:
    """Pack the image folder ``src`` into the store folder ``out``; returns ``out``.

    Args:
        src: class sub-folders, flat images, or ``train/`` + ``test/`` (or ``val/``) splits.
        out: the store folder (new, empty, or a store of the same listing to resume).
        size: stored side S: shorter side resized to S (antialiased), centre crop; ``auto``:
            :func:`auto_size` of the images.
        workers: decoding processes (default: the CPUs available; 0 decodes in this process).
        channels: 1, 3, or ``auto`` (1 when every image is gray, from the file headers).
        decoder: ``pil``, or ``simplejpeg`` for JPEGs (``pip install selfsup[fast-jpeg]``).
        chunk: files per job; a killed pack loses at most one chunk per worker.
    """
    src, out = Path(src).expanduser(), Path(out).expanduser()
    _check_settings(size, channels, decoder, workers)
    workers = available_cpus() if workers is None else int(workers)
    splits = list_splits(src)
    settings = {"format": FORMAT, "version": VERSION, "size": size, "channels": channels,
                "decoder": decoder}
    digest = listing_hash(src, splits, settings)
    if _finished(out, digest):
        return out  # already packed from exactly these files and settings
    try:
        with claimed(src, out, progress):  # refuses folders it must not write; one pack at once
            if not _finished(out, digest):  # the pack we waited for may have made it
                _pack(src, out, splits, settings, digest, workers, chunk, progress)
    except OSError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{exc.filename or out}: {exc.strerror or exc} (packing into {out})") \
            from None
    return out


def _finished(out: Path, digest: str) -> bool:
    return _recorded_hash(out / "meta.json") == digest


def _recorded_hash(record: Path) -> str | None:
    """The listing hash a store's ``meta.json`` / ``state.json`` names (None if unreadable)."""
    try:
        return json.loads(record.read_text()).get("listing_hash")
    except (OSError, ValueError, AttributeError):
        return None


def _pack(src: Path, out: Path, splits: dict[str, Listing], settings: dict, digest: str,
          workers: int, chunk: int, progress: bool) -> None:
    size, channels, decoder = settings["size"], settings["channels"], settings["decoder"]
    state = _start_or_resume(src, out, digest, settings)
    log = ProgressLog(out / "progress.jsonl")
    pool = make_pool(workers)
    try:
        modes = _probe(src, splits, log, pool, chunk, progress)
        c = channels if channels != "auto" else (
            1 if all(m.split(" ")[0] in GRAY_MODES for ms in modes.values() for m in ms
                     if m[0] != "!") else 3)
        size = auto_size(modes) if size == "auto" else size
        _check_space(out, modes, c * size * size)
        results = {s: _pack_split(src, out, s, splits[s], modes[s], size, c, decoder, log,
                                  pool, chunk, progress) for s in splits}
    finally:
        log.close()
        if pool is not None:
            pool.terminate()
    meta = {"format": FORMAT, "version": VERSION, "listing_hash": digest,
            "source": str(src.resolve()), "settings": settings, "size": size, "channels": c,
            "classes": splits["train"].classes, "splits": results,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(out / "meta.json", meta)  # last: its presence means the store is complete
    state.unlink(missing_ok=True)
    (out / "progress.jsonl").unlink(missing_ok=True)


def _check_space(out: Path, modes: dict[str, list[str]], row: int) -> None:
    """Refuse before preallocating: a sparse file would only fail (or fill the disk) later."""
    need = sum(row * sum(m[0] != "!" for m in ms) for ms in modes.values())
    have = sum((out / s / "images.u8").stat().st_size for s in modes
               if (out / s / "images.u8").is_file())
    free = shutil.disk_usage(out).free
    if need - have > free:
        raise DataError(f"{out}: the store needs {need / 1e9:.2f} GB and its disk has "
                        f"{free / 1e9:.2f} GB free; choose a smaller --size or another disk")


def _check_settings(size, channels, decoder: str, workers: int | None) -> None:
    if size != "auto" and (not isinstance(size, int) or isinstance(size, bool) or size < 8):
        raise ConfigError(f"pack size must be an integer >= 8 (the stored side), got {size!r}")
    if size != "auto" and size > MAX_SIZE:
        raise ConfigError(f"pack size must be <= {MAX_SIZE} (the stored side in pixels), got "
                          f"{size}")
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers
                                or workers < 0):
        raise ConfigError(f"pack workers must be an integer >= 0 (0: decode in this process), "
                          f"got {workers!r}")
    if channels not in (1, 3, "auto"):
        raise ConfigError(f"pack channels must be 1, 3 or auto, got {channels!r}")
    if decoder not in DECODERS:
        raise ConfigError(f"pack decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "simplejpeg":
        try:
            import simplejpeg  # noqa: F401
        except ImportError:
            raise ConfigError("decoder simplejpeg is not installed: "
                              "pip install 'selfsup[fast-jpeg]'") from None


def _start_or_resume(src: Path, out: Path, digest: str, settings: dict) -> Path:
    """``state.json`` of a pack of this listing: the interrupted one's, or a fresh start."""
    state = out / "state.json"
    if _recorded_hash(state) != digest:
        clear(out)  # another listing or other settings: start over (only our own files)
        write_json(state, {"listing_hash": digest, "source": str(src.resolve()),
                           "settings": settings})
    return state


def _probe(src: Path, splits: dict[str, Listing], log: ProgressLog, pool, chunk: int,
           progress: bool) -> dict[str, list[str]]:
    """Every file's mode (or ``!reason``) from its header; recorded once, reused on resume."""
    done = next((r["probe"] for r in log.records if "probe" in r), None)
    if done is not None:
        return done
    modes = {}
    for split, listing in splits.items():
        named = {i: why for i, f in enumerate(listing.files) if (why := _bad_name(f))}
        paths = [str(src / f) for i, f in enumerate(listing.files) if i not in named]
        jobs = [(paths[i:i + chunk],) for i in range(0, len(paths), chunk)]
        it = pool.imap(probe_chunk, jobs) if pool is not None else map(probe_chunk, jobs)
        found = []
        with tqdm(total=len(paths), desc=f"reading headers ({split})", unit="img",
                  disable=not progress, leave=False) as bar:
            for res in it:
                found += res
                bar.update(len(res))
        probed = iter(found)
        modes[split] = [f"!{named[i]}" if i in named else next(probed)
                        for i in range(len(listing.files))]
    log.add({"probe": modes})
    return modes


def _bad_name(rel: str) -> str | None:
    """Why a file name cannot be one line of ``files.txt`` (None when it can)."""
    breaks = sorted(set(rel) & _NAME_BREAKS)
    if breaks:
        return (f"file name holds {', '.join(repr(b) for b in breaks)} (a line break or tab); "
                "rename the file to pack it")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename the file to pack it"
    return None


def _pack_split(src: Path, out: Path, split: str, listing: Listing, modes: list[str],
                size: int, channels: int, decoder: str, log: ProgressLog, pool, chunk: int,
                progress: bool) -> dict:
    """Decode one split into ``out/split``; returns its entry of meta.json."""
    folder = out / split
    folder.mkdir(exist_ok=True)
    keep = [i for i, m in enumerate(modes) if m[0] != "!"]
    skipped = [{"file": listing.files[i], "reason": modes[i][1:]}
               for i, m in enumerate(modes) if m[0] == "!"]
    if not keep:
        raise DataError(f"{src / listing.folder}: none of the {len(modes)} image files can be "
                        f"read (first: {skipped[0]['file']}: {skipped[0]['reason']})")
    target = folder / "images.u8"
    row = channels * size * size
    compacted = any(r.get("compacted") == split for r in log.records)
    # a split squeezed before the kill holds only its good rows: keep them (re-creating the
    # file here zeroed a finished split that nothing would decode again)
    if not compacted and (not target.is_file() or target.stat().st_size != len(keep) * row):
        with open(target, "wb") as f:  # preallocated, sparse until written
            f.truncate(len(keep) * row)
    records = [r for r in log.records if r.get("chunk", [None])[0] == split]
    if any(r.get("compact") == split for r in log.records) and \
            not any(r.get("compacted") == split for r in log.records):
        records = []  # killed while squeezing out bad rows: the rows moved, decode them again
    done = {r["chunk"][1]: r for r in records}
    paths = [str(src / listing.files[i]) for i in keep]
    starts = range(0, len(keep), chunk)
    jobs = [((split, i // chunk), str(target), i, paths[i:i + chunk], size, channels, decoder)
            for i in starts if i // chunk not in done]
    with tqdm(total=len(keep), initial=len(keep) - sum(len(j[3]) for j in jobs),
              desc=f"packing {split} at {size} px", unit="img", disable=not progress,
              dynamic_ncols=True) as bar:
        it = pool.imap_unordered(_pack_chunk, jobs) if pool is not None else map(_pack_chunk,
                                                                                 jobs)
        for key, bad, hist in it:
            rec = {"chunk": list(key), "bad": bad, "hist": hist}
            log.add(rec)
            done[key[1]] = rec
            bar.update(len(paths[key[1] * chunk:(key[1] + 1) * chunk]))
    holes = sorted(c * chunk + i for c, r in done.items() for i, _ in r["bad"])
    skipped += [{"file": listing.files[keep[c * chunk + i]], "reason": why}
                for c, r in sorted(done.items()) for i, why in r["bad"]]
    good = [k for j, k in enumerate(keep) if j not in set(holes)]
    if not good:
        raise DataError(f"{src / listing.folder}: none of the {len(modes)} image files decodes "
                        f"(first: {skipped[0]['file']}: {skipped[0]['reason']})")
    if compacted and (not target.is_file() or target.stat().st_size != len(good) * row):
        raise DataError(f"{out}: {split}/images.u8 was changed after packing; delete {out} "
                        "and pack again")
    if holes and not compacted:
        log.add({"compact": split})
        squeeze(target, len(keep), row, holes)
        log.add({"compacted": split})
    hist = np.sum([r["hist"] for r in done.values()], 0, dtype=np.float64)  # C x 256
    values = np.arange(256) / 255.0
    pixels = hist.sum(1)
    mean = hist @ values / pixels
    var = hist @ np.square(values) / pixels - np.square(mean)
    (folder / "files.txt").write_text("".join(listing.files[k] + "\n" for k in good),
                                      encoding="utf-8")
    (folder / "skipped.jsonl").write_text("".join(json.dumps(s) + "\n" for s in skipped))
    if listing.labels is not None:
        np.save(folder / "labels.npy", np.array([listing.labels[k] for k in good], np.int64))
    return {"images": len(good), "labelled": listing.labels is not None,
            "source_folder": listing.folder, "skipped": len(skipped),
            "mean": [round(float(m), 6) for m in mean],
            "std": [round(float(max(v, 0.0)) ** 0.5, 6) for v in var]}
