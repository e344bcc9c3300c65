"""selfsup cache list / clean: the store cache of packed folders, and nothing else in it
(issue 23 item 9: every store, .lock and .failed file was kept for ever)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.cli import main
from selfsup.data.cache import DAY_S, choose, clean, listing, scan
from selfsup.data.store import ensure_store
from tests.conftest import error_line


def _photos(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), np.uint8)).save(root / "a" / f"{i}.png")
    return root


def _age(store: Path, days: float) -> None:
    """Make the store look last used ``days`` ago (its files and markers)."""
    t = time.time() - days * DAY_S
    for p in [store, *store.rglob("*"), *store.parent.glob(store.name + ".*")]:
        os.utime(p, (t, t), follow_symlinks=False)


@pytest.fixture
def cache(tmp_path) -> Path:
    """A cache with two stores (one 40 days unused), an interrupted pack, a failure marker,
    a marker whose store is gone, and things of the user's that must stay."""
    cache = tmp_path / "stores"
    old = ensure_store(_photos(tmp_path / "old"), 8, cache, workers=0, progress=False)
    new = ensure_store(_photos(tmp_path / "new"), 8, cache, workers=0, progress=False)
    _age(old, 40)
    half = cache / "half-8px-0123456789ab"  # a pack killed after its state.json
    half.mkdir()
    (half / "state.json").write_text(json.dumps({"source": "/photos/half", "settings": {
        "format": "selfsup-store", "size": 8}}))
    new.with_name(new.name + ".failed").write_text("token\nDataError: the disk is full")
    (cache / "gone-8px-00000000000a.lock").write_text("")  # its store was deleted by hand
    (cache / "notes.txt").write_text("mine")
    (cache / "mine-8px-0123456789ff").mkdir()  # looks like a store's name, holds no marker
    (cache / "mine-8px-0123456789ff" / "data.bin").write_text("mine")
    (cache / "other-8px-00000000000b.lock").write_text("not empty: not selfsup's")
    return cache


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


USERS = ["mine-8px-0123456789ff", "notes.txt", "other-8px-00000000000b.lock"]


def test_list_shows_source_size_bytes_and_last_use(cache, tmp_path):
    stores, orphans = scan(cache)
    assert [s.path.name.split("-")[0] for s in stores] == ["old", "half", "new"]  # oldest first
    old, half, new = stores
    assert old.source == str((tmp_path / "old").resolve()) and old.size == 8 and old.finished
    assert old.bytes > 3 * 3 * 8 * 8 and time.time() - old.last_used > 39 * DAY_S
    assert half.source == "/photos/half" and not half.finished
    assert [m.name for m in new.markers] == [new.path.name + ".lock", new.path.name + ".failed"]
    assert [o.name for o in orphans] == ["gone-8px-00000000000a.lock"]
    lines = listing(cache)
    assert len(lines) == 4 and "interrupted pack" in lines[1] and " 8 px, " in lines[0]
    assert "(40.0 days ago)" in lines[0] and lines[-1].startswith(f"{cache}: 3 stores, ")


def test_clean_older_than_removes_only_old_stores_of_selfsup(cache):
    before = _names(cache)
    lines = clean(cache, older_than=30)
    old = next(n for n in before if n.startswith("old-") and "." not in n)
    assert lines[0].startswith(f"removed {old}: ")
    assert lines[-1].startswith(f"{cache}: removed 1 stores (") and "and 1 markers" in lines[-1]
    gone = {old, old + ".lock", "gone-8px-00000000000a.lock"}
    assert _names(cache) == sorted(set(before) - gone)
    assert (cache / "mine-8px-0123456789ff" / "data.bin").read_text() == "mine"


def test_clean_all_keeps_everything_selfsup_did_not_write(cache):
    new = next(s for s in scan(cache)[0] if s.path.name.startswith("new-"))
    (new.path / "train" / "my-notes.txt").write_text("mine")  # inside a store: keep it all
    lines = clean(cache, everything=True)
    assert f"kept {new.path.name}: holds train/my-notes.txt, which selfsup did not write" in lines
    assert _names(cache) == sorted([*USERS, new.path.name, new.path.name + ".lock",
                                    new.path.name + ".failed"])
    assert (new.path / "meta.json").is_file()


def test_a_store_being_packed_is_kept(cache):
    new = next(s for s in scan(cache)[0] if s.path.name.startswith("new-"))
    with open(new.path.with_name(new.path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as ensure_store holds it while packing
        lines = clean(cache, everything=True)
    assert f"kept {new.path.name}: in use (a pack is writing it)" in lines
    assert (new.path / "meta.json").is_file()


def test_a_bare_clean_removes_only_markers_of_stores_that_are_gone(cache):
    before = _names(cache)
    assert clean(cache) == [f"{cache}: removed 0 stores (0 B) and 1 markers of stores that "
                            "were gone"]
    assert _names(cache) == sorted(set(before) - {"gone-8px-00000000000a.lock"})


def test_choose_by_last_use():
    class S:
        def __init__(self, t):
            self.last_used = t

    stores = [S(0.0), S(9 * DAY_S), S(10 * DAY_S)]
    assert choose(stores, older_than=1, now=10.5 * DAY_S) == stores[:2]
    assert choose(stores, now=10.5 * DAY_S) == [] and choose(stores, everything=True) == stores


def test_cli(cache, capsys, tmp_path):
    assert main(["cache", "list", "--dir", str(cache)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4 and "1 markers of stores that are gone" in out[-1]
    assert main(["cache", "clean", "--all", "--dir", str(cache)]) == 0
    assert "removed 3 stores" in capsys.readouterr().out
    assert _names(cache) == USERS
    assert main(["cache", "list", "--dir", str(tmp_path / "nowhere")]) == 0
    assert "0 stores, 0 B" in capsys.readouterr().out
    assert "takes no --older-than or --all" in error_line(
        capsys, ["cache", "list", "--all", "--dir", str(cache)])
    assert "--older-than: must be a finite number >= 0, got -1" in error_line(
        capsys, ["cache", "clean", "--older-than", "-1", "--dir", str(cache)])
    assert "the store cache is not a folder" in error_line(
        capsys, ["cache", "list", "--dir", str(cache / "notes.txt")])
    assert _names(cache) == USERS
