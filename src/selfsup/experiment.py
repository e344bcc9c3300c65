"""What a run is made of, built from its :class:`Config`: data, augmentations, backbone.

Pretraining, evaluation and export all rebuild these pieces the same way, so
a run folder (its ``config.yaml`` and checkpoint) is all a later stage needs.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from selfsup.augment import NORMALIZATION, RECIPES, build_recipe
from selfsup.config import Config, load_config
from selfsup.data import ImageSet, load_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.models import build_backbone
from selfsup.train.checkpoint import load_checkpoint


@dataclass
class Data:
    train: ImageSet  # the pretraining split (labels unused)
    test: ImageSet | None  # None when the data set has no labelled test split
    memory: ImageSet | None  # labelled train split for k-NN / linear (= train unless STL-10)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    channels: int


def _normalization(name: str, images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    base = name.removesuffix("-sample")
    if base in NORMALIZATION:
        return NORMALIZATION[base]
    # unknown data (an image folder): measure it on up to 10k images
    x = images[:10_000].float().div_(255)
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).clamp_min(1e-3).tolist())


def load_data(cfg: Config, *, need_test: bool = True) -> Data:
    """The train split (unlabelled use) and, where there is one, the labelled test split."""
    d = cfg.data
    train = load_dataset(d.dataset, d.root, split=d.train_split, download=d.download)
    if d.limit is not None:
        train = train.subset(torch.arange(min(d.limit, len(train))))
    test, memory = None, train
    if need_test and d.train_split != "train":
        memory = load_dataset(d.dataset, d.root, split="train", download=d.download)
    if need_test and d.dataset != "folder":
        try:
            test = load_dataset(d.dataset, d.root, split="test", download=d.download)
        except DataError as e:
            warnings.warn(f"no test split, k-NN monitor off: {e}", stacklevel=2)
    if d.normalization is not None:
        if d.normalization not in NORMALIZATION:
            raise ConfigError(f"unknown data.normalization {d.normalization!r}; known: "
                              f"{', '.join(sorted(NORMALIZATION))}")
        mean, std = NORMALIZATION[d.normalization]
    else:
        mean, std = _normalization(d.dataset, train.images)
    channels = train.images.shape[1]
    if len(mean) != channels:  # e.g. ImageNet statistics on a grayscale set
        raise ConfigError(f"data.normalization has {len(mean)} channels, the images {channels}")
    size = d.size or train.images.shape[-1]
    return Data(train, test, memory, tuple(mean), tuple(std), size, channels)


def train_augmentation(cfg: Config, data: Data):
    """The recipe named by ``augment.recipe``, given only the settings it takes."""
    a = cfg.augment
    if a.recipe not in RECIPES or a.recipe == "eval":
        raise ConfigError(f"unknown augment.recipe {a.recipe!r}; known: "
                          f"{', '.join(r for r in sorted(RECIPES) if r != 'eval')}")
    takes = inspect.signature(RECIPES[a.recipe]).parameters
    kwargs: dict = {"size": data.size, "mean": data.mean, "std": data.std}
    if "strength" in takes:
        kwargs["strength"] = a.strength
    if "blur" in takes:
        kwargs["blur"] = a.blur
    elif a.blur:
        raise ConfigError(f"augment.blur: the {a.recipe} recipe has no blur")
    if a.crop_scale is not None:
        kwargs["crop_scale"] = a.crop_scale
    return build_recipe(a.recipe, **kwargs)


def eval_augmentation(data: Data):
    return build_recipe("eval", size=data.size, mean=data.mean, std=data.std)


def make_backbone(cfg: Config, in_channels: int) -> nn.Module:
    m = cfg.model
    kwargs = dict(width=m.width, stem=m.stem, sk_ratio=m.sk_ratio, in_channels=in_channels)
    if not m.backbone.startswith("resnet"):
        kwargs = {}  # adapters and user backbones take their own arguments
    return build_backbone(m.backbone, **kwargs)


def run_config(run_dir: str | Path, overrides: list[str] | dict | None = None) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DataError(f"{run_dir}: not a selfsup run folder (no config.yaml)")
    return load_config(path, overrides)


def load_run_backbone(run_dir: str | Path, cfg: Config | None = None,
                      checkpoint: str = "last.pt") -> tuple[nn.Module, Config, dict]:
    """The trained backbone of a run (CPU, eval mode), its config and checkpoint metadata."""
    cfg = cfg or run_config(run_dir)
    ckpt = load_checkpoint(Path(run_dir) / "checkpoints" / checkpoint)
    in_channels = int(ckpt.get("in_channels", 3))
    backbone = make_backbone(cfg, in_channels)
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(f"{run_dir}: checkpoint does not match model.backbone "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    backbone.eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng")}
    return backbone, cfg, meta


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device {name!r} asked for, but CUDA is not available")
    return dev
