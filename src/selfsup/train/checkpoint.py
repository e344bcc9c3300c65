"""Checkpoints as plain data, written atomically, loaded with ``weights_only=True``.

A checkpoint holds everything an exact resume needs: model and optimiser
state, the step, the resolved config and the global RNG states. The data
order and the augmentations are pure functions of (seed, step), so they need
no saved state of their own.
"""

from __future__ import annotations

import os
import random
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.errors import DataError

# the temporaries of atomic_save / atomic_write_text: ".<name>.<8 chars>.tmp" (8 hex digits;
# mkstemp's letters, in files left by earlier versions)
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def _temporary(path: Path) -> tuple[int, str]:
    """A new, exclusive temporary beside ``path``: its descriptor and name.

    Unlike ``tempfile.mkstemp`` (always 0600), it gets the user's umask, as every file the
    run writes (0644 under umask 022), so a renamed checkpoint or summary is as readable as
    the config beside it.
    """
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def new_file_mode() -> int:
    """The mode a file created now gets (0o644 under umask 022), for files that a library
    writes 0600 (safetensors 0.8's save_file); read, not set, so no other thread sees 0."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): set and restore at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename.

    A run killed mid-write leaves the previous file intact, never half a file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temporary(path)
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, DataError):  # e.g. the disk is full
            raise DataError(f"{path}: cannot write ({e.strerror or e}); the previous file, "
                            "if any, is intact") from None
        if isinstance(e, RuntimeError) and _failed_write(e):  # torch's zip writer says so
            raise DataError(f"{path}: cannot write (the disk is full or the file too large: "
                            f"{str(e).strip().splitlines()[0][:100]}); the previous file, if "
                            "any, is intact") from None
        raise


def _failed_write(e: RuntimeError) -> bool:
    """torch.save reports a failed write (ENOSPC, EFBIG) as a RuntimeError of its zip writer,
    e.g. ``[enforce fail at inline_container.cc:...] . unexpected pos ...``."""
    text = str(e).lower()
    return "inline_container" in text or "file write failed" in text or "streamwriter" in text


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    try:
        fd, tmp = _temporary(path)
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise DataError(f"{path}: cannot write ({e.strerror or e}); the previous file, "
                            "if any, is intact") from None
        raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries that writers killed mid-write left in ``folder``; return them.

    Only names of this module's own temporaries are touched. Call it before the run writes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [f for f in folder.iterdir() if _TEMPORARY.fullmatch(f.name) and f.is_file()]
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a clear error for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise DataError(f"{path}: not a readable selfsup checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise DataError(f"{path}: not a selfsup checkpoint (no 'model' entry)")
    return ckpt


def rng_state() -> dict:
    """Global RNG states as plain data (tensors, ints, lists)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """The states :func:`rng_state` saved, wherever the checkpoint was mapped: torch takes
    only CPU byte tensors (a resume on CUDA maps them to the GPU: "RNG state must be a
    torch.ByteTensor", measured torch 2.11 on an H100)."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x
