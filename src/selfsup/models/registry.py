"""Backbones built by name, timm-style, and the plain-data description that rebuilds them.

- ``build_backbone("resnet50", width=2)``: a registered builder, called with
  the keyword arguments. Built-ins: ``resnet18`` .. ``resnet152``
  (:func:`selfsup.models.resnet.resnet`; keywords ``width``, ``stem``,
  ``sk_ratio``, ``in_channels``, ``zero_init_residual``).
- ``build_backbone("torchvision:resnet50")`` / ``("timm:convnext_tiny")``:
  adapters that import the package only when asked for, remove its
  classifier (torchvision: the last Linear of ``fc``/``classifier``/``heads``/
  ``head`` becomes Identity, keeping every other parameter name; timm:
  ``num_classes=0``) and set ``feature_dim``.
- ``@register_backbone("mine")`` on a function returning an ``nn.Module`` with
  an integer ``feature_dim`` (wrap any module in :class:`Backbone` for that).

Every built backbone carries ``.arch = {"name": ..., **kwargs}`` with the
builder's defaults filled in, so ``build_from_config(backbone_config(m))``
rebuilds the same architecture even if a default changes later; export saves
it to ``config.json``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.models.resnet import DEPTHS, ResNet, resnet
from selfsup.registry import registrar

Builder = Callable[..., nn.Module]
_BUILDERS: dict[str, Builder] = {}


class Backbone(nn.Module):
    """Makes any ``module`` mapping images to (N, ``feature_dim``) usable as a backbone f.

    The module is stored as ``.net`` (state-dict prefix ``net.``; not
    ``module.``, which checkpoint cleaners strip as a DDP prefix). Every
    forward checks the output shape: reading a shape is free (no device sync)
    and a wrong ``feature_dim`` would otherwise surface later as an obscure
    matmul error in the head.
    """

    def __init__(self, module: nn.Module, feature_dim: int) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"Backbone needs an nn.Module, got {type(module).__name__}")
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise ConfigError(f"Backbone feature_dim must be an integer >= 1, got {feature_dim!r}")
        self.net = module
        self.feature_dim = feature_dim

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[1] != self.feature_dim:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"backbone output should have shape (N, {self.feature_dim}), got "
                             f"{got}; pool/flatten its features or fix feature_dim")
        return out


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn(**kwargs) -> nn.Module`` (with ``.feature_dim``) as ``name``.

    Registering a different function under a taken name is an error;
    re-running the same definition (same module and qualified name, e.g. a
    notebook cell) replaces it.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError(f"backbone name must be a non-empty string without ':', got {name!r}")

    return registrar(_BUILDERS, "backbone", name)


def list_backbones() -> list[str]:
    """The registered names (adapters accept any ``torchvision:<name>`` / ``timm:<name>``)."""
    return sorted(_BUILDERS)


def _import(module: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ConfigError(f"backbone {name!r} needs {package}: pip install {package}") from None


def _strip_classifier(model: nn.Module, name: str) -> int:
    """Replace the last Linear of the classifier with Identity; return its input width."""
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential):
            linear = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
            if linear:
                dim = head[linear[-1]].in_features
                head[linear[-1]] = nn.Identity()
                return dim
    raise ConfigError(f"backbone {name!r}: no Linear classifier found to remove; "
                      "wrap the model yourself with Backbone(module, feature_dim)")


def _torchvision(model_name: str, kwargs: dict[str, Any]) -> nn.Module:
    name = f"torchvision:{model_name}"
    models = _import("torchvision.models", name)
    try:
        get_model = getattr(models, "get_model", None)  # torchvision >= 0.14
        model = (get_model(model_name, **kwargs) if get_model is not None
                 else getattr(models, model_name)(**kwargs))
    except (ValueError, AttributeError, TypeError) as e:
        raise ConfigError(f"backbone {name!r}: {e}") from None
    model.feature_dim = _strip_classifier(model, name)
    return model


def _timm(model_name: str, kwargs: dict[str, Any]) -> nn.Module:
    name = f"timm:{model_name}"
    timm = _import("timm", name)
    if "num_classes" in kwargs:
        raise ConfigError(f"backbone {name!r}: num_classes is fixed to 0 (no classifier)")
    try:
        model = timm.create_model(model_name, num_classes=0, **kwargs)
    except (RuntimeError, ValueError, TypeError) as e:  # timm: RuntimeError('Unknown model')
        raise ConfigError(f"backbone {name!r}: {e}") from None
    # With num_classes=0 a timm model returns pooled pre-logits: head_hidden_size wide if it
    # has a pre-logits layer, else num_features.
    model.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return model


_ADAPTERS: dict[str, Callable[[str, dict[str, Any]], nn.Module]] = {
    "torchvision": _torchvision,
    "timm": _timm,
}


def _unknown(name: object) -> ConfigError:
    known = ", ".join(list_backbones())
    return ConfigError(f"unknown backbone {name!r}; known: {known}, "
                       "or 'torchvision:<name>' / 'timm:<name>'")


def check_backbone_name(name: str, role: str = "backbone") -> None:
    """ConfigError unless ``name`` can be built: a stage checks it before loading any data."""
    prefix, colon, model_name = name.partition(":")
    if name in _BUILDERS or (colon and prefix in _ADAPTERS and model_name):
        return
    raise ConfigError(f"unknown {role} architecture {name!r}; known: "
                      f"{', '.join(list_backbones())}, or 'torchvision:<name>' / 'timm:<name>'")


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name`` with ``kwargs``; it has ``.feature_dim`` and ``.arch``."""
    if not isinstance(name, str):
        raise _unknown(name)
    prefix, colon, model_name = name.partition(":")
    if colon:
        if prefix not in _ADAPTERS or not model_name:
            raise _unknown(name)
        model = _ADAPTERS[prefix](model_name, dict(kwargs))
        resolved = dict(kwargs)
    else:
        fn = _BUILDERS.get(name)
        if fn is None:
            raise _unknown(name)
        # Bind first: a wrong keyword is a config mistake, not a TypeError from deep inside.
        signature = inspect.signature(fn)
        try:
            bound = signature.bind(**kwargs)
        except TypeError as e:
            raise ConfigError(f"backbone {name!r}: {e}") from None
        bound.apply_defaults()
        resolved = {}
        for key, value in bound.arguments.items():
            if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                resolved.update(value)
            elif signature.parameters[key].kind is not inspect.Parameter.VAR_POSITIONAL:
                resolved[key] = value
        model = fn(**resolved)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"backbone {name!r} returned {type(model).__name__}, not an nn.Module")
    dim = getattr(model, "feature_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"backbone {name!r} has no integer .feature_dim (got {dim!r}); "
                          "wrap it in Backbone(module, feature_dim)")
    model.arch = {"name": name, **resolved}
    return model


def backbone_config(model: nn.Module) -> dict[str, Any]:
    """The plain-data (JSON-able) ``{"name": ..., **kwargs}`` that rebuilds ``model``."""
    arch = getattr(model, "arch", None)
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise ConfigError(f"{type(model).__name__} was not built by build_backbone (no .arch); "
                          "register its builder with @register_backbone and build it by name")
    try:
        json.dumps(arch)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"backbone {arch['name']!r} arguments are not plain data: {e}") from None
    return copy.deepcopy(arch)


def build_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Inverse of :func:`backbone_config`: ``build_backbone(config["name"], **rest)``."""
    if not isinstance(config, Mapping) or not isinstance(config.get("name"), str):
        keys = list(config) if isinstance(config, Mapping) else type(config).__name__
        raise ConfigError(f"backbone config needs a 'name' string, got {keys}")
    kwargs = {k: v for k, v in config.items() if k != "name"}
    return build_backbone(config["name"], **kwargs)


def _resnet_builder(depth: int) -> Builder:
    def build(width: float = 1.0, stem: str = "imagenet", sk_ratio: float = 0.0,
              in_channels: int = 3, zero_init_residual: bool = False) -> ResNet:
        return resnet(depth, width, stem, sk_ratio, in_channels,
                      zero_init_residual=zero_init_residual)

    build.__name__ = build.__qualname__ = f"resnet{depth}"
    build.__doc__ = f"ResNet-{depth} (see selfsup.models.resnet.resnet)."
    return build


for _depth in DEPTHS:
    register_backbone(f"resnet{_depth}")(_resnet_builder(_depth))
