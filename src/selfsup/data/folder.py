"""Image folders: ``root/<class>/*.png`` (labelled), ``root/*.png`` (unlabeled), or
``root/train`` + ``root/test`` (or ``root/val``) splits, each of either layout.

:func:`list_splits` lists a folder the way :mod:`selfsup.data.pack` packs it, and
:func:`listing_hash` fingerprints that listing, so a packed store is reused only for the very
files it was made from. :func:`read_image_folder` decodes a small folder straight into memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from selfsup.data.decode import GRAY_MODES as _GRAY_MODES
from selfsup.data.decode import IMAGE_EXTENSIONS
from selfsup.data.image_source import ImageSet
from selfsup.errors import DataError

SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") \
        and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted so the order never depends on the disk."""
    return sorted(p for p in folder.rglob("*") if _is_image(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def list_image_folder(root: str | Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Files, labels (None when flat) and class names (sorted sub-folder names) of a folder.

    Sub-folders holding no image are ignored; image files next to class sub-folders are an
    error, because it is unclear which class they would belong to.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder does not exist")
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{root}: cannot read the folder ({exc.strerror or exc})") from None
    top = [p for p in entries if _is_image(p)]
    per_class = {d.name: _images_under(d) for d in entries if d.is_dir()}
    per_class = {c: files for c, files in per_class.items() if files}
    if top and per_class:
        raise DataError(f"{root}: holds both image files ({top[0].name}, ...) and class "
                        f"sub-folders ({', '.join(per_class)}); use one layout")
    if not top and not per_class:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in "
                        "this folder or its sub-folders")
    if top:
        return top, None, []
    classes = sorted(per_class)
    files = [f for c in classes for f in per_class[c]]
    labels = [i for i, c in enumerate(classes) for _ in per_class[c]]
    return files, labels, classes


@dataclass(frozen=True)
class Listing:
    """The files of one split: paths relative to the packed root, labels, class names."""

    folder: str  # sub-folder of the root it comes from ("" for the root itself)
    files: list[str]
    labels: list[int] | None
    classes: list[str]


def list_splits(root: str | Path) -> dict[str, Listing]:
    """The splits of an image folder: ``train`` (and ``test``, from ``test/`` or ``val/``) when
    ``root/train`` exists, else the whole folder as ``train``. Test labels follow the train
    split's class names, so class ``k`` means the same in both."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder does not exist")
    if not (root / "train").is_dir():
        files, labels, classes = list_image_folder(root)
        return {"train": Listing("", [f.relative_to(root).as_posix() for f in files], labels,
                                 classes)}
    out = {}
    for split, names in SPLIT_FOLDERS.items():
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is None:
            continue
        files, labels, classes = list_image_folder(folder)
        if split != "train" and labels is not None:
            known = out["train"].classes
            extra = sorted(set(classes) - set(known))
            if extra or not known:
                raise DataError(f"{folder}: classes {', '.join(extra or classes)} are not "
                                f"among the train split's classes ({', '.join(known) or 'none'})")
            labels = [known.index(classes[i]) for i in labels]
            classes = known
        out[split] = Listing(folder.name, [f.relative_to(root).as_posix() for f in files],
                             labels, classes)
    return out


def listing_hash(root: str | Path, splits: dict[str, Listing], settings: dict) -> str:
    """sha256 of every listed file's path, size, modification time and label, and the packing
    settings: any change to the folder or the settings gives another hash."""
    root = Path(root)
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for split, listing in splits.items():
        labels = listing.labels or [-1] * len(listing.files)
        for rel, label in zip(listing.files, labels):
            try:
                st = (root / rel).stat()
            except OSError as exc:
                raise DataError(f"{root / rel}: cannot read ({exc.strerror or exc})") from None
            # surrogateescape: a name that is not UTF-8 (packed as skipped) must not crash here
            h.update(f"{split}\t{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{label}\n"
                     .encode("utf-8", "surrogateescape"))
    h.update("\n".join(f"{s}:{','.join(v.classes)}" for s, v in splits.items())
             .encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _decode(path: Path, size: int | None) -> tuple[np.ndarray, bool]:
    """Pixels (H, W) for a grayscale image or (H, W, 3) for colour, and whether it is gray."""
    try:
        with Image.open(path) as im:
            gray = im.mode in _GRAY_MODES
            im = im.convert("L" if gray else "RGB")
            if size is not None and im.size != (size, size):
                # Shorter side to `size`, then centre crop: keeps the aspect ratio.
                im = ImageOps.fit(im, (size, size), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8), gray
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError... on damaged files
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def read_image_folder(root: str | Path, size: int | None = None, *, name: str | None = None,
                      progress: bool | None = None) -> ImageSet:
    """Decode every image of an image folder into one :class:`ImageSet`.

    Args:
        root: folder with class sub-folders (labelled; classes sorted by name) or image files
            directly inside it (unlabeled: labels None).
        size: square side of the output; other sizes are resized (shorter side) and centre
            cropped. None: keep the size of the first image and require all to match it.
        name: name of the set (default ``folder:<root name>``).
        progress: show a tqdm bar; None shows one from 1000 files on.

    Channels: 1 when every image is grayscale, else 3 (gray images repeated over RGB).
    """
    root = Path(root)
    files, labels, classes = list_image_folder(root)
    first, _ = _decode(files[0], size)
    height, width = first.shape[:2]
    # Filled in place: one (N, H, W, 3) buffer instead of a list of arrays plus a stacked copy.
    pixels = np.empty((len(files), height, width, 3), np.uint8)
    any_color = False
    show = progress if progress is not None else len(files) >= 1000
    for i, path in enumerate(tqdm(files, desc=f"decoding {root.name}", unit="img",
                                  disable=not show)):
        array, gray = _decode(path, size)
        if array.shape[:2] != (height, width):
            raise DataError(f"{path}: image is {array.shape[1]}x{array.shape[0]} but "
                            f"{files[0].name} is {width}x{height}; pass size= to resize all")
        pixels[i] = array[..., None] if gray else array
        any_color |= not gray
    kept = pixels if any_color else pixels[..., :1]
    images = torch.from_numpy(np.ascontiguousarray(kept.transpose(0, 3, 1, 2)))
    label_t = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    return ImageSet(images, label_t, classes, name or f"folder:{root.name}")
