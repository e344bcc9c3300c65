"""The teacher of a knowledge transfer: any trained backbone, and the features of one of its layers.

Noroozi, Vinjimoor, Favaro, Pirsiavash, "Boosting Self-Supervised Learning
via Knowledge Transfer" (CVPR 2018), §3: "we extract the features of all the
images ... from the pre-trained model", here from any layer the user names
(the conv5-like last stage by default, i.e. the backbone output h). A
teacher is a run folder of any selfsup stage (pretraining of any method,
fine-tune, distill, transfer) or an export folder from ``selfsup export``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.augment import build_recipe
from selfsup.config import Config
from selfsup.errors import ConfigError, DataError
from selfsup.eval.features import extract_features
from selfsup.runs import RunFolder, load_run_backbone, run_config


@dataclass
class Teacher:
    backbone: nn.Module  # eval mode, CPU
    source: str  # the run or export folder
    size: int  # input side the teacher was trained at
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cfg: Config | None  # the run's config (None for an export folder)


def load_teacher(path: str | Path, overrides: list[str] | None = None) -> Teacher:
    """The backbone of a run folder (``config.yaml`` + checkpoint) or an export folder;
    ``overrides`` (``--data.root DIR``, ...) apply to a run folder's config."""
    path = Path(path)
    if RunFolder(path).config.is_file():
        from selfsup.experiment import input_spec, load_data

        cfg = run_config(path, overrides)
        backbone, cfg, meta = load_run_backbone(path, cfg)
        spec = meta.get("input") or input_spec(load_data(cfg, need_test=False))
        return Teacher(backbone, str(path), int(spec["size"]), int(spec["channels"]),
                       tuple(spec["mean"]), tuple(spec["std"]), cfg)
    if overrides:
        raise ConfigError(f"{path}: an export folder has no config to override "
                          f"({' '.join(overrides)})")
    if (path / "config.json").is_file():
        from selfsup.export import load_backbone

        backbone = load_backbone(path)
        inp = json.loads((path / "config.json").read_text()).get("input", {})
        try:
            return Teacher(backbone, str(path), int(inp["size"]), int(inp["channels"]),
                           tuple(inp["mean"]), tuple(inp["std"]), None)
        except KeyError as e:
            raise DataError(f"{path}/config.json: no input {e} (re-export the run)") from None
    raise DataError(f"{path}: neither a selfsup run folder (config.yaml) nor an export folder "
                    f"(config.json + model.safetensors)")


def layer_names(backbone: nn.Module) -> list[str]:
    """Names a feature layer can be taken from (the backbone's named modules)."""
    return [n for n, _ in backbone.named_modules() if n]


def _layer(backbone: nn.Module, layer: str | None) -> nn.Module | None:
    if layer is None or layer in ("", "output"):
        return None
    try:
        return backbone.get_submodule(layer)
    except AttributeError:
        tops = [n for n, _ in backbone.named_children()]
        raise ConfigError(f"layer {layer!r} does not exist in the teacher; top-level layers: "
                          f"{', '.join(tops)} (or 'output', the backbone's features)") from None


def teacher_transform(teacher: Teacher, channels: int):
    """Eval transform of images with ``channels`` channels into the teacher's input:
    resized to its side, channels matched (grey -> repeated, colour -> luma), its normalisation."""
    if channels != teacher.channels and 1 not in (channels, teacher.channels):
        raise ConfigError(f"the images have {channels} channels, the teacher takes "
                          f"{teacher.channels}")
    tf = build_recipe("eval", size=teacher.size, mean=teacher.mean, std=teacher.std)
    luma = torch.tensor([0.299, 0.587, 0.114])

    def transform(x: Tensor, gen: torch.Generator) -> Tensor:
        if x.shape[1] == 1 and teacher.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and teacher.channels == 1:
            w = luma.to(x.device).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        return tf(x, gen)

    return transform


class _LayerOutput(nn.Module):
    """The backbone, returning the global-average-pooled output of one of its modules."""

    def __init__(self, backbone: nn.Module, module: nn.Module) -> None:
        super().__init__()
        self.backbone, self.module = backbone, module

    def forward(self, x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        hook = self.module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.backbone(x)
        finally:
            hook.remove()
        h = captured[0][0] if isinstance(captured[0], (tuple, list)) else captured[0]
        if h.dim() == 4:
            h = F.adaptive_avg_pool2d(h, 1)  # B x C x 1 x 1
        return h.flatten(1)  # B x C


def layer_features(teacher: Teacher, images: Tensor, layer: str | None = None, *,
                   device: torch.device | str = "cpu", batch_size: int = 512,
                   progress: bool = False) -> Tensor:
    """Features (N, C) float32 of uint8 ``images`` at ``layer`` of the teacher.

    A convolutional layer's (N, C, H, W) output is global-average-pooled to (N, C);
    ``None``/``"output"`` is the backbone's own output h. Non-finite features
    raise a DataError naming the layer (k-means would silently go wrong).
    """
    backbone = teacher.backbone.to(device).eval()
    module = _layer(backbone, layer)
    net = backbone if module is None else _LayerOutput(backbone, module)
    transform = teacher_transform(teacher, images.shape[1])
    gen = torch.Generator(device=device)
    feats = extract_features(net, images, lambda x: transform(x, gen), batch_size=batch_size,
                             device=device, progress=progress,
                             desc=f"features {layer or 'output'}")
    bad = int((~torch.isfinite(feats)).sum())
    if bad:
        raise DataError(f"teacher {teacher.source}: {bad} non-finite feature values at layer "
                        f"{layer or 'output'}")
    return feats
