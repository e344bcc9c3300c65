"""Decoding one image file to a square uint8 array: what packing does per file.

Shorter side to ``size`` with antialiasing, centre crop, EXIF orientation applied; gray,
gray + alpha, RGBA, palette, 16-bit, float and CMYK images all end as 1 or 3 channels. Pure
numpy + PIL (no torch), so worker processes start fast and stay small. JPEGs decode with DCT
scaling (PIL's ``draft``, or simplejpeg's ``min_height``/``min_width`` when installed and asked
for): a 400 px photo packed at 96 px is decoded at 1/4 scale, never at full size.

An image whose decode would hold more than a cap of memory is refused from its header, before
any pixel is decoded (issue 23: a 493 kB 13000 x 13000 PNG cost a pack worker 1.45 GB); PIL's
own decompression-bomb check warns from 89 Mpx and stops an image only above 179 Mpx.
"""

from __future__ import annotations

import re
import warnings
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
# Bytes of full-size buffers one decode may hold at once, unless the size needs more (see
# _check_memory); issue 23 asks a pack worker to stay under 300 MB resident. Measured: a worker
# forked from `selfsup pack` starts at ~155 MB (the CLI process has imported torch), and one
# that decoded RGB, RGBA, palette + transparency, 16-bit, progressive JPEG and WebP images each
# just under this cap peaked at 286 MB. A flat 40 Mpx would not do: RGB alone is 160 MB of it.
MEMORY_CAP = 128 * 2**20
# Bytes per pixel a format's decoder holds beside PIL's image, measured (peak RSS growth of
# one decode): libwebp's frame and canvas buffers plus the bytes PIL copies them from, ~12.
_DECODER_BYTES = {"WEBP": 12}


class DecodeError(Exception):
    """A file that is not a readable image; the message is the reason, for the skipped list."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can identify"
    if isinstance(exc, Image.DecompressionBombError):  # over 2 x Image.MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(found[1]) / 1e6:.0f} Mpx" if found else "too many pixels"
        return f"image has {count}, more than PIL opens at all: shrink it first"
    text = str(exc).split("\n")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def probe(path: str | Path) -> str:
    """``"<PIL mode> <width>x<height>"`` of ``path`` from its header alone (cheap);
    DecodeError if unreadable."""
    try:
        if Path(path).stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        with warnings.catch_warnings():
            # decode's memory cap, which knows the size, is the guard: no bomb warning here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return f"{im.mode} {im.size[0]}x{im.size[1]}"
    except DecodeError:
        raise
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError... on bad headers
        raise DecodeError(_reason(exc)) from None


def _to_8bit(im: Image.Image) -> Image.Image:
    """Gray 16-bit / 32-bit / float images scaled (not clipped, as convert("L") would) to 8 bit.

    Strips of about 1 Mpx at a time, so that beside the image only its 8-bit copy is full size
    (a whole-image float64 temporary cost 8 bytes a pixel: _check_memory counts on this).
    """
    w, h = im.size
    if not w or not h:
        return Image.new("L", im.size)
    rows = max(1, 2**20 // w)
    boxes = [(0, y, w, min(h, y + rows)) for y in range(0, h, rows)]
    out = np.empty((h, w), np.uint8)
    if im.mode == "F":
        top = max(float(np.nan_to_num(np.asarray(im.crop(b)), nan=0.0).max()) for b in boxes)
        hi = 1.0 if top <= 1.0 else 255.0
        for b in boxes:
            a = np.nan_to_num(np.asarray(im.crop(b)), nan=0.0)
            out[b[1]:b[3]] = np.rint(np.clip(a * (255.0 / hi), 0, 255)).astype(np.uint8)
    else:
        wide = any(int(np.asarray(im.crop(b)).max()) > 255 for b in boxes)
        for b in boxes:
            a = np.asarray(im.crop(b))
            if wide:
                a = np.clip(a, 0, 65535) / 257.0  # 16-bit range to 8 bit, rounding below
            out[b[1]:b[3]] = np.rint(a).astype(np.uint8)
    return Image.fromarray(out, "L")


def _square(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` and centre crop, in one antialiased resampling."""
    w, h = im.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    if (w, h) == (size, size):
        return im
    return im.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)


def _bytes_per_pixel(mode: str) -> int:
    """What a pixel of ``mode`` takes in PIL's memory (it stores RGB as RGBX, 4 bytes)."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _check_memory(im: Image.Image, full: tuple[int, int], size: int, gray: bool,
                  turn: bool = False, extra: int = 0) -> None:
    """DecodeError when decoding ``im`` (opened, drafted, not loaded; ``full`` is its size
    before the draft) would hold more than the cap at once.

    Counted, per decoded pixel: the image and each converted copy beside the one it is made
    from (as :func:`_pil_image` makes them), the copy an EXIF turn makes, ``extra`` bytes
    (another decoder's own buffer); and for a progressive JPEG libjpeg's coefficients of the
    whole image at full resolution, 2 bytes a sample, which DCT scaling does not shrink. The
    cap is MEMORY_CAP, or 16 x size x size pixels when that is more: a large ``size`` still
    takes images up to 4x its side (its own rows already need more than MEMORY_CAP).
    """
    mode, target = im.mode, "L" if gray else "RGB"
    b, t = _bytes_per_pixel(mode), _bytes_per_pixel(target)
    steps = [b + extra + _DECODER_BYTES.get(im.format, 0)]
    if mode in _WIDE_MODES:  # the wide image and its 8-bit copy (_to_8bit)
        steps.append(b + 1)
        mode, b = "L", 1
    elif mode == "P" and "transparency" in im.info:
        steps.append(b + 4)
        mode, b = "RGBA", 4
    if mode != target:
        steps.append(b + t)
    if turn:
        steps.append(2 * t)
    per_pixel = max(steps)
    need = im.size[0] * im.size[1] * per_pixel
    if im.format == "JPEG" and im.info.get("progressive"):
        layers = getattr(im, "layer", None) or [(0, 1, 1, 0)] * 4  # (id, h, v, table)
        hmax, vmax = max(x[1] for x in layers) or 1, max(x[2] for x in layers) or 1
        need += 2 * sum(-(-full[0] * x[1] // hmax) * -(-full[1] * x[2] // vmax)
                        for x in layers)
    cap = max(MEMORY_CAP, 16 * size * size * per_pixel)
    if need > cap:
        mb = 2**20
        raise DecodeError(
            f"image is {full[0]}x{full[1]} ({full[0] * full[1] / 1e6:.1f} Mpx, {im.mode}); "
            f"decoding it needs ~{need / mb:.0f} MB, over the cap of "
            f"{cap / per_pixel / 1e6:.1f} Mpx ({cap / mb:.0f} MB) at size {size}: shrink it first")


def _opened(path: Path, size: int, gray: bool, extra: int = 0) -> tuple[Image.Image, int]:
    """``path`` opened from its header, a JPEG drafted to ``size``, and its EXIF orientation;
    DecodeError (from :func:`_check_memory`) before anything big is decoded."""
    im = Image.open(path)
    try:
        full = im.size
        if im.format == "JPEG":
            im.draft(im.mode, (size, size))  # DCT scaling: never below size
        _check_memory(im, full, size, gray, extra=extra)
        # after the check: PIL loads a whole PNG to find EXIF that follows its pixels
        orientation = im.getexif().get(_ORIENTATION, 1)
        if orientation in _TRANSPOSE:
            _check_memory(im, full, size, gray, turn=True, extra=extra)
    except BaseException:
        im.close()
        raise
    return im, orientation


def _pil_image(path: Path, size: int, gray: bool) -> Image.Image:
    im, orientation = _opened(path, size, gray)
    with im:
        im.load()
    # outside the with block, which held the opened image: each step frees the one before
    if im.mode in _WIDE_MODES:
        im = _to_8bit(im)
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    target = "L" if gray else "RGB"
    if im.mode != target:  # convert to its own mode would only copy it, at full size
        im = im.convert(target)
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
        with warnings.catch_warnings():
            # _check_memory, which knows the size, guards: PIL's bomb warning (every image
            # over 89 Mpx, accepted or not) would only spam the pack's output
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if decoder == "simplejpeg" and path.suffix.lower() in (".jpg", ".jpeg"):
                _opened(path, size, gray, extra=3)[0].close()  # its array beside PIL's copy
                im = _simplejpeg_image(path, size, gray)
            if im is None:
                im = _pil_image(path, size, gray)
        out = np.asarray(_square(im, size), dtype=np.uint8)
    except DecodeError:
        raise
    except Exception as exc:  # damaged data surfaces as OSError, SyntaxError, ValueError...
        raise DecodeError(_reason(exc)) from None
    return out[..., None] if gray else out
