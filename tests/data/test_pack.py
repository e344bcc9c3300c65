"""Packing image folders into stores: content, bad files, resume, repack, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import pack as pack_mod
from selfsup.data.decode import decode
from selfsup.data.pack import pack_folder
from selfsup.data.store import cache_path, ensure_store, open_store, read_meta
from selfsup.errors import ConfigError, DataError
from tests.data.folders import BAD, make_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "photos")


def test_pack_content_labels_and_skipped_files(folder: Path, tmp_path: Path) -> None:
    out = pack_folder(folder, tmp_path / "store", 16, workers=2, progress=False)
    meta = read_meta(out)
    assert meta["channels"] == 3 and meta["size"] == 16 and meta["classes"] == ["cat", "dog"]
    assert meta["splits"]["train"]["images"] == 12 and meta["splits"]["test"]["images"] == 4
    skipped = [json.loads(line) for line in (out / "train" / "skipped.jsonl").read_text()
               .splitlines()]
    assert {Path(s["file"]).name for s in skipped} == BAD
    reasons = {Path(s["file"]).name: s["reason"] for s in skipped}
    assert "0 bytes" in reasons["zero.jpg"] and "not an image" in reasons["text.png"]
    assert "truncated" in reasons["cut.jpg"]  # fails only when decoded: its row is squeezed out
    train = open_store(out, "train")
    assert train.mapped and train.images.shape == (12, 3, 16, 16)
    assert train.labels.tolist() == [0] * 6 + [1] * 6
    for i, rel in enumerate(train.files):  # every row is its file, decoded on its own
        want = decode(folder / rel, 16, 3).transpose(2, 0, 1)
        assert np.array_equal(train.images[i].numpy(), want), rel
    pixels = train.images.double().div(255)
    mean, std = train.stats
    assert np.allclose(mean, pixels.mean((0, 2, 3)).numpy(), atol=1e-5)
    assert np.allclose(std, pixels.std((0, 2, 3), correction=0).numpy(), atol=1e-5)
    test = open_store(out, "test")
    assert test.labels.tolist() == [0, 0, 1, 1] and all(f.startswith("test/") for f in test.files)


def test_gray_folder_packs_one_channel(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / "g").mkdir(exist_ok=True)
        Image.new("L", (12 + i, 10), 40 * i).save(tmp_path / "g" / f"{i}.png")
    out = pack_folder(tmp_path / "g", tmp_path / "s", "auto", workers=0, progress=False)
    data = open_store(out)
    assert data.images.shape == (3, 1, 10, 10) and data.labels is None  # flat: unlabeled


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    (tmp_path / "e").mkdir()
    Image.fromarray(arr).save(tmp_path / "e" / "a.jpg", exif=exif, quality=100)
    out = decode(tmp_path / "e" / "a.jpg", 10, 3)
    # displayed upright the image is 10 wide, 20 tall, white on top; the centre crop keeps
    # rows 5..14, whose upper half is white
    assert out[0, 5].mean() > 200 and out[9, 5].mean() < 60


def test_interrupted_pack_resumes_and_is_never_read_as_complete(folder: Path, tmp_path: Path,
                                                                monkeypatch) -> None:
    calls = []
    real = pack_mod._pack_chunk

    def dies_after_two(job):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed mid-pack
        calls.append(job[0])
        return real(job)

    monkeypatch.setattr(pack_mod, "_pack_chunk", dies_after_two)
    out = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        pack_folder(folder, out, 16, workers=0, chunk=4, progress=False)
    assert not (out / "meta.json").exists()
    with pytest.raises(DataError, match="packing was interrupted"):
        open_store(out)
    monkeypatch.setattr(pack_mod, "_pack_chunk", lambda job: calls.append(job[0]) or real(job))
    pack_folder(folder, out, 16, workers=0, chunk=4, progress=False)
    # 13 train files pass the header check (chunks of 4, 4, 4, 1) + 4 test: chunks 0, 1 not redone
    assert calls.count(("train", 0)) == 1 and calls.count(("train", 1)) == 1
    assert calls.count(("train", 2)) == 1 and calls.count(("test", 0)) == 1
    fresh = pack_folder(folder, tmp_path / "fresh", 16, workers=0, progress=False)
    assert torch.equal(open_store(out).images, open_store(fresh).images)
    assert not (out / "state.json").exists() and not (out / "progress.jsonl").exists()


def test_a_pack_killed_after_squeezing_a_split_keeps_its_rows(folder: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    """Killed after the bad rows were squeezed out but before meta.json: the resumed pack must
    keep the squeezed rows (it once re-created the file, zeros that nothing decoded again)."""
    real = pack_mod.write_json

    def killed(path, obj):
        if path.name == "meta.json":
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(pack_mod, "write_json", killed)
    out = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        pack_folder(folder, out, 16, workers=0, chunk=4, progress=False)
    assert not (out / "meta.json").exists()
    monkeypatch.setattr(pack_mod, "write_json", real)
    pack_folder(folder, out, 16, workers=0, chunk=4, progress=False)
    fresh = pack_folder(folder, tmp_path / "fresh", 16, workers=0, progress=False)
    for split in ("train", "test"):
        assert torch.equal(open_store(out, split).images, open_store(fresh, split).images)
    assert open_store(out).images.flatten(1).amax(1).min() > 0  # no zeroed rows


def test_other_listing_or_size_is_repacked(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = ensure_store(folder, 16, cache, progress=False, workers=0)
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert ensure_store(folder, 16, cache, progress=False) == first  # reused, not repacked
    assert (first / "meta.json").stat().st_mtime_ns == stamp
    Image.new("RGB", (20, 20)).save(folder / "train" / "dog" / "new.png")
    again = ensure_store(folder, 16, cache, progress=False, workers=0)
    assert again == first and read_meta(again)["splits"]["train"]["images"] == 13
    other = ensure_store(folder, 12, cache, progress=False, workers=0)
    assert other != first and open_store(other).size == 12
    # packing into a complete store of another size repacks it in place
    pack_folder(folder, first, 8, workers=0, progress=False)
    assert open_store(first).size == 8


def test_waiting_rank_takes_the_store_of_its_launch(folder: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    cache = tmp_path / "cache"
    ensure_store(folder, 16, cache, progress=False, workers=0)  # left by an earlier launch
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-2")
    out = cache_path(folder, 16, cache)
    failed = out.with_name(out.name + ".failed")
    failed.write_text("launch-2||||\nDataError: disk full")
    with pytest.raises(DataError, match="failed on local rank 0: DataError: disk full"):
        ensure_store(folder, 16, cache, poll_s=0.01)
    failed.unlink()
    (out / ".ready").write_text("launch-2||||")
    assert ensure_store(folder, 16, cache, poll_s=0.01) == out


@pytest.mark.parametrize("make,needle", [
    (lambda p: p, "image folder does not exist"),
    (lambda p: (p.mkdir(), (p / "a.txt").write_text("x"), p)[-1], "no image files"),
])
def test_bad_source_folders(tmp_path: Path, make, needle) -> None:
    src = make(tmp_path / "src")
    with pytest.raises(DataError, match=needle):
        pack_folder(src, tmp_path / "out", 16, workers=0, progress=False)


def test_unreadable_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "src").mkdir()
    real = Path.iterdir

    def denied(self):
        if self == tmp_path / "src":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "iterdir", denied)  # chmod does not stop root, who runs CI
    with pytest.raises(DataError, match="src: cannot read the folder .Permission denied"):
        pack_folder(tmp_path / "src", tmp_path / "out", 16, workers=0, progress=False)


def test_all_files_bad_and_bad_settings(tmp_path: Path, folder: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 image files can be read"):
        pack_folder(tmp_path / "bad", tmp_path / "o1", 16, workers=0, progress=False)
    with pytest.raises(ConfigError, match="integer >= 8"):
        pack_folder(folder, tmp_path / "o2", 4)
    with pytest.raises(ConfigError, match="channels must be 1, 3 or auto"):
        pack_folder(folder, tmp_path / "o3", 16, channels=2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not empty and not a selfsup store"):
        pack_folder(folder, tmp_path / "mine", 16, workers=0, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_store_damage_is_reported(folder: Path, tmp_path: Path) -> None:
    out = pack_folder(folder, tmp_path / "s", 16, workers=0, progress=False)
    with open(out / "train" / "images.u8", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="the store is damaged"):
        open_store(out)
    with pytest.raises(DataError, match="no 'val' split"):
        open_store(out, "val")
    (out / "meta.json").write_text("{")
    with pytest.raises(DataError, match="unreadable store metadata"):
        open_store(out)
    with pytest.raises(DataError, match="not a packed store"):
        open_store(tmp_path)


def test_store_mapping_is_copy_on_write(folder: Path, tmp_path: Path) -> None:
    """Copy-on-write mapping: writing to the tensor never reaches the file."""
    out = pack_folder(folder, tmp_path / "s", 16, workers=0, progress=False)
    data = open_store(out)
    before = (out / "train" / "images.u8").read_bytes()
    data.images[0].fill_(7)
    assert (out / "train" / "images.u8").read_bytes() == before
    assert os.path.getsize(out / "train" / "images.u8") == 12 * 3 * 16 * 16


def test_subset_file_lists_resolve_in_a_store(folder: Path, tmp_path: Path) -> None:
    from selfsup.data.subsets import load_subset

    train = open_store(pack_folder(folder, tmp_path / "s", 16, workers=0, progress=False))
    names = tmp_path / "names.txt"
    names.write_text(f"{train.files[7]}\n# a comment\n{train.files[3]}\n")  # relative paths
    assert load_subset(names, len(train), train.files).tolist() == [3, 7]
    names.write_text("4.png\n")  # cat/4.png and dog/4.png: a base name must be unique
    with pytest.raises(ConfigError, match="several images are named '4.png'"):
        load_subset(names, len(train), train.files)
