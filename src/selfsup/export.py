"""Export a trained backbone as ``model.safetensors`` (or ``.pth``, ``.onnx``) + ``config.json``.

Only the backbone f travels: the head g is a training device ("we use h ...
not z", SimCLR §2.1). Key names are the backbone's own (torchvision names for
the standard ResNet), with no ``backbone.``/``module.``/``_orig_mod.`` prefix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from selfsup import __version__
from selfsup.errors import ConfigError, DataError, SelfsupError
from selfsup.experiment import input_spec, load_data
from selfsup.export_formats import FILES, FORMATS, WRITERS, check_format
from selfsup.models import build_from_config
from selfsup.runs import LAST, RunFolder, load_run_backbone
from selfsup.train.checkpoint import atomic_write_text, new_file_mode


def export_run(run_dir: str | Path, out_dir: str | Path | None = None,
               checkpoint: str = LAST, format: str = "safetensors") -> Path:
    """Write ``<run>/export/{model.<ext>,config.json}`` (or into ``out_dir``).

    ``format``: ``safetensors`` (``model.safetensors``, what :func:`load_backbone`
    reads), ``torchvision`` (``model.pth``) or ``onnx`` (``model.onnx``); see
    :mod:`selfsup.export_formats`. An architecture the format cannot hold is
    refused before anything is written.
    """
    run_dir = Path(run_dir)
    backbone, cfg, meta = load_run_backbone(run_dir, checkpoint=checkpoint)
    check_format(format, backbone.arch)
    spec = meta.get("input")
    if spec is None:  # a checkpoint from before selfsup recorded its input: read the data
        spec = input_spec(load_data(cfg, need_test=False))
    out = Path(out_dir) if out_dir is not None else RunFolder(run_dir).export
    config = {
        "format": "selfsup-backbone",
        "selfsup_version": __version__,
        "architecture": backbone.arch,
        "feature_dim": backbone.feature_dim,
        "input": {**spec, "value_range": "uint8 / 255, then (x - mean) / std"},
        "pretraining": {"method": cfg.method.name, "dataset": cfg.data.dataset,
                        "steps": meta.get("step"), "epochs": meta.get("epoch"),
                        "run": str(run_dir)},
    }
    name = FILES[format]
    tmp = out / f".{name}.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        notes = WRITERS[format](backbone, tmp, spec)
        tmp.chmod(new_file_mode())  # safetensors 0.8 writes 0600: the umask, like the rest
        tmp.replace(out / name)
        config = _with_notes(out, config, format, notes)
        atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    except SelfsupError:  # the format's own refusal (an ONNX mismatch): already one line
        raise
    except (OSError, safetensors.SafetensorError) as e:  # a file in the way, read-only, full
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise DataError(f"{out}: cannot write the export ({reason})") from None
    finally:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
    return out


def _with_notes(out: Path, config: dict, format: str, notes: dict) -> dict:
    """``config`` with this format's notes, keeping those of the other formats already
    exported into ``out`` from the same checkpoint (their files stay valid)."""
    try:
        old = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        old = {}
    same = all(old.get(k) == config[k] for k in ("architecture", "pretraining"))
    kept = {k: old[k] for k in FORMATS if same and k in old and k != format}
    return {**config, **kept, **({format: notes} if notes else {})}


def load_backbone(path: str | Path) -> nn.Module:
    """Rebuild an exported backbone from its folder; eval mode, on the CPU.

    ``backbone.input_config`` is the export's ``input`` (size, channels, mean, std), and
    ``backbone.preprocess(images)`` (:func:`preprocess`) turns uint8 images, numpy arrays
    or PIL images into the network's input::

        backbone = selfsup.load_backbone("runs/quickstart/export")
        h = backbone(backbone.preprocess(PIL.Image.open("shoe.png")))   # 1 x D
    """
    path = Path(path)
    cfg_file, weights = path / "config.json", path / "model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise DataError(f"{f}: missing (expected an export folder from `selfsup export`)")
    try:
        config = json.loads(cfg_file.read_text())
        arch = config["architecture"]
    except (json.JSONDecodeError, KeyError) as e:
        raise DataError(f"{cfg_file}: not a selfsup export config ({e})") from None
    model = build_from_config(arch)
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise DataError(f"{weights}: unreadable safetensors file ({e})") from None
    model.load_state_dict(state, strict=True)
    model.input_config = config.get("input", {})
    model.preprocess = partial(preprocess, model)
    return model.eval()


def preprocess(backbone: nn.Module | dict, images: Any) -> Tensor:
    """The input (N, C, S, S) float32 of ``backbone`` for ``images``: its own eval transform.

    ``images``: a uint8 tensor (N, C, H, W) or (C, H, W) (or (H, W)), a uint8 numpy array
    channels-last as PIL and OpenCV give it ((H, W), (H, W, C), (N, H, W, C)), a PIL image,
    or a list of these (sizes may differ). A PIL image is squared as packing squares an image
    file (shorter side to the trained side S, centre crop); a tensor or array is centre-cropped
    to a square; then resized to S (bilinear, antialiased) and normalised with the export's
    mean and std. A colour image for a gray model becomes its luma, a gray one for a colour
    model is repeated (:func:`selfsup.cluster.teacher.teacher_transform`, the rule of every
    stage). ``backbone``: a :func:`load_backbone` result, or its ``input`` dict itself.
    """
    from selfsup.cluster.teacher import Teacher, teacher_transform

    spec = backbone if isinstance(backbone, dict) else getattr(backbone, "input_config", {})
    try:
        teacher = Teacher(None, "", int(spec["size"]), int(spec["channels"]),  # type: ignore
                          tuple(spec["mean"]), tuple(spec["std"]), None)
    except (KeyError, TypeError) as e:
        raise DataError(f"preprocess: the backbone records no input {e} (re-export the run "
                        "with this selfsup)") from None
    out = []
    for x in _uint8_batches(images, teacher.size):
        side = min(x.shape[-2:])  # centre crop to a square: no aspect distortion
        top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        x = x[..., top:top + side, left:left + side]
        out.append(teacher_transform(teacher, x.shape[1])(x, torch.Generator()))
    return torch.cat(out)  # N x C x S x S


def _uint8_batches(images: Any, size: int) -> list[Tensor]:
    """``images`` as uint8 (n, C, H, W) tensors: one per item of a list, else one."""
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        if not images:
            raise ConfigError("preprocess: no images (an empty list)")
        return [b for item in images for b in _uint8_batches(item, size)]
    if hasattr(images, "convert") and hasattr(images, "mode"):  # a PIL image
        from selfsup.data.decode import _WIDE_MODES, GRAY_MODES, _square, _to_8bit

        im = _to_8bit(images) if images.mode in _WIDE_MODES else images
        im = _square(im.convert("L" if im.mode in GRAY_MODES else "RGB"), size)
        images = np.asarray(im)  # packing's squaring: folder embeddings match exactly
    if isinstance(images, np.ndarray):
        a = images if images.dtype == np.uint8 else images.astype(np.float32)  # named below
        a = a[..., None] if a.ndim == 2 else a  # H x W -> H x W x 1
        a = a[None] if a.ndim == 3 else a  # -> 1 x H x W x C
        images = torch.from_numpy(np.array(a)).movedim(-1, 1)  # N x C x H x W (a copy)
    if not isinstance(images, Tensor):
        raise ConfigError(f"preprocess: cannot read {type(images).__name__} as images (a "
                          "uint8 tensor, numpy array or PIL image, or a list of them)")
    x = images.cpu()
    x = x[None, None] if x.dim() == 2 else x[None] if x.dim() == 3 else x
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        hint = (" (floats: pass the already normalised batch straight to the backbone, or "
                "(x * 255).round().to(torch.uint8))" if x.dtype.is_floating_point else "")
        raise ConfigError(f"preprocess takes uint8 images (N, C, H, W) with C = 1 or 3, got "
                          f"{x.dtype} {tuple(x.shape)}{hint}")
    return [x]
