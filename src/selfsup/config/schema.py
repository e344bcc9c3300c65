"""Typed configuration: dataclasses, YAML presets, ``--section.key value`` overrides.

A run is fully described by one :class:`Config`; its resolved form is written
to ``config.yaml`` in every run folder, so any run can be repeated or resumed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from selfsup.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist-sample"  # registry name (see selfsup.data)
    root: str | None = None  # folder with the data set's files
    train_split: str = "train"  # pretraining split (stl10: train+unlabeled)
    limit: int | None = None  # use only the first N pretraining images (smoke tests)
    download: bool = False  # fetch missing files (checksummed) into root or the cache
    verify: bool | str = True  # official files: checksums (true) | warn on other sizes | false
    size: int | None = None  # training input side; None = the images' own (stored) side
    on_device: bool | str = "auto"  # hold the uint8 set on the device: auto (if it fits) | bool
    normalization: str | None = None  # name in augment.NORMALIZATION; None = the data set's
    # image folders (dataset: folder) are packed once into a memory-mapped store, then reused
    pack_size: int | None = None  # stored side; None: data.size, else 224 (train may crop less)
    cache_dir: str | None = None  # where packed folders go; None: $SELFSUP_DATA/stores
    pack_workers: int | None = None  # decoding processes; None: the CPUs available
    decoder: str = "pil"  # pil | simplejpeg (JPEG DCT-scaled decoding, selfsup[fast-jpeg])


@dataclass
class AugmentConfig:
    recipe: str = "simclr"  # simclr | moco_v1 | moco_v2
    strength: float = 0.5  # SimCLR colour strength s (0.5 at 32 px, 1.0 ImageNet); simclr only
    blur: bool | None = None  # None: on above 32 px, off at 32 px and below (simclr, moco_v2)
    crop_scale: tuple[float, float] | None = None  # None: the recipe's (SimCLR 0.08, MoCo 0.2)


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    width: float = 1.0
    stem: str = "cifar"  # cifar: 3x3 stride-1 conv, no max-pool (SimCLR B.9)
    sk_ratio: float = 0.0
    head_layers: int = 2  # 2: SimCLR v1, 3: SimCLR v2
    head_hidden: int | None = None  # None = the backbone's feature dim
    out_dim: int = 128


@dataclass
class MethodConfig:
    name: str = "simclr"  # simclr | moco | jigsaw
    temperature: float = 0.5
    # MoCo (He et al. 2020): key encoder EMA, queue of negatives, shuffle BN
    momentum: float = 0.99  # m in theta_k <- m theta_k + (1 - m) theta_q
    momentum_schedule: str = "constant"  # constant | cosine (m -> 1)
    queue_size: int = 4096  # K, any K >= global batch
    symmetric: bool = False  # loss on (q1, k2) and (q2, k1)
    shuffle_bn: str = "auto"  # auto | ddp | groups | off
    bn_groups: int = 8  # single-device shuffle-BN equivalent: BN statistics per group
    # SimCLR v2 (Chen et al. 2020): MoCo-style memory (momentum encoder + queue) for simclr
    memory: bool = False  # uses momentum, momentum_schedule and queue_size above
    # Feature Transformation (Zhu et al. ICCV 2021), for moco and simclr
    ft_extrapolate: bool = False  # hard positives: lambda_ex = 1 + Beta(a_pos, a_pos)
    ft_interpolate: bool = False  # diverse negatives: lambda_in ~ Beta(a_neg, a_neg)
    ft_alpha_pos: float = 2.0
    ft_alpha_neg: float = 1.6
    ft_lambda_pos: float | None = None  # a fixed lambda_ex instead of the Beta draw (>= 1)
    ft_granularity: str = "batch"  # batch (one draw per step) | sample | dim
    ft_renormalize: bool = False  # L2-normalise the mixed features again
    ft_start_epoch: float = 0.0  # FT is applied from this epoch on
    # Jigsaw (Noroozi & Favaro, ECCV 2016); Jigsaw++ (Noroozi et al., CVPR 2018)
    jigsaw_permutations: int | None = None  # classes; None: 100, or 701 with jigsaw_plus
    jigsaw_plus: bool = False  # Jigsaw++: 0-2 tiles from another image, more grayscale
    jigsaw_grayscale: float | None = None  # extra grayscale p in the method; None: 0.6 / 0
    jigsaw_gap: int = 2  # cell side - tile side: each tile moves 0..gap px in its cell
    jigsaw_hidden: int = 512  # width of fc6 (per tile) and fc7


@dataclass
class OptimConfig:
    optimizer: str = "lars"  # lars | sgd | adamw
    lr: float | None = None  # None: base_lr scaled by lr_scaling
    base_lr: float = 0.3
    lr_scaling: str = "linear"  # linear: base*B/256 | sqrt: base*sqrt(B) | none
    weight_decay: float = 1e-6
    momentum: float = 0.9
    schedule: str = "warmup_cosine"  # warmup_cosine | step | constant
    warmup_epochs: float = 10.0
    final_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 100
    steps: int | None = None  # total optimiser steps; overrides epochs (fixed-budget runs)
    batch_size: int = 256  # global batch (all ranks together)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    compile: bool = False
    channels_last: bool = False
    sync_bn: bool = False  # SyncBatchNorm across ranks under torchrun (CUDA)
    max_time_s: float | None = None  # wall-clock budget; stops cleanly with a checkpoint
    num_threads: int | None = None  # CPU threads (torch.set_num_threads)
    timeout_s: float = 1800.0  # a rank waits this long for the others, then the run stops


@dataclass
class EvalConfig:
    knn_every: int = 10  # epochs between k-NN monitors (0: only at the end, -1: never)
    knn_k: int = 200
    knn_temperature: float = 0.1
    batch_size: int = 512


@dataclass
class RunConfig:
    out_dir: str = "runs"
    name: str | None = None  # default: <method>-<dataset>-<time>
    checkpoint_every: int = 0  # also keep checkpoints/epoch_<N>.pt every N epochs
    checkpoint_steps: int = 0  # also write last.pt every N steps (mid-epoch resume)
    log_every: int = 20  # steps between metric syncs (each is one host sync)
    score_bins: int = 40  # histogram bins of positive/negative cosine scores over [-1, 1]
    tensorboard: bool = False
    progress: bool = True
    # continue the named run: auto (after a torchrun elastic restart) | true (also when
    # launched again by hand, if it has a checkpoint) | false (always a new folder)
    resume: bool | str = "auto"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints pass for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(
                f"config key {key} expects a list of {len(args)} values, got {value!r}"
            )
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # one place for every float setting
                raise ConfigError(f"config key {key} must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used in the dataclasses
        return value
    raise ConfigError(f"config key {key} expects {tp.__name__}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_names() -> list[str]:
    """Names of the YAML presets shipped inside the package."""
    folder = resources.files("selfsup") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str | Path) -> dict:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text (YAML) file") from None
    else:
        preset = resources.files("selfsup") / "configs" / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"unknown config {name_or_path!r}: not a file and not a preset "
                f"({', '.join(preset_names())})"
            )
        text = preset.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{name_or_path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: a config must be a YAML mapping")
    return data


def parse_overrides(pairs: list[str]) -> dict:
    """``["--train.epochs", "5", "--data.root=/x"]`` -> nested dict with YAML-typed values."""
    out: dict = {}
    i = 0
    while i < len(pairs):
        arg = pairs[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"expected --section.key value, got {arg!r}")
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(pairs):
                raise ConfigError(f"missing value for --{key}")
            raw = pairs[i + 1]
            i += 1
        i += 1
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load_config(
    name_or_path: str | Path | None = None,
    overrides: dict | list[str] | None = None,
) -> Config:
    """Defaults, then a preset or YAML file, then overrides; validated."""
    data: dict = {}
    if name_or_path is not None:
        data = _read_yaml(name_or_path)
    if overrides:
        upd = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        data = _merge(data, upd)
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# the largest jigsaw permutation set we select (selfsup.methods.permutations.MAX_PERMUTATIONS;
# repeated here so that loading a config does not import torch)
JIGSAW_MAX_PERMUTATIONS = 2000


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express; each names the key and value."""
    t, o, m = cfg.train, cfg.optim, cfg.model
    _require(t.batch_size >= 2, f"train.batch_size must be >= 2 (negatives), got {t.batch_size}")
    _require(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _require(t.steps is None or t.steps >= 1, f"train.steps must be >= 1, got {t.steps}")
    _require(t.precision in ("auto", "bf16", "fp32"),
             f"train.precision must be auto, bf16 or fp32, got {t.precision!r}")
    _require(t.max_time_s is None or t.max_time_s > 0,
             f"train.max_time_s must be > 0, got {t.max_time_s}")
    _require(o.lr is None or o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _require(o.base_lr > 0, f"optim.base_lr must be > 0, got {o.base_lr}")
    _require(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _require(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    _require(o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    _require(o.optimizer in ("lars", "sgd", "adamw"),
             f"optim.optimizer must be lars, sgd or adamw, got {o.optimizer!r}")
    _require(o.schedule in ("warmup_cosine", "step", "constant"),
             f"optim.schedule must be warmup_cosine, step or constant, got {o.schedule!r}")
    _require(o.lr_scaling in ("linear", "sqrt", "none"),
             f"optim.lr_scaling must be linear, sqrt or none, got {o.lr_scaling!r}")
    me = cfg.method
    _require(me.temperature > 0, f"method.temperature must be > 0, got {me.temperature}")
    _require(0 <= me.momentum <= 1, f"method.momentum must be in [0, 1], got {me.momentum}")
    _require(me.momentum_schedule in ("constant", "cosine"),
             f"method.momentum_schedule must be constant or cosine, got {me.momentum_schedule!r}")
    _require(me.shuffle_bn in ("auto", "ddp", "groups", "off"),
             f"method.shuffle_bn must be auto, ddp, groups or off, got {me.shuffle_bn!r}")
    _require(me.queue_size >= 1, f"method.queue_size must be >= 1, got {me.queue_size}")
    _require(me.bn_groups >= 1, f"method.bn_groups must be >= 1, got {me.bn_groups}")
    _require(me.ft_alpha_pos > 0, f"method.ft_alpha_pos must be > 0, got {me.ft_alpha_pos}")
    _require(me.ft_alpha_neg > 0, f"method.ft_alpha_neg must be > 0, got {me.ft_alpha_neg}")
    _require(me.ft_lambda_pos is None or me.ft_lambda_pos >= 1,
             f"method.ft_lambda_pos must be >= 1 for extrapolation (harder positives), got "
             f"{me.ft_lambda_pos}; a value < 1 interpolates, which the FT paper finds no help")
    _require(me.ft_granularity in ("batch", "sample", "dim"),
             f"method.ft_granularity must be batch, sample or dim, got {me.ft_granularity!r}")
    _require(me.ft_start_epoch >= 0,
             f"method.ft_start_epoch must be >= 0, got {me.ft_start_epoch}")
    _require(t.steps is not None or not (me.ft_extrapolate or me.ft_interpolate)
             or me.ft_start_epoch < t.epochs,
             f"method.ft_start_epoch {me.ft_start_epoch} is not before the end of the run "
             f"(train.epochs {t.epochs}): Feature Transformation would never start")
    _require(not me.memory or me.name == "simclr",
             f"method.memory is SimCLR v2's option; {me.name} has its own negatives")
    _require(not me.memory or not (me.ft_extrapolate or me.ft_interpolate),
             "method.memory with Feature Transformation is not supported; turn one off")
    _require(me.jigsaw_permutations is None
             or 2 <= me.jigsaw_permutations <= JIGSAW_MAX_PERMUTATIONS,
             f"method.jigsaw_permutations must be in [2, {JIGSAW_MAX_PERMUTATIONS}], got "
             f"{me.jigsaw_permutations}")
    _require(me.jigsaw_grayscale is None or 0 <= me.jigsaw_grayscale <= 1,
             f"method.jigsaw_grayscale must be in [0, 1], got {me.jigsaw_grayscale}")
    _require(me.jigsaw_gap >= 0, f"method.jigsaw_gap must be >= 0, got {me.jigsaw_gap}")
    _require(me.jigsaw_hidden >= 1, f"method.jigsaw_hidden must be >= 1, got {me.jigsaw_hidden}")
    _require(not me.jigsaw_plus or me.name == "jigsaw",
             f"method.jigsaw_plus is a Jigsaw option; method.name is {me.name!r}")
    _require(m.width > 0, f"model.width must be > 0, got {m.width}")
    _require(m.head_layers >= 1, f"model.head_layers must be >= 1, got {m.head_layers}")
    _require(m.out_dim >= 1, f"model.out_dim must be >= 1, got {m.out_dim}")
    d = cfg.data
    _require(d.size is None or d.size >= 8, f"data.size must be >= 8, got {d.size}")
    _require(d.pack_size is None or d.pack_size >= 8,
             f"data.pack_size must be >= 8, got {d.pack_size}")
    _require(d.dataset != "folder" or d.size is None or d.pack_size is None
             or d.size <= d.pack_size,
             f"data.size {d.size} is larger than data.pack_size {d.pack_size}: the stored "
             "images would be upsampled; pack at least at the training side")
    _require(d.on_device in (True, False, "auto"),
             f"data.on_device must be auto, true or false, got {d.on_device!r}")
    _require(d.pack_workers is None or d.pack_workers >= 0,
             f"data.pack_workers must be >= 0, got {d.pack_workers}")
    _require(d.verify in (True, False, "warn"),
             f"data.verify must be true, warn or false, got {d.verify!r}")
    _require(d.decoder in ("pil", "simplejpeg"),
             f"data.decoder must be pil or simplejpeg, got {d.decoder!r}")
    _require(cfg.data.limit is None or cfg.data.limit >= 2,
             f"data.limit must be >= 2, got {cfg.data.limit}")
    _require(cfg.eval.knn_k >= 1, f"eval.knn_k must be >= 1, got {cfg.eval.knn_k}")
    _require(cfg.eval.knn_temperature > 0,
             f"eval.knn_temperature must be > 0, got {cfg.eval.knn_temperature}")
    _require(cfg.run.log_every >= 1, f"run.log_every must be >= 1, got {cfg.run.log_every}")
    _require(t.num_threads is None or t.num_threads >= 1,
             f"train.num_threads must be >= 1, got {t.num_threads}")
    _require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", t.device) is not None,
             f"train.device must be auto, cpu, cuda, cuda:N or mps, got {t.device!r}")
    _require(o.final_lr >= 0, f"optim.final_lr must be >= 0, got {o.final_lr}")
    _require(m.head_hidden is None or m.head_hidden >= 1,
             f"model.head_hidden must be >= 1, got {m.head_hidden}")
    _require(0 <= m.sk_ratio < 1, f"model.sk_ratio must be in [0, 1), got {m.sk_ratio}")
    _require(cfg.eval.batch_size >= 1,
             f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    _require(cfg.eval.knn_every >= -1,
             f"eval.knn_every must be >= -1 (-1: never), got {cfg.eval.knn_every}")
    _require(cfg.run.score_bins >= 1, f"run.score_bins must be >= 1, got {cfg.run.score_bins}")
    _require(cfg.run.checkpoint_steps >= 0,
             f"run.checkpoint_steps must be >= 0, got {cfg.run.checkpoint_steps}")
    _require(cfg.run.checkpoint_every >= 0,
             f"run.checkpoint_every must be >= 0, got {cfg.run.checkpoint_every}")
    _require(cfg.augment.strength >= 0,
             f"augment.strength must be >= 0, got {cfg.augment.strength}")
    cs = cfg.augment.crop_scale
    _require(cs is None or 0 < cs[0] <= cs[1] <= 1,
             f"augment.crop_scale must be [min, max] with 0 < min <= max <= 1, got {cs}")
    _require(cfg.run.resume in (True, False, "auto"),
             f"run.resume must be auto, true or false, got {cfg.run.resume!r}")
    _require(t.timeout_s > 0, f"train.timeout_s must be > 0, got {t.timeout_s}")


def base_lr_for(cfg: Config) -> float:
    """SimCLR's rule: lr = 0.3 x B/256 (linear) or 0.075 x sqrt(B) (sqrt, SimCLR v2)."""
    o = cfg.optim
    if o.lr is not None:
        return o.lr
    b = cfg.train.batch_size
    if o.lr_scaling == "linear":
        return o.base_lr * b / 256
    if o.lr_scaling == "sqrt":
        return o.base_lr * b**0.5
    return o.base_lr
