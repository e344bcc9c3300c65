"""Huge images are refused from their header, before decoding (issue 23 item 6).

A 493 kB 13000 x 13000 PNG once cost a ``selfsup pack`` worker 1.45 GB. The PNGs here are
written by hand, streaming compressed rows of zeros, so no test ever holds one in memory.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.data import decode as decode_mod
from selfsup.data.decode import DecodeError, decode, probe

BIG = 13000  # the image: 169 Mpx, between PIL's bomb warning and its bomb error


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def write_black_png(path: Path, width: int, height: int) -> Path:
    """An 8-bit RGB PNG of zeros, one row (filter byte 0 + row) at a time through zlib."""
    row = bytes(1 + 3 * width)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bit, RGB, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
                     + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> Path:
    return write_black_png(tmp_path_factory.mktemp("big") / "big.png", BIG, BIG)


def test_big_png_is_refused_from_its_header_without_pil_warnings(big_png: Path) -> None:
    assert big_png.stat().st_size < 600_000  # the issue's ~493 kB
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert probe(big_png) == f"RGB {BIG}x{BIG}"
        with pytest.raises(DecodeError) as err:
            decode(big_png, 64, 3)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert f"{BIG}x{BIG}" in str(err.value) and "size 64" in str(err.value)


def test_just_above_the_cap_is_refused_and_names_it(tmp_path: Path) -> None:
    side = 5793  # RGB takes 4 bytes a pixel in PIL: 5793^2 * 4 is just over 128 MiB
    assert side * side * 4 > decode_mod.MEMORY_CAP > (side - 1) ** 2 * 4
    path = write_black_png(tmp_path / "a.png", side, side)
    with pytest.raises(DecodeError, match=r"5793x5793 .*cap of 33\.6 Mpx .*at size 64"):
        decode(path, 64, 3)


def test_cap_counts_converted_copies_and_grows_with_size(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(decode_mod, "MEMORY_CAP", 4 * 2**20)
    path = write_black_png(tmp_path / "a.png", 1000, 1000)  # 4.0 MB as RGB, 5.0 MB to gray
    assert decode(path, 64, 3).shape == (64, 64, 3)
    with pytest.raises(DecodeError, match="1000x1000"):
        decode(path, 64, 1)  # the RGB image and its gray copy are both full size
    assert decode(path, 256, 1).shape == (256, 256, 1)  # 16 x 256^2 px: its side is 4x 256


def test_large_jpeg_decodes_through_draft_in_little_memory(tmp_path: Path,
                                                           monkeypatch) -> None:
    im = Image.new("RGB", (6000, 4000), (200, 30, 30))
    im.paste((30, 30, 200), (0, 0, 3000, 4000))  # left half blue
    im.save(tmp_path / "a.jpg", quality=80)
    del im
    monkeypatch.setattr(decode_mod, "MEMORY_CAP", 2 * 2**20)  # the full image is 96 MB
    out = decode(tmp_path / "a.jpg", 64, 3).astype(int)
    # drafted to 1/8 (750 x 500, 1.5 MB); centre crop: left half blue, right half red
    assert out[32, 8, 2] > 150 > out[32, 8, 0] and out[32, 56, 0] > 150 > out[32, 56, 2]


def test_progressive_jpeg_counts_its_full_size_coefficients(tmp_path: Path,
                                                            monkeypatch) -> None:
    im = Image.new("RGB", (1600, 1200), (90, 120, 150))
    im.save(tmp_path / "base.jpg")
    im.save(tmp_path / "prog.jpg", progressive=True)
    monkeypatch.setattr(decode_mod, "MEMORY_CAP", 2 * 2**20)
    assert decode(tmp_path / "base.jpg", 64, 3).shape == (64, 64, 3)
    # libjpeg keeps every coefficient of a progressive JPEG: 2 bytes a sample, 5.5 MB here
    with pytest.raises(DecodeError, match="1600x1200"):
        decode(tmp_path / "prog.jpg", 64, 3)


def test_pil_bomb_error_becomes_a_reason(tmp_path: Path, monkeypatch) -> None:
    path = write_black_png(tmp_path / "a.png", 2000, 1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)  # errors above 1 Mpx
    for read in (probe, lambda p: decode(p, 64, 3)):
        with pytest.raises(DecodeError, match="has 2 Mpx, more than PIL opens"):
            read(path)


# Runs `selfsup pack` in a fresh process whose only children are the pool's workers, which
# the pool reaps on exit: RUSAGE_CHILDREN's ru_maxrss is then the worker's peak alone.
_MEASURE = """
import resource, sys
from selfsup.cli import main
rc = main(["pack", *sys.argv[1:], "--size", "64", "--workers", "1", "--no-progress"])
kb = 1024 if sys.platform == "darwin" else 1  # ru_maxrss is in bytes on macOS
print("worker_peak_kb", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // kb)
sys.exit(rc)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs resource.getrusage")
def test_pack_skips_the_big_png_and_its_worker_stays_small(big_png: Path,
                                                           tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.png").symlink_to(big_png)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), np.uint8)).save(src / name)
    res = subprocess.run([sys.executable, "-c", _MEASURE, str(src), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert "DecompressionBomb" not in res.stderr and "Traceback" not in res.stderr
    peak_mb = int(res.stdout.split("worker_peak_kb")[1]) / 1024
    assert 0 < peak_mb <= 300, f"worker peak {peak_mb:.0f} MB"  # 1446 MB before the cap
    skipped = [json.loads(line) for line in
               (tmp_path / "out" / "train" / "skipped.jsonl").read_text().splitlines()]
    assert [s["file"] for s in skipped] == ["big.png"]
    assert f"{BIG}x{BIG}" in skipped[0]["reason"] and "cap" in skipped[0]["reason"]
    files = (tmp_path / "out" / "train" / "files.txt").read_text().split()
    assert files == ["a.png", "b.jpg"]
