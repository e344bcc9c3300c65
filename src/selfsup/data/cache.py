"""The store cache: list the image folders packed on first use, and clean it.

``data.dataset: folder`` packs each folder into ``<cache>/<name>-<size>px-<key>``
(:func:`selfsup.data.store.ensure_store`), with a ``.lock`` and, after a failure, a
``.failed`` marker beside it; nothing ever removed them (issue 23 item 9). ``selfsup cache
list`` shows each store, ``selfsup cache clean`` removes the chosen ones.

Only what selfsup wrote is removed: a store folder is recognised by its own marker
(``meta.json`` or ``state.json`` with ``format: selfsup-store``, the test of
:mod:`selfsup.data.pack_out`), and its files are deleted by name, so a folder holding
anything a pack did not write is left whole; a marker file needs the cache's name pattern
and the content selfsup writes. A store being packed (its lock held) is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from selfsup.data.pack_out import LOCK, SCRATCH, _foreign, _marker, clear
from selfsup.errors import DataError

# <folder name>-<size>px-<12 hex digits>: selfsup.data.store.cache_path
NAME = re.compile(r".+-(\d+|auto)px-[0-9a-f]{12}")
MARKERS = (".lock", ".failed")
DAY_S = 86400.0


@dataclass
class CachedStore:
    """One store of the cache: where it came from, its size on disk, when it was last used."""

    path: Path
    source: str | None  # the packed folder (None: a pack killed before it wrote its state)
    size: int | str | None  # stored side in pixels
    finished: bool  # False: an interrupted pack (resumed on next use)
    bytes: int
    last_used: float  # seconds since the epoch
    markers: list[Path] = field(default_factory=list)  # its .lock / .failed beside it


def _bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):  # symlinks are not followed: a store has none
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _mtime(*paths: Path) -> float:
    """The latest modification time of those that exist (``.ready`` is rewritten on each use)."""
    times = []
    for p in paths:
        with contextlib.suppress(OSError):
            times.append(p.lstat().st_mtime)
    return max(times, default=0.0)


def _own_marker(path: Path) -> bool:
    """A ``.lock`` (empty: ensure_store writes nothing into it) or ``.failed`` (a launch
    token line, then ``ExceptionName: message``) that selfsup wrote."""
    if path.is_symlink() or not path.is_file() or not NAME.fullmatch(path.stem):
        return False
    if path.suffix == ".lock":
        return path.stat().st_size == 0
    try:
        _, _, error = path.read_text().partition("\n")
    except (OSError, UnicodeDecodeError):
        return False
    return re.match(r"[A-Za-z_][\w.]*: ", error) is not None


def _store(path: Path) -> CachedStore | None:
    """The store in ``path`` if selfsup wrote it (also a pack killed before its state.json:
    a cache-named folder of scratch files only)."""
    if path.is_symlink() or not path.is_dir():
        return None
    mark = _marker(path)
    if mark is None and not (NAME.fullmatch(path.name) and all(
            p.name in SCRATCH and p.is_file() for p in path.iterdir())):
        return None
    mark = mark or {"finished": False}
    settings = mark.get("settings") if isinstance(mark.get("settings"), dict) else {}
    markers = [m for s in MARKERS if _own_marker(m := path.with_name(path.name + s))]
    used = _mtime(path, *(path / n for n in (".ready", "meta.json", "state.json",
                                              "progress.jsonl")), *markers)
    return CachedStore(path, mark.get("source"), mark.get("size", settings.get("size")),
                       mark["finished"], _bytes(path), used, markers)


def scan(cache: Path) -> tuple[list[CachedStore], list[Path]]:
    """The stores of ``cache`` (oldest use first) and the markers no store owns any more."""
    if not cache.exists():
        return [], []
    if not cache.is_dir():
        raise DataError(f"{cache}: the store cache is not a folder")
    try:
        entries = sorted(cache.iterdir())
    except OSError as e:
        raise DataError(f"{cache}: cannot read the store cache ({e.strerror or e})") from None
    stores = [s for e in entries if (s := _store(e)) is not None]
    owned = {m for s in stores for m in s.markers}
    orphans = [e for e in entries if e.suffix in MARKERS and e not in owned
               and not e.with_suffix("").is_dir() and _own_marker(e)]
    return sorted(stores, key=lambda s: s.last_used), orphans


@contextlib.contextmanager
def _unused(store: CachedStore) -> Iterator[bool]:
    """Hold the store's locks, if nobody else does: True while they are held (a pack into
    it waits meanwhile), False when a pack is running."""
    held = []
    try:
        for lock, take in ((store.path.with_name(store.path.name + ".lock"), fcntl.flock),
                           (store.path / LOCK, fcntl.lockf)):  # ensure_store's, pack's own
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)  # never creates one
            except FileNotFoundError:
                continue
            held.append(fd)
            try:
                take(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
        yield True
    finally:
        for fd in held:
            os.close(fd)


def remove(store: CachedStore) -> str | None:
    """Delete the store's own files, its folder and markers; None, or why it was kept."""
    with _unused(store) as free:
        if not free:
            return "in use (a pack is writing it)"
        foreign = _foreign(store.path)
        if foreign is not None:
            return f"holds {foreign}, which selfsup did not write"
        try:
            clear(store.path)
            (store.path / LOCK).unlink(missing_ok=True)
            store.path.rmdir()
            for marker in store.markers:
                marker.unlink(missing_ok=True)
        except OSError as e:
            return f"cannot remove ({e.strerror or e})"
    return None


def choose(stores: list[CachedStore], *, older_than: float | None = None, everything: bool =
           False, now: float | None = None) -> list[CachedStore]:
    """The stores to clean: all, those last used more than ``older_than`` days ago, or none
    (a bare ``clean`` removes the markers no store owns, and nothing else)."""
    if everything:
        return list(stores)
    if older_than is None:
        return []
    cutoff = (time.time() if now is None else now) - older_than * DAY_S
    return [s for s in stores if s.last_used < cutoff]


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # not reached


def describe(store: CachedStore, now: float | None = None) -> str:
    """One line: name, source, side, bytes, last use (and an interrupted pack says so)."""
    days = ((time.time() if now is None else now) - store.last_used) / DAY_S
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(store.last_used))
    side = f"{store.size} px" if store.size is not None else "? px"
    state = "" if store.finished else ", interrupted pack"
    return (f"{store.path.name}: {store.source or '(source unknown)'}, {side}, "
            f"{human_bytes(store.bytes)}, last used {when} ({days:.1f} days ago){state}")


def listing(cache: Path) -> list[str]:
    """``selfsup cache list``: a line per store, then the total."""
    stores, orphans = scan(cache)
    gone = f"; {len(orphans)} markers of stores that are gone" if orphans else ""
    return [*map(describe, stores), f"{cache}: {len(stores)} stores, "
            f"{human_bytes(sum(s.bytes for s in stores))}{gone}"]


def clean(cache: Path, *, older_than: float | None = None, everything: bool = False
          ) -> list[str]:
    """``selfsup cache clean``: remove the chosen stores and the markers no store owns; a
    line per store removed or kept, then the total."""
    stores, orphans = scan(cache)
    lines, freed, removed = [], 0, 0
    for store in choose(stores, older_than=older_than, everything=everything):
        why = remove(store)
        lines.append(f"kept {store.path.name}: {why}" if why else f"removed {describe(store)}")
        if why is None:
            freed, removed = freed + store.bytes, removed + 1
    markers = 0
    for marker in orphans:
        try:
            marker.unlink(missing_ok=True)
            markers += 1
        except OSError as e:
            lines.append(f"kept {marker.name}: cannot remove ({e.strerror or e})")
    return [*lines, f"{cache}: removed {removed} stores ({human_bytes(freed)}) and {markers} "
            "markers of stores that were gone"]
