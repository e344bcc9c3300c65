"""Backbones by name: built-ins, user modules, the arch round trip, torchvision/timm adapters."""

import json
import sys
import types

import pytest
import torch
from torch import nn

from selfsup.errors import ConfigError
from selfsup.models import (
    Backbone,
    ResNet,
    backbone_config,
    build_backbone,
    build_from_config,
    list_backbones,
    register_backbone,
    registry,
)


@pytest.fixture(autouse=True)
def private_registry(monkeypatch):
    """Names registered by a test vanish after it."""
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_builtin_names_and_build():
    assert {f"resnet{d}" for d in (18, 34, 50, 101, 152)} <= set(list_backbones())
    model = build_backbone("resnet18", width=0.25, stem="cifar", in_channels=1)
    assert isinstance(model, ResNet) and model.feature_dim == 128
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 128)
    # Defaults are written into .arch, so a later change of a default cannot change a rebuild.
    assert model.arch == {"name": "resnet18", "width": 0.25, "stem": "cifar", "sk_ratio": 0.0,
                          "in_channels": 1, "zero_init_residual": False}


@pytest.mark.parametrize("kwargs", [{"width": 0.25, "stem": "cifar"},
                                    {"width": 0.25, "sk_ratio": 0.0625}])
def test_arch_round_trip_through_json(kwargs):
    model = build_backbone("resnet50", **kwargs)
    config = json.loads(json.dumps(backbone_config(model)))  # what export writes to config.json
    rebuilt = build_from_config(config)
    assert shapes(rebuilt) == shapes(model)
    assert rebuilt.arch == model.arch
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet19'.*resnet18.*torchvision:"):
        build_backbone("resnet19")
    with pytest.raises(ConfigError, match="unknown backbone 'keras:x'"):
        build_backbone("keras:x")
    with pytest.raises(ConfigError, match=r"resnet18.*unexpected keyword.*colour"):
        build_backbone("resnet18", colour="red")
    with pytest.raises(ConfigError, match="width"):
        build_backbone("resnet18", width=-1)


class TinyNet(nn.Module):
    def __init__(self, out: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_custom_module_wrapper_and_registration():
    wrapped = Backbone(TinyNet(6), feature_dim=6)
    assert wrapped(torch.randn(2, 3, 8, 8)).shape == (2, 6)
    assert set(wrapped.state_dict()) == {"net.conv.weight", "net.conv.bias"}
    with pytest.raises(ValueError, match=r"\(N, 5\), got \(2, 6\)"):
        Backbone(TinyNet(6), feature_dim=5)(torch.randn(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="feature_dim"):
        Backbone(TinyNet(), feature_dim=0)
    with pytest.raises(ConfigError, match="not built by build_backbone"):
        backbone_config(wrapped)

    @register_backbone("test_tiny")
    def tiny(out: int = 4) -> nn.Module:
        return Backbone(TinyNet(out), out)

    model = build_backbone("test_tiny", out=3)
    assert model.arch == {"name": "test_tiny", "out": 3}
    assert shapes(build_from_config(backbone_config(model))) == shapes(model)
    with pytest.raises(ConfigError, match="already registered"):
        register_backbone("test_tiny")(lambda: Backbone(TinyNet(), 6))

    @register_backbone("test_no_dim")
    def no_dim() -> nn.Module:
        return TinyNet()

    with pytest.raises(ConfigError, match="feature_dim"):
        build_backbone("test_no_dim")


def test_bad_configs():
    with pytest.raises(ConfigError, match="name"):
        build_from_config({"width": 1})
    model = build_backbone("resnet18", width=0.25)
    model.arch["stem"] = object()  # not JSON-able: export could not save it
    with pytest.raises(ConfigError, match="not plain data"):
        backbone_config(model)
    with pytest.raises(ConfigError, match=":"):
        register_backbone("a:b")


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_adapters_say_to_install_a_missing_package(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, f"{package}.models", None)
    with pytest.raises(ConfigError, match=f"needs {package}: pip install {package}"):
        build_backbone(f"{package}:resnet50")


def _fake_package(monkeypatch, name: str, **attrs) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


class Classifier(nn.Module):
    """Shaped like a torchvision classifier: a trunk, then .fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.trunk = TinyNet(7)
        self.fc = nn.Linear(7, num_classes)

    def forward(self, x):
        return self.fc(self.trunk(x))


def test_torchvision_adapter_strips_fc(monkeypatch):
    def get_model(name, **kwargs):
        if name != "tiny":
            raise ValueError(f"Unknown model {name}")
        return Classifier(**kwargs)

    _fake_package(monkeypatch, "torchvision")
    _fake_package(monkeypatch, "torchvision.models", get_model=get_model)
    model = build_backbone("torchvision:tiny", num_classes=5)
    assert model.feature_dim == 7 and isinstance(model.fc, nn.Identity)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 7)
    assert backbone_config(model) == {"name": "torchvision:tiny", "num_classes": 5}
    with pytest.raises(ConfigError, match="Unknown model nope"):
        build_backbone("torchvision:nope")


def test_timm_adapter_sets_num_classes_zero(monkeypatch):
    calls = []

    def create_model(name, num_classes=1000, **kwargs):
        calls.append((name, num_classes, kwargs))
        net = TinyNet(9)
        net.num_features = 9
        return net

    _fake_package(monkeypatch, "timm", create_model=create_model)
    model = build_backbone("timm:tiny", pretrained=False)
    assert calls == [("tiny", 0, {"pretrained": False})] and model.feature_dim == 9
    with pytest.raises(ConfigError, match="num_classes"):
        build_backbone("timm:tiny", num_classes=3)
