"""What a run is made of, built from its :class:`Config`: data, augmentations, backbone.

Pretraining, evaluation and export all rebuild these pieces the same way, so
a run folder (its ``config.yaml`` and checkpoint) is all a later stage needs.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from selfsup.augment import NORMALIZATION, RECIPES, build_recipe
from selfsup.config import Config
from selfsup.data import ImageSet, load_dataset
from selfsup.data.subsets import validation_split
from selfsup.errors import ConfigError, DataError
from selfsup.models import build_backbone
from selfsup.runs import (  # noqa: F401 (their old home)
    RunFolder,
    check_writable_folder,
    load_run_backbone,
    run_config,
)


@dataclass
class Data:
    train: ImageSet  # the pretraining split (labels unused)
    test: ImageSet | None  # None when the data set has no labelled test split
    memory: ImageSet | None  # labelled train split for k-NN / linear (= train unless STL-10)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    channels: int
    split: str = "test"  # what ``test`` is: the test split, or ``val`` held out of train


def _normalization(name: str, data: ImageSet, where: str
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    base = name.removesuffix("-sample")
    if base in NORMALIZATION:
        return NORMALIZATION[base]
    if data.stats is not None:  # a packed store measured every image while packing
        mean, std = data.stats
        check_store_stats(data, where)
        return tuple(mean), tuple(max(s, 1e-3) for s in std)  # a constant channel divides by 0
    # other unknown data: measure it on up to 10k images, in chunks (bounded memory)
    n, c = min(len(data), 10_000), data.channels
    s1, s2 = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for lo in range(0, n, 256):
        x = data.read(slice(lo, min(lo + 256, n))).double().div_(255)
        s1 += x.sum((0, 2, 3))
        s2 += x.square().sum((0, 2, 3))
    pixels = n * data.size * data.images.shape[-2]
    mean = s1 / pixels
    std = (s2 / pixels - mean.square()).clamp_min(1e-6).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def check_store_stats(data: ImageSet, where: str) -> None:
    """A store's recorded mean and std (``meta.json``) must be what pixels in [0, 1] can have:
    a NaN, a negative std or a std of 0 for a channel that varies would only surface steps
    later as a NaN loss whose hint (a lower optim.lr) points the wrong way."""
    mean, std = data.stats
    bad = _bad_stat("mean", mean, 1.0, data.channels) or _bad_stat("std", std, 0.5, data.channels)
    for c in [c for c, s in enumerate(std) if s == 0] if bad is None else []:
        # a constant channel has std 0 (kept: it normalises to 0); one that varies cannot
        sample = data.read(slice(0, min(len(data), 256)))[:, c]
        if sample.amin() != sample.amax():
            bad = f"std 0 for channel {c}, whose pixels vary"
            break
    if bad is not None:
        raise DataError(f"{where}: the store's meta.json has {bad}; its normalisation "
                        "statistics are damaged, pack the store again")


def _bad_stat(what: str, values, high: float, channels: int) -> str | None:
    """What is wrong with one statistic's per-channel values, which must lie in [0, ``high``]
    (0.5: the largest std that values in [0, 1] can have); None when nothing is."""
    if len(values) != channels:
        return f"{len(values)} {what} values for {channels} channels"
    for c, v in enumerate(values):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= high):
            return f"{what} {v!r} for channel {c} (must be in [0, {high:g}])"
    return None


def load_split(cfg: Config, split: str) -> ImageSet:
    """One split of ``cfg``'s data set; an image folder goes through its packed store."""
    d = cfg.data
    kwargs = {}
    if d.dataset == "folder":  # its store is packed, or locked, in the cache: writes there
        from selfsup.data.store import default_store_cache

        cache = Path(d.cache_dir).expanduser() if d.cache_dir else default_store_cache()
        check_writable_folder(cache, "data.cache_dir" if d.cache_dir else "the store cache")
        kwargs = dict(size=d.pack_size or d.size, store_dir=d.cache_dir,
                      pack_workers=d.pack_workers, decoder=d.decoder, progress=cfg.run.progress)
    return load_dataset(d.dataset, d.root, split=split, download=d.download, verify=d.verify,
                        **kwargs)


def load_data(cfg: Config, *, need_test: bool = True) -> Data:
    """The train split (unlabelled use) and, where there is one, the labelled test split."""
    d = cfg.data
    train = load_split(cfg, d.train_split)
    val = None
    if cfg.eval.split == "val":  # carved before data.limit: the same val for any limit
        train, val = _hold_out_val(train, d.dataset)
    if d.limit is not None:
        train = train.head(min(d.limit, len(train)))
    test, memory = None, train
    if need_test and d.train_split != "train":
        memory = load_split(cfg, "train")
    if need_test and val is not None:
        test = val
    elif need_test:
        try:
            test = load_split(cfg, "test")
        except DataError as e:
            warnings.warn(f"no test split, k-NN monitor off: {e}", stacklevel=2)
    if d.normalization is not None:
        if d.normalization not in NORMALIZATION:
            raise ConfigError(f"unknown data.normalization {d.normalization!r}; known: "
                              f"{', '.join(sorted(NORMALIZATION))}")
        mean, std = NORMALIZATION[d.normalization]
    else:
        where = d.root if d.dataset == "store" else f"data.root {d.root} (its packed store)"
        mean, std = _normalization(d.dataset, train, str(where))
    channels = train.channels
    if len(mean) != channels:  # e.g. ImageNet statistics on a grayscale set
        raise ConfigError(f"data.normalization has {len(mean)} channels, the images {channels}")
    size = d.size or train.size
    if size > train.size and train.mapped:
        warnings.warn(f"data.size {size} is larger than the stored images ({train.size} px): "
                      "every view is upsampled", stacklevel=2)
    return Data(train, test, memory, tuple(mean), tuple(std), size, channels, cfg.eval.split)


def _hold_out_val(train: ImageSet, dataset: str) -> tuple[ImageSet, ImageSet]:
    """The train split without its validation 10 %, and that 10 % (PROTOCOLS.md)."""
    if train.labels is None:
        raise ConfigError(f"eval.split val needs a labelled train split; {dataset}'s has no "
                          "labels")
    keep, val = validation_split(train.labels)
    held = train.subset(val)
    held.name = f"{train.name} (val)"
    return train.subset(keep), held


def input_spec(data: Data) -> dict:
    """What a network trained on ``data`` takes: recorded in checkpoints, so export and later
    stages need not read the data again (it may have moved, or been deleted)."""
    return {"size": data.size, "channels": data.channels, "mean": list(data.mean),
            "std": list(data.std)}


def train_augmentation(cfg: Config, data: Data):
    """The recipe named by ``augment.recipe``, given only the settings it takes."""
    a = cfg.augment
    if a.recipe not in RECIPES or a.recipe == "eval":
        raise ConfigError(f"unknown augment.recipe {a.recipe!r}; known: "
                          f"{', '.join(r for r in sorted(RECIPES) if r != 'eval')}")
    takes = inspect.signature(RECIPES[a.recipe]).parameters
    kwargs: dict = {"size": a.size or data.size, "mean": data.mean, "std": data.std}
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
    kwargs = dict(width=m.width, stem=m.stem, sk_ratio=m.sk_ratio, in_channels=in_channels,
                  zero_init_residual=m.zero_init_residual)
    if not m.backbone.startswith("resnet"):
        kwargs = {}  # adapters and user backbones take their own arguments
    return build_backbone(m.backbone, **kwargs)


# what resolve_device takes (the train.device rule of the config checks)
DEVICES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str | None, option: str = "--device") -> None:
    """Refuse a device torch would reject only later, after the model and data are loaded."""
    if name is not None and DEVICES.fullmatch(name) is None:
        raise ConfigError(f"{option} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device {name!r} asked for, but CUDA is not available")
    return dev
