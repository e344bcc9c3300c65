"""The weight files of ``selfsup export --format``: safetensors, torchvision, ONNX.

- ``safetensors``: ``model.safetensors``, selfsup's own format, read back by
  :func:`selfsup.export.load_backbone` (the default).
- ``torchvision``: ``model.pth``, a plain state dict with torchvision's ResNet
  parameter names (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight`` ...)
  and **no** ``fc``: the backbone f ends at the pooled features, and a random
  1000-way classifier saved beside it would look like a trained one. Load it
  into ``torchvision.models.resnet50()`` after ``model.fc = nn.Identity()``
  with ``strict=True`` (the same (N, 2048) features), or keep the ``fc`` and
  pass ``strict=False``: exactly ``fc.weight`` and ``fc.bias`` are missing.
  Only the architectures torchvision has: ResNet-18/34/50/101/152, ImageNet
  stem, width 1, no selective kernels, 3 input channels.
- ``onnx``: ``model.onnx``, the backbone traced with a dynamic batch axis:
  input ``images`` (N, C, S, S) float, normalised as ``config.json`` says,
  output ``features`` (N, D). Checked with onnxruntime against PyTorch after
  writing; a difference above :data:`ONNX_TOLERANCE` writes nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from selfsup.errors import ConfigError, DataError
from selfsup.models.resnet import DEPTHS

FORMATS = ("safetensors", "torchvision", "onnx")
ONNX_TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| over a check batch, float32 features
ONNX_OPSET = 17
FILES = {"safetensors": "model.safetensors", "torchvision": "model.pth", "onnx": "model.onnx"}
# torchvision's own resnetN() arguments that leave its architecture and names unchanged
_TV_NEUTRAL = {"name", "weights", "progress"}


def torchvision_incompatibility(arch: Mapping[str, Any]) -> str | None:
    """Why a backbone built from ``arch`` has no torchvision ResNet twin; None if it has one."""
    name = str(arch.get("name"))
    if name.startswith("torchvision:resnet") and name.removeprefix("torchvision:resnet") in {
            str(d) for d in DEPTHS}:
        extra = sorted(set(arch) - _TV_NEUTRAL)
        return f"torchvision arguments {extra} change the architecture" if extra else None
    if name not in {f"resnet{d}" for d in DEPTHS}:
        return f"{name} is not a ResNet-18/34/50/101/152"
    reasons = []
    if arch.get("stem", "imagenet") != "imagenet":
        reasons.append("the CIFAR stem (3x3 stride-1 conv1, no max-pool; torchvision has a "
                       "7x7 stride-2 conv1 and a max-pool)")
    if float(arch.get("width", 1.0)) != 1.0:
        reasons.append(f"width {float(arch['width']):g} (torchvision's ResNets are width 1)")
    if float(arch.get("sk_ratio", 0.0)) > 0:
        reasons.append(f"selective kernels (sk_ratio {float(arch['sk_ratio']):g}, with "
                       "ResNet-D's deep stem and shortcuts)")
    if int(arch.get("in_channels", 3)) != 3:
        reasons.append(f"{arch['in_channels']} input channel(s) (torchvision's conv1 takes 3)")
    return "; ".join(reasons) or None


def check_format(fmt: str, arch: Mapping[str, Any]) -> None:
    """ConfigError, before anything is written, when ``fmt`` is unknown or cannot hold ``arch``."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "torchvision":
        why = torchvision_incompatibility(arch)
        if why:
            raise ConfigError(f"--format torchvision: {arch.get('name')} cannot be a torchvision "
                              f"ResNet because of {why}; use --format safetensors or onnx")
    if fmt == "onnx":
        _onnx_modules()


def _state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}


def _write_safetensors(backbone: nn.Module, path: Path, spec: dict) -> dict:
    save_file(_state(backbone), str(path), metadata={"format": "pt"})
    return {}


def _write_torchvision(backbone: nn.Module, path: Path, spec: dict) -> dict:
    # our standard ResNet already has torchvision's names; a torchvision model has them too
    torch.save(_state(backbone), path)
    return {"file": FILES["torchvision"], "fc": "not included (the backbone ends at pooling)",
            "load": "m = torchvision.models.<arch>(); m.fc = torch.nn.Identity(); "
                    "m.load_state_dict(torch.load('model.pth', weights_only=True), strict=True)"}


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError("--format onnx needs onnx and onnxruntime: "
                          "pip install 'selfsup[onnx]'") from None
    return onnx, onnxruntime


@torch.no_grad()
def _write_onnx(backbone: nn.Module, path: Path, spec: dict) -> dict:
    onnx, ort = _onnx_modules()
    c, s = int(spec["channels"]), int(spec["size"])
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, c, s, s, generator=gen)  # N x C x S x S, already normalised
    backbone = backbone.eval()
    try:
        with warnings.catch_warnings():  # the legacy exporter's deprecation, tracer notes
            warnings.simplefilter("ignore")
            torch.onnx.export(backbone, (example,), str(path), input_names=["images"],
                              output_names=["features"], opset_version=ONNX_OPSET,
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                              dynamo=False)
        onnx.checker.check_model(str(path))
    except Exception as e:  # an operator ONNX lacks, a model that does not trace
        raise DataError(f"cannot export to ONNX ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    check = torch.randn(3, c, s, s, generator=gen)  # another batch size: the dynamic axis
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["features"], {"images": check.numpy()})[0])  # N x D
    diff = float((got - backbone(check).float()).abs().max())
    if not diff <= ONNX_TOLERANCE:  # NaN fails too
        raise DataError(f"the ONNX model's features differ from PyTorch's by {diff:.3g} "
                        f"(> {ONNX_TOLERANCE:g}); nothing written")
    return {"file": FILES["onnx"], "opset": ONNX_OPSET, "input": "images (N, C, S, S) float32",
            "output": "features (N, D) float32", "max_abs_diff_vs_pytorch": diff}


WRITERS: dict[str, Callable[[nn.Module, Path, dict], dict]] = {
    "safetensors": _write_safetensors, "torchvision": _write_torchvision, "onnx": _write_onnx,
}
