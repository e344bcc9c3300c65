"""``selfsup pack`` never destroys or trusts what it did not write (issue 23 items 1-3): folders
it must not write are refused in one line with nothing touched, concurrent packs into one
folder give one complete store, and file names that cannot be one line of ``files.txt`` are
skipped with their reason."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.data.decode import decode
from selfsup.data.pack import pack_folder
from selfsup.data.store import open_store, read_meta
from selfsup.errors import DataError
from tests.conftest import error_line
from tests.data.folders import make_folder


def snapshot(root: Path) -> dict[str, str]:
    """Every path below ``root`` with the sha256 of its content ("dir" for folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else \
            hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "photos", per_class=3, test_per_class=1)


def _code_folder(root: Path) -> Path:
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "train").mkdir()
    (root / "train" / "train.py").write_text("print('train')\n")
    (root / "test").mkdir()
    (root / "test" / "test_x.py").write_text("def test_x(): pass\n")
    return root


@pytest.mark.parametrize("victim,needle", [
    ("image_folder", "not empty and not a selfsup store"),
    ("code_folder", "not empty and not a selfsup store"),
    ("itself", "is (or holds) the source folder"),
    ("parent", "is (or holds) the source folder"),
    ("dot_files_only", "not empty and not a selfsup store"),
    ("other_store", "holds the store of another folder"),
    ("store_plus_a_file", "holds train/notes.txt, which selfsup did not write"),
    ("a_file", "exists and is not a folder"),
])
def test_pack_refuses_folders_it_did_not_write_and_deletes_nothing(
        capsys, tmp_path: Path, photos: Path, victim: str, needle: str) -> None:
    out = {"image_folder": tmp_path / "copy", "code_folder": tmp_path / "code",
           "itself": photos, "parent": tmp_path, "dot_files_only": tmp_path / "dots",
           "other_store": tmp_path / "other", "store_plus_a_file": tmp_path / "mine",
           "a_file": tmp_path / "file"}[victim]
    if victim == "image_folder":
        shutil.copytree(photos, out)  # train/ + test/ of images: once taken for a store
    elif victim == "code_folder":
        _code_folder(out)
    elif victim == "dot_files_only":
        out.mkdir()
        (out / ".DS_Store").write_bytes(b"\0")
    elif victim == "other_store":
        other = make_folder(tmp_path / "elsewhere", per_class=2, test_per_class=1, seed=1)
        pack_folder(other, out, 16, workers=0, progress=False)
    elif victim == "store_plus_a_file":
        pack_folder(photos, out, 16, workers=0, progress=False)
        (out / "train" / "notes.txt").write_text("mine")
    elif victim == "a_file":
        out.write_text("not a folder")
    before = snapshot(tmp_path) if out.is_dir() else out.read_bytes()
    # another size: a pack into its own finished store of the same folder would repack it
    err = error_line(capsys, ["pack", str(photos), str(out), "--size", "12", "--workers", "0",
                              "--no-progress"])
    assert needle in err
    assert (snapshot(tmp_path) if out.is_dir() else out.read_bytes()) == before


def test_a_store_of_the_same_folder_is_repacked_by_name_only(tmp_path: Path,
                                                            photos: Path) -> None:
    """Starting over removes the store's own files, one by one, and nothing else."""
    out = pack_folder(photos, tmp_path / "s", 16, workers=0, progress=False)
    pack_folder(photos, out, 12, workers=0, progress=False)
    assert read_meta(out)["size"] == 12
    assert sorted(p.name for p in out.iterdir()) == [".pack.lock", "meta.json", "test", "train"]


def _pack_into(src: str, out: str, q) -> None:
    try:
        pack_folder(src, out, 16, workers=0, chunk=2, progress=False)
        q.put("ok")
    except DataError as exc:
        q.put(f"error: {exc}")


def test_concurrent_packs_into_one_folder_give_one_complete_store(tmp_path: Path) -> None:
    src = tmp_path / "many"
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (src / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), np.uint8)).save(
                src / cls / f"{i}.png")
        # fails only when decoded: its row is squeezed out at the end, the step that moved
        # rows under the other writer's feet
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(buf, "JPEG")
        (src / cls / "5cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    ref = pack_folder(src, tmp_path / "ref", 16, workers=0, progress=False)
    ref_bytes = (ref / "train" / "images.u8").read_bytes()
    ctx = mp.get_context("fork")  # separate processes: the lock is per process
    for trial in range(10):
        out = tmp_path / f"race{trial}"
        q = ctx.Queue()
        procs = [ctx.Process(target=_pack_into, args=(str(src), str(out), q)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        results = [q.get(timeout=5) for _ in procs]
        assert all(r == "ok" or r.startswith("error: ") for r in results), results
        assert "ok" in results
        data = open_store(out)
        assert (out / "train" / "images.u8").read_bytes() == ref_bytes, trial
        assert data.labels.tolist() == open_store(ref).labels.tolist()
        for i in (0, 19, 20, 59):  # every row is its own file, so rows agree with labels
            want = decode(src / data.files[i], 16, 3).transpose(2, 0, 1)
            assert np.array_equal(data.images[i].numpy(), want)


BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\t"]


def test_names_with_line_breaks_or_tabs_are_skipped_with_the_reason(tmp_path: Path) -> None:
    src = tmp_path / "odd"
    src.mkdir()
    arr = np.random.default_rng(0).integers(0, 256, (12, 12, 3), np.uint8)
    for i, ch in enumerate(BREAKS):
        Image.fromarray(arr).save(src / f"img{i}{ch}x.png")
    for name in ("plain.png", "space name.png", "ünïcode.png"):
        Image.fromarray(arr).save(src / name)
    bad = os.fsencode(src) + b"/latin1\xff.png"  # not UTF-8: Linux allows any bytes
    Image.fromarray(arr).save(os.fsdecode(bad))
    out = pack_folder(src, tmp_path / "s", 12, workers=0, progress=False)
    data = open_store(out)
    assert sorted(data.files) == ["plain.png", "space name.png", "ünïcode.png"]
    skipped = [json.loads(line) for line in (out / "train" / "skipped.jsonl").read_text()
               .splitlines()]
    assert len(skipped) == len(BREAKS) + 1
    for s in skipped:
        assert "rename the file" in s["reason"]
    assert sum("line break or tab" in s["reason"] for s in skipped) == len(BREAKS)
    assert sum("not valid UTF-8" in s["reason"] for s in skipped) == 1
    # and the store a folder run would use is the same: every run on it opens
    assert read_meta(out)["splits"]["train"]["skipped"] == len(BREAKS) + 1


def test_a_store_cache_that_cannot_be_written_is_one_line(tmp_path: Path, photos: Path) -> None:
    from selfsup.data.store import ensure_store

    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot create the store cache .Not a directory"):
        ensure_store(photos, 16, tmp_path / "file" / "cache", workers=0, progress=False)
    assert (tmp_path / "file").read_text() == "x"
