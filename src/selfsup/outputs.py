"""Where selfsup may write: checks of an output path made before any work (they create
nothing), and the one-line errors of creating the output late.

Issue 23 (items 5, 8, 9): an ``--out`` below a regular file or in a read-only folder once
failed with a traceback after minutes of feature extraction. The rule of every stage is
"a bad input writes nothing", so :func:`check_out` only looks (it creates no folder): the
output is made by :func:`make_folder` when there is something to write, and a failure there
(a race, a disk that turns read-only) is still one line.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from selfsup.errors import DataError


def nearest_existing(path: Path) -> Path:
    """``path`` or the closest folder above it that exists (what a ``mkdir -p`` starts from;
    a dangling link counts: mkdir would fail on it), as an absolute path."""
    path = path.absolute()
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        path = path.parent
    return path


def check_out(path: str | Path, what: str, *, folder: bool = True) -> Path:
    """Refuse, before any work and without creating anything, an output that cannot be
    written: a folder wanted where a file is (or the reverse), a path below a regular file,
    or a place we may not write (``os.access``: a read-only mount says no even to root).
    ``what`` names the output in the one-line error; returns ``path`` as a Path."""
    path = Path(path).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise DataError(f"{path}: cannot write {what} (it exists and is not a folder)")
        if not folder and path.is_dir():
            raise DataError(f"{path}: cannot write {what} (it is a folder; name a file)")
    start = path if folder and path.is_dir() else nearest_existing(path.parent)
    if not start.is_dir():
        raise DataError(f"{path}: cannot write {what} ({start} is a file, not a folder)")
    if not os.access(start, os.W_OK | os.X_OK):
        raise DataError(f"{path}: cannot write {what} ({start} is not writable)")
    return path


def read_only(path: Path) -> bool:
    """Whether ``path`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False


def write_error(path: Path, what: str, exc: OSError) -> DataError:
    """The one-line error of a failed write of ``what`` at ``path``."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return DataError(f"{path}: cannot write {what} ({reason})")


def make_folder(path: Path, what: str) -> list[Path]:
    """``mkdir -p path``; returns the folders it created (outermost first), so a writer that
    fails afterwards can remove exactly those (:func:`remove_made`)."""
    missing = []
    p = path
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_made(missing[::-1])
        raise write_error(path, what, e) from None
    if not path.is_dir():  # a file appeared there meanwhile
        raise write_error(path, what, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    return missing[::-1]


def remove_made(folders: list[Path]) -> None:
    """Remove the folders :func:`make_folder` created, innermost first, only while empty:
    a failed write leaves no empty output folder behind, and nothing else is touched."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or already gone): what is above it stays too
