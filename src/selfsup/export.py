"""Export a trained backbone as ``model.safetensors`` (or ``.pth``, ``.onnx``) + ``config.json``.

Only the backbone f travels: the head g is a training device ("we use h ...
not z", SimCLR §2.1). Key names are the backbone's own (torchvision names for
the standard ResNet), with no ``backbone.``/``module.``/``_orig_mod.`` prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors
from safetensors.torch import load_file
from torch import nn

from selfsup import __version__
from selfsup.errors import DataError, SelfsupError
from selfsup.experiment import input_spec, load_data, load_run_backbone
from selfsup.export_formats import FILES, FORMATS, WRITERS, check_format
from selfsup.models import build_from_config
from selfsup.runs import RunFolder
from selfsup.train.checkpoint import atomic_write_text


def export_run(run_dir: str | Path, out_dir: str | Path | None = None,
               checkpoint: str = "last.pt", format: str = "safetensors") -> Path:
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
    """Rebuild an exported backbone from its folder; eval mode, on the CPU."""
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
    return model.eval()
