"""Checksummed downloads, file verification and safe archive extraction.

A download streams into ``<dest>.part`` while hashing, checks size and checksums, and only then
moves the file into place with :func:`os.replace`, so ``dest`` is either absent or complete and
verified. A successful check is remembered so that loading a 30 MB file again does not hash it
again: in selfsup's own cache (``<data cache>/verified/``, one JSON record per file, keyed by its
resolved path, size and modification time), never beside the user's files. Issue 23 item 9:
``<file>.verified`` sidecars were written into ``data.root``; those older sidecars are still
read, never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
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


def default_cache_dir() -> Path:
    """Where downloads go when no root is given: ``$SELFSUP_DATA`` or ``~/.cache/selfsup/data``."""
    return Path(os.environ.get("SELFSUP_DATA") or Path.home() / ".cache" / "selfsup" / "data")


def _record_file(path: Path) -> Path:
    """The cache's record of ``path``: named by a hash of its resolved path (no user's name,
    whatever its characters, becomes a file name here)."""
    key = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return default_cache_dir() / "verified" / f"{key[:32]}.json"


def _matches(record: object, path: Path | None, info: os.stat_result,
             expected: dict[str, str]) -> bool:
    return (isinstance(record, dict) and (path is None or record.get("path") == str(path))
            and record.get("size") == info.st_size and record.get("mtime_ns") == info.st_mtime_ns
            and all(record.get(algo) == value for algo, value in expected.items()))


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _remembered(path: Path, info: os.stat_result, expected: dict[str, str]) -> bool:
    """Whether the cache (or an old ``<file>.verified`` sidecar) says this very file (same
    resolved path, size and mtime) matched these sums."""
    if _matches(_read_json(_record_file(path)), path.resolve(), info, expected):
        return True
    return _matches(_read_json(path.with_name(path.name + ".verified")), None, info, expected)


def _remember(path: Path, digests: dict[str, str]) -> None:
    """Record a success in the cache; an unwritable cache only costs a hash next time."""
    record_file = _record_file(path)
    tmp = record_file.with_name(f".{record_file.name}.{os.getpid()}.tmp")
    try:
        info = path.stat()
        record = {"path": str(path.resolve()), "size": info.st_size,
                  "mtime_ns": info.st_mtime_ns, **digests}
        record_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record))
        os.replace(tmp, record_file)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a cache only: failing to write it must not fail a load


def verify_file(path: str | Path, *, md5: str | None = None, sha256: str | None = None,
                size: int | None = None, remember: bool = True) -> None:
    """Raise DataError unless ``path`` has this size and these checksums (the known ones).

    With ``remember``, a success is recorded in selfsup's cache (never beside the file) and a
    matching record skips the hashing next time.
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
