"""Checksummed downloads, file verification and safe archive extraction.

A download streams into ``<dest>.part`` while hashing, checks size and checksums, and only then
moves the file into place with :func:`os.replace`, so ``dest`` is either absent or complete and
verified. A successful check is remembered in a ``<file>.verified`` JSON sidecar (keyed by size
and modification time) so that loading a 30 MB file again does not hash it again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from selfsup.errors import DataError

CHUNK_BYTES = 1 << 20


def _expected(md5: str | None, sha256: str | None) -> dict[str, str]:
    return {algo: value.lower() for algo, value in (("md5", md5), ("sha256", sha256)) if value}


def _hash_file(path: Path, algorithms: list[str]) -> dict[str, str]:
    """Hex digests of ``path``, all computed in one chunked pass (no whole-file read)."""
    hashes = {algo: hashlib.new(algo) for algo in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            for h in hashes.values():
                h.update(chunk)
    return {algo: h.hexdigest() for algo, h in hashes.items()}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _remembered(path: Path, info: os.stat_result, expected: dict[str, str]) -> bool:
    """Whether the sidecar says this very file (same size and mtime) matched these sums."""
    try:
        record = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return False
    return (record.get("size") == info.st_size and record.get("mtime_ns") == info.st_mtime_ns
            and all(record.get(algo) == value for algo, value in expected.items()))


def _writable(folder: Path) -> bool:
    """Whether we may add files to ``folder``. root passes ``os.access`` everywhere, so the mode
    bits count too: a folder marked read-only (like a shared data set) is left untouched."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) \
        and os.access(folder, os.W_OK)


def _remember(path: Path, digests: dict[str, str]) -> None:
    """Write the sidecar when the folder is writable; a read-only data folder is fine."""
    if not _writable(path.parent):
        return
    info = path.stat()
    record = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, **digests}
    tmp = _sidecar(path).with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, _sidecar(path))
    except OSError:
        tmp.unlink(missing_ok=True)  # a cache only: failing to write it must not fail the load


def verify_file(path: str | Path, *, md5: str | None = None, sha256: str | None = None,
                size: int | None = None, remember: bool = True) -> None:
    """Raise DataError unless ``path`` has this size and these checksums (the known ones).

    With ``remember``, a success is recorded in the ``<file>.verified`` sidecar (writable
    folders only) and a matching record skips the hashing next time.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if size is not None and info.st_size != size:
        raise DataError(f"{path}: size mismatch: expected {size} bytes, got {info.st_size}")
    expected = _expected(md5, sha256)
    if not expected or _remembered(path, info, expected):
        return
    try:
        digests = _hash_file(path, list(expected))
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    for algo, want in expected.items():
        if digests[algo] != want:
            raise DataError(f"{path}: {algo} checksum mismatch: expected {want}, got "
                            f"{digests[algo]}; the file is damaged or not the official one")
    if remember:
        _remember(path, digests)


def download_file(url: str, dest: str | Path, *, md5: str | None = None,
                  sha256: str | None = None, size: int | None = None, progress: bool = True,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, verified; return ``dest``.

    Streams to ``dest.name + ".part"`` in 1 MiB chunks (tqdm bar when ``progress``), checks the
    size and every given checksum, then renames atomically. On any failure the part file is
    deleted and DataError names the URL (and both checksums on a mismatch).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    expected = _expected(md5, sha256)
    hashes = {algo: hashlib.new(algo) for algo in expected}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = size or int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    bar.update(len(chunk))
        got = part.stat().st_size
        if size is not None and got != size:
            raise DataError(f"{url}: size mismatch: expected {size} bytes, got {got}")
        for algo, want in expected.items():
            if hashes[algo].hexdigest() != want:
                raise DataError(f"{url}: {algo} checksum mismatch: expected {want}, got "
                                f"{hashes[algo].hexdigest()}")
        os.replace(part, dest)
    except DataError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
        raise DataError(f"{url}: download failed: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)  # gone already after a successful replace
    _remember(dest, {algo: h.hexdigest() for algo, h in hashes.items()})
    return dest


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing to extract member {member.name!r} (absolute path, "
                        "'..' or a link/device)")


def extract_archive(archive: str | Path, dest_dir: str | Path) -> list[Path]:
    """Extract a tar archive (any compression) into ``dest_dir``; return its top-level entries.

    Members with absolute paths, ``..`` components, links or devices are rejected before
    anything is written. The archive is unpacked into a temporary folder inside ``dest_dir``
    and its top-level entries then renamed into place, so an interrupted extraction leaves no
    half-written data folder behind; existing entries of the same name are replaced.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
            try:
                # The "data" filter (Python >= 3.11.4) re-checks the same rules inside tarfile.
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **extra)
                placed = []
                for entry in sorted(tmp.iterdir()):
                    target = dest_dir / entry.name
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    os.replace(entry, target)
                    placed.append(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: cannot extract: {exc}") from exc
    return placed
