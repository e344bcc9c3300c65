"""`selfsup export --format torchvision | onnx`: torchvision names load strictly, ONNX matches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from selfsup.cli import main
from selfsup.config import load_config, save_config
from selfsup.errors import ConfigError
from selfsup.experiment import load_run_backbone, make_backbone
from selfsup.export import export_run, load_backbone
from selfsup.export_formats import ONNX_TOLERANCE, torchvision_incompatibility
from selfsup.models import resnet


def _run(tmp_path: Path, depth: int = 18, stem: str = "imagenet", width: float = 1.0,
         in_channels: int = 3, size: int = 32, name: str = "run") -> Path:
    """A run folder holding a random backbone with non-trivial BN statistics (no training)."""
    cfg = load_config("quickstart", ["--model.backbone", f"resnet{depth}", "--model.stem", stem,
                                     "--model.width", str(width), "--run.name", name])
    torch.manual_seed(depth)
    backbone = make_backbone(cfg, in_channels)
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):  # BN statistics away from the identity
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    spec = {"size": size, "channels": in_channels, "mean": [0.5] * in_channels,
            "std": [0.25] * in_channels}
    ckpt = {"model": {f"backbone.{k}": v for k, v in backbone.state_dict().items()},
            "in_channels": in_channels, "input": spec, "step": 10, "epoch": 1.0}
    run = tmp_path / name
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    return run


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_export_loads_strictly_and_gives_the_same_features(tmp_path, depth,
                                                                        one_thread):
    run = _run(tmp_path, depth)
    out = export_run(run, format="torchvision")
    state = torch.load(out / "model.pth", weights_only=True)
    assert "conv1.weight" in state and "layer1.0.conv1.weight" in state
    assert "bn1.running_var" in state and not any(k.startswith("fc.") for k in state)
    # a torchvision-named ResNet built from our own code (no torchvision needed)
    twin = resnet(depth, stem="imagenet")
    twin.load_state_dict(state, strict=True)
    ref, _, _ = load_run_backbone(run)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(twin.eval()(x), ref(x), rtol=0, atol=0)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"]["name"] == f"resnet{depth}"
    assert "strict=True" in config["torchvision"]["load"]


@pytest.mark.parametrize("kwargs, reason", [
    ({"stem": "cifar"}, "the CIFAR stem"),
    ({"width": 0.5}, "width 0.5"),
    ({"in_channels": 1}, "1 input channel"),
])
def test_torchvision_export_refuses_what_torchvision_has_not(tmp_path, capsys, kwargs, reason):
    run = _run(tmp_path, **kwargs)
    assert main(["export", str(run), "--format", "torchvision"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err and "torchvision" in err
    assert not (run / "export").exists()  # refused before anything was written


def test_torchvision_incompatibility_names_each_reason():
    assert torchvision_incompatibility({"name": "resnet50", "width": 1.0, "stem": "imagenet",
                                        "sk_ratio": 0.0, "in_channels": 3}) is None
    assert torchvision_incompatibility({"name": "torchvision:resnet34"}) is None
    assert "selective kernels" in torchvision_incompatibility(
        {"name": "resnet50", "sk_ratio": 0.0625})
    assert "not a ResNet" in torchvision_incompatibility({"name": "timm:convnext_tiny"})
    both = torchvision_incompatibility({"name": "resnet18", "stem": "cifar", "width": 2})
    assert "CIFAR stem" in both and "width 2" in both


def test_onnx_export_matches_pytorch(tmp_path, capsys, one_thread):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run = _run(tmp_path, 18, stem="cifar", width=0.25, in_channels=1, size=28)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert "model.onnx" in capsys.readouterr().out
    out = run / "export"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ref, _, _ = load_run_backbone(run)
    for n in (1, 5):  # the batch axis is dynamic
        x = torch.randn(n, 1, 28, 28)
        got = torch.from_numpy(session.run(["features"], {"images": x.numpy()})[0])
        assert got.shape == (n, ref.feature_dim)
        torch.testing.assert_close(got, ref(x).detach(), rtol=0, atol=ONNX_TOLERANCE)
    config = json.loads((out / "config.json").read_text())
    assert config["onnx"]["max_abs_diff_vs_pytorch"] <= ONNX_TOLERANCE
    assert not list(out.glob(".*.tmp"))
    # then safetensors into the same folder: the ONNX notes stay, load_backbone still works
    export_run(run)
    config = json.loads((out / "config.json").read_text())
    assert "onnx" in config and (out / "model.safetensors").is_file()
    torch.testing.assert_close(load_backbone(out)(x), ref(x))


def test_onnx_mismatch_writes_nothing(tmp_path, monkeypatch, one_thread):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import selfsup.export_formats as formats

    run = _run(tmp_path, 18, stem="cifar", width=0.125, in_channels=1, size=16)
    monkeypatch.setattr(formats, "ONNX_TOLERANCE", -1.0)  # any difference is too large
    with pytest.raises(Exception, match="differ from PyTorch"):
        export_run(run, format="onnx")
    assert not list((run / "export").iterdir())


def test_unknown_format_is_a_config_error(tmp_path):
    run = _run(tmp_path, 18, stem="cifar", width=0.125, in_channels=1, size=16)
    with pytest.raises(ConfigError, match="unknown export format"):
        export_run(run, format="tflite")
