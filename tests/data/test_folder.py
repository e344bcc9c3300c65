"""Image-folder reader: labelled and flat layouts, sizes, channels and damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import read_image_folder
from selfsup.errors import DataError


def _save(path: Path, array: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def _rng_image(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_labelled_folder_mixed_gray_and_color(tmp_path: Path) -> None:
    color = _save(tmp_path / "dog" / "b.png", _rng_image(0, (8, 6, 3)))
    gray = _save(tmp_path / "cat" / "a.png", _rng_image(1, (8, 6)))
    _save(tmp_path / "cat" / "nested" / "c.png", _rng_image(2, (8, 6)))
    (tmp_path / "cat" / "notes.txt").write_text("not an image: ignored")
    (tmp_path / "empty").mkdir()  # no image inside: not a class
    data = read_image_folder(tmp_path)
    assert data.classes == ["cat", "dog"] and data.labels is not None
    assert data.labels.tolist() == [0, 0, 1]
    assert data.images.shape == (3, 3, 8, 6) and data.images.dtype == torch.uint8
    # A gray image in a colour set is repeated over the three channels.
    assert all(torch.equal(data.images[0, c], torch.from_numpy(gray)) for c in range(3))
    assert torch.equal(data.images[2], torch.from_numpy(color).permute(2, 0, 1))
    assert data.name == f"folder:{tmp_path.name}"


def test_flat_gray_folder_is_unlabeled_one_channel(tmp_path: Path) -> None:
    first = _save(tmp_path / "0.png", _rng_image(3, (5, 5)))
    _save(tmp_path / "1.bmp", _rng_image(4, (5, 5)))
    (tmp_path / ".hidden.png").write_bytes(b"")  # hidden files are skipped
    data = read_image_folder(tmp_path, progress=True)
    assert data.labels is None and data.classes == []
    assert data.images.shape == (2, 1, 5, 5)
    assert torch.equal(data.images[0, 0], torch.from_numpy(first))


def test_size_resizes_and_centre_crops(tmp_path: Path) -> None:
    _save(tmp_path / "wide.png", _rng_image(5, (8, 16, 3)))
    _save(tmp_path / "square.png", _rng_image(6, (12, 12, 3)))
    data = read_image_folder(tmp_path, size=4, name="toy")
    assert data.images.shape == (2, 3, 4, 4) and data.name == "toy"


def test_size_mismatch_without_size_names_file(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", _rng_image(7, (4, 4)))
    _save(tmp_path / "b.png", _rng_image(8, (5, 4)))
    with pytest.raises(DataError, match=r"b\.png: image is 4x5 but a\.png is 4x4; pass size="):
        read_image_folder(tmp_path)


@pytest.mark.parametrize("content", [b"", b"this is text, not a PNG\n",
                                     b"\x89PNG\r\n\x1a\n" + bytes(20)])
def test_unreadable_image_names_file(tmp_path: Path, content: bytes) -> None:
    _save(tmp_path / "cls" / "good.png", _rng_image(9, (4, 4)))
    (tmp_path / "cls" / "broken.png").write_bytes(content)
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        read_image_folder(tmp_path)


def test_empty_missing_and_mixed_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"empty: no image files"):
        read_image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match=r"absent: image folder does not exist"):
        read_image_folder(tmp_path / "absent")
    mixed = tmp_path / "mixed"
    _save(mixed / "loose.png", _rng_image(10, (4, 4)))
    _save(mixed / "cls" / "x.png", _rng_image(11, (4, 4)))
    with pytest.raises(DataError, match=r"mixed: holds both image files"):
        read_image_folder(mixed)
