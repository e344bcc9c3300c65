"""Export a trained backbone as ``model.safetensors`` + ``config.json``; load it back.

Only the backbone f travels: the head g is a training device ("we use h ...
not z", SimCLR §2.1). Key names are the backbone's own (torchvision names for
the standard ResNet), with no ``backbone.``/``module.``/``_orig_mod.`` prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup import __version__
from selfsup.errors import DataError
from selfsup.experiment import input_spec, load_data, load_run_backbone
from selfsup.models import build_from_config
from selfsup.runs import RunFolder
from selfsup.train.checkpoint import atomic_write_text


def export_run(run_dir: str | Path, out_dir: str | Path | None = None,
               checkpoint: str = "last.pt") -> Path:
    """Write ``<run>/export/{model.safetensors,config.json}`` (or into ``out_dir``)."""
    run_dir = Path(run_dir)
    backbone, cfg, meta = load_run_backbone(run_dir, checkpoint=checkpoint)
    spec = meta.get("input")
    if spec is None:  # a checkpoint from before selfsup recorded its input: read the data
        spec = input_spec(load_data(cfg, need_test=False))
    out = Path(out_dir) if out_dir is not None else RunFolder(run_dir).export
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
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
    tmp = out / ".model.safetensors.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(out / "model.safetensors")
        atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    except (OSError, safetensors.SafetensorError) as e:  # a file in the way, read-only, full
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise DataError(f"{out}: cannot write the export ({reason})") from None
    return out


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
