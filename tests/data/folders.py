"""A small photo folder with every kind of image a user's folder holds, and three bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

BAD = {"zero.jpg", "text.png", "cut.jpg"}


def make_folder(root: Path, per_class: int = 6, test_per_class: int = 2, seed: int = 0) -> Path:
    """train/ + test/ with two classes of mixed sizes, JPEG and PNG, gray, colour, RGBA,
    16-bit, palette and CMYK images; train/cat also holds a 0-byte file, a text file named
    .png and a JPEG cut in half."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = int(rng.integers(18, 50)), int(rng.integers(18, 50))
                kind = i % 6
                if kind == 0:
                    arr = rng.integers(0, 256, (h, w), np.uint8)
                    Image.fromarray(arr).save(folder / f"{i}.png")
                elif kind == 1:
                    arr = rng.integers(0, 256, (h, w, 3), np.uint8)
                    Image.fromarray(arr).save(folder / f"{i}.jpg", quality=90)
                elif kind == 2:
                    arr = rng.integers(0, 256, (h, w, 4), np.uint8)
                    Image.fromarray(arr).save(folder / f"{i}.png")
                elif kind == 3:
                    arr = rng.integers(0, 65536, (h, w)).astype(np.uint16)
                    Image.fromarray(arr).save(folder / f"{i}.png")
                elif kind == 4:
                    arr = rng.integers(0, 256, (h, w, 3), np.uint8)
                    Image.fromarray(arr).convert("P").save(folder / f"{i}.png")
                else:
                    arr = rng.integers(0, 256, (h, w, 3), np.uint8)
                    Image.fromarray(arr).convert("CMYK").save(folder / f"{i}.jpg")
    bad = root / "train" / "cat"
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.png").write_text("not an image at all")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(buf, "JPEG")
    (bad / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return root
