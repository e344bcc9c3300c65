"""The output folder of ``selfsup pack``: which folders it may write, and how it claims one.

A pack writes only into a new or empty folder, or into a store (finished or interrupted) that
it wrote itself *from the same source folder*. It recognises its own store by its marker
(``meta.json`` or ``state.json`` with ``format: selfsup-store``) and refuses a folder holding
any entry it would not have written, so starting over deletes only its own files, by name
(never a whole sub-folder: ``train/`` of a user's image folder once looked like a split of a
store and was removed). Packing a folder into itself, or a store of another folder into place,
is refused in one line.

Two packs into one folder at once are serialised by a POSIX record lock on ``.pack.lock``
(``lockf``: held by the process, not inherited by the forked decoding workers, dropped by the
kernel when the process dies): the second one waits, then finds the store finished and returns
it, so the store is never written by two processes (which once interleaved their rows and left
images that disagree with their labels).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from selfsup.errors import DataError

FORMAT = "selfsup-store"
LOCK = ".pack.lock"
# every name a pack (or ensure_store) writes at the top of its folder, temporaries included
TOP_FILES = frozenset({"meta.json", "state.json", "progress.jsonl", ".ready", LOCK,
                       ".meta.json.tmp", ".state.json.tmp"})
# what a pack killed before its state.json leaves: a folder of only these counts as empty
SCRATCH = frozenset({LOCK, ".meta.json.tmp", ".state.json.tmp"})
SPLITS = frozenset({"train", "test"})
SPLIT_FILES = frozenset({"images.u8", "labels.npy", "files.txt", "skipped.jsonl"})


def _marker(out: Path) -> dict | None:
    """The store's own record (``meta.json``, else ``state.json``) if it is one of ours."""
    for name in ("meta.json", "state.json"):
        try:
            record = json.loads((out / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        settings = record.get("settings")  # state.json names its format only in its settings
        fmt = record.get("format") or (settings.get("format") if isinstance(settings, dict)
                                       else None)
        if fmt == FORMAT:
            return {**record, "finished": name == "meta.json"}
    return None


def _foreign(out: Path) -> str | None:
    """The first entry of ``out`` that a pack would not have written, or None."""
    for p in sorted(out.iterdir()):
        if p.name in SPLITS and p.is_dir() and not p.is_symlink():
            extra = sorted(q.name for q in p.iterdir() if q.name not in SPLIT_FILES
                           or not q.is_file() or q.is_symlink())
            if extra:
                return f"{p.name}/{extra[0]}"
        elif p.name not in TOP_FILES or not p.is_file() or p.is_symlink():
            return p.name
    return None


def check_out(src: Path, out: Path) -> None:
    """Refuse (DataError, one line, nothing touched) an ``out`` that a pack of ``src`` must not
    write: a file, the source itself or a folder above it (a store inside the source is
    fine: its files are not images), a folder holding anything a pack
    did not write, or the store of another source folder."""
    try:
        s, o = src.resolve(), out.resolve()
        if o == s or o in s.parents:
            raise DataError(f"{out}: is (or holds) the source folder {src}; choose another "
                            "output folder")
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        if not out.is_dir() or all(p.name in SCRATCH and p.is_file() for p in out.iterdir()):
            return  # new or empty
        mark = _marker(out)
        if mark is None:
            first = _foreign(out) or next(iter(sorted(p.name for p in out.iterdir())))
            raise DataError(f"{out}: not empty and not a selfsup store ({first}, ...); choose "
                            "an empty or new folder")
        if mark.get("source") != str(s):
            what = "the store" if mark["finished"] else "an interrupted pack"
            raise DataError(f"{out}: holds {what} of another folder ({mark.get('source')}); "
                            "choose another output folder, or delete this one to reuse it")
        extra = _foreign(out)
        if extra is not None:
            raise DataError(f"{out}: holds {extra}, which selfsup did not write; choose "
                            "another output folder")
    except OSError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{exc.filename or out}: cannot read ({exc.strerror or exc})") from None


def clear(out: Path) -> None:
    """Delete a store's own files by name (after :func:`check_out` accepted the folder)."""
    for name in TOP_FILES - {LOCK}:
        (out / name).unlink(missing_ok=True)
    for split in SPLITS:
        folder = out / split
        if folder.is_dir():
            for name in SPLIT_FILES:
                (folder / name).unlink(missing_ok=True)
            folder.rmdir()  # empty now: check_out refused anything else in it


@contextlib.contextmanager
def claimed(src: Path, out: Path, progress: bool = True) -> Iterator[None]:
    """Create ``out`` and hold its pack lock; a second pack waits here for the first."""
    check_out(src, out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise DataError(f"{out}: cannot create the store folder ({exc.strerror or exc})") \
            from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if progress:
                print(f"selfsup: another pack is writing {out}; waiting for it",
                      file=sys.stderr, flush=True)
            fcntl.lockf(fd, fcntl.LOCK_EX)
        check_out(src, out)  # again: the other pack may have left another store here
        yield
    except DataError:
        if created:  # a refusal (no disk space, no readable image) leaves nothing behind
            clear(out)
            (out / LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    finally:
        os.close(fd)  # releases the lock
