"""Decoding one image file to a square uint8 array: what packing does per file.

Shorter side to ``size`` with antialiasing, centre crop, EXIF orientation applied; gray,
gray + alpha, RGBA, palette, 16-bit, float and CMYK images all end as 1 or 3 channels. Pure
numpy + PIL (no torch), so worker processes start fast and stay small. JPEGs decode with DCT
scaling (PIL's ``draft``, or simplejpeg's ``min_height``/``min_width`` when installed and asked
for): a 400 px photo packed at 96 px is decoded at 1/4 scale, never at full size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm", ".pbm"})
# Modes that hold one intensity channel; everything else is decoded as RGB.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
DECODERS = ("pil", "simplejpeg")


class DecodeError(Exception):
    """A file that is not a readable image; the message is the reason, for the skipped list."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can identify"
    text = str(exc).split("\n")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def probe(path: str | Path) -> str:
    """``"<PIL mode> <width>x<height>"`` of ``path`` from its header alone (cheap);
    DecodeError if unreadable."""
    try:
        if Path(path).stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        with Image.open(path) as im:
            return f"{im.mode} {im.size[0]}x{im.size[1]}"
    except DecodeError:
        raise
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError... on bad headers
        raise DecodeError(_reason(exc)) from None


def _to_8bit(im: Image.Image) -> Image.Image:
    """Gray 16-bit / 32-bit / float images scaled (not clipped, as convert("L") would) to 8 bit."""
    a = np.asarray(im)
    if im.mode == "F":
        a = np.nan_to_num(a, nan=0.0)
        hi = 1.0 if a.size and float(a.max()) <= 1.0 else 255.0
        a = np.clip(a * (255.0 / hi), 0, 255)
    elif a.size and int(a.max()) > 255:
        a = np.clip(a, 0, 65535) / 257.0  # 16-bit range to 8 bit, rounding below
    return Image.fromarray(np.rint(a).astype(np.uint8), "L")


def _square(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` and centre crop, in one antialiased resampling."""
    w, h = im.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    if (w, h) == (size, size):
        return im
    return im.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)


def _pil_image(path: Path, size: int, gray: bool) -> Image.Image:
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft(im.mode, (size, size))  # DCT scaling: never below size
        orientation = im.getexif().get(_ORIENTATION, 1)
        im.load()
        if im.mode in _WIDE_MODES:
            im = _to_8bit(im)
        elif im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        im = im.convert("L" if gray else "RGB")
    if orientation in _TRANSPOSE:
        im = im.transpose(_TRANSPOSE[orientation])
    return im


def _simplejpeg_image(path: Path, size: int, gray: bool) -> Image.Image | None:
    """simplejpeg's reduced-size decode; None when PIL must do it (EXIF orientation, CMYK)."""
    import simplejpeg

    data = path.read_bytes()
    if b"Exif" in data[:65536]:  # EXIF may rotate the image: let PIL read the orientation
        return None
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB",
                                     min_height=size, min_width=size)
    except ValueError:
        return None  # e.g. CMYK or arithmetic coding: PIL handles (or reports) it
    return Image.fromarray(arr[..., 0] if gray else arr, "L" if gray else "RGB")


def decode(path: str | Path, size: int, channels: int, decoder: str = "pil") -> np.ndarray:
    """Pixels (size, size, channels) uint8 of one image file; DecodeError with the reason.

    A colour image in a 1-channel store becomes its luma; a gray one in a 3-channel store is
    repeated over RGB (PIL's ``convert``).
    """
    path = Path(path)
    gray = channels == 1
    try:
        if path.stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        im = None
        if decoder == "simplejpeg" and path.suffix.lower() in (".jpg", ".jpeg"):
            im = _simplejpeg_image(path, size, gray)
        if im is None:
            im = _pil_image(path, size, gray)
        out = np.asarray(_square(im, size), dtype=np.uint8)
    except DecodeError:
        raise
    except Exception as exc:  # damaged data surfaces as OSError, SyntaxError, ValueError...
        raise DecodeError(_reason(exc)) from None
    return out[..., None] if gray else out
