"""The sections of a :class:`Config`: one dataclass each, defaults and one-line comments.

A run is fully described by one :class:`Config`; its resolved form is written
to ``config.yaml`` in every run folder, so any run can be repeated or resumed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from selfsup.config.method import MethodConfig


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
    cache_dir: str | None = None  # packed folders; None: $SELFSUP_STORES or <data cache>/stores
    pack_workers: int | None = None  # decoding processes; None: the CPUs available
    decoder: str = "pil"  # pil | simplejpeg (JPEG DCT-scaled decoding, selfsup[fast-jpeg])


@dataclass
class AugmentConfig:
    recipe: str = "simclr"  # simclr | moco_v1 | moco_v2
    strength: float = 0.5  # SimCLR colour strength s (0.5 at 32 px, 1.0 ImageNet); simclr only
    blur: bool | None = None  # None: on above 32 px, off at 32 px and below (simclr, moco_v2)
    crop_scale: tuple[float, float] | None = None  # None: the recipe's (SimCLR 0.08, MoCo 0.2)
    # Smaller training views train faster while evaluation and export keep data.size: the
    # crop already enlarges objects, so a lower side matches their apparent size at test
    # (Touvron et al. 2019, "FixRes")
    size: int | None = None  # training views' side; None = data.size


@dataclass
class ModelConfig:
    backbone: str = "resnet18"  # resnet18..152, a registered name, torchvision:NAME, timm:NAME
    width: float = 1.0  # channel width multiplier (0.25: a quarter of ResNet's channels)
    stem: str = "cifar"  # cifar: 3x3 stride-1 conv, no max-pool (SimCLR B.9)
    sk_ratio: float = 0.0  # > 0: selective-kernel ResNet of SimCLR v2 (0.0625 in the paper)
    zero_init_residual: bool = False  # last BN of each residual branch starts at 0 (Goyal et al.)
    head_layers: int = 2  # 2: SimCLR v1, 3: SimCLR v2
    head_hidden: int | None = None  # None = the backbone's feature dim
    out_dim: int = 128  # dimension of the head's output z (the loss's space)


@dataclass
class OptimConfig:
    optimizer: str = "lars"  # lars | sgd | adamw
    lr: float | None = None  # None: base_lr scaled by lr_scaling
    base_lr: float = 0.3  # scaled by lr_scaling: 0.3 x B/256 (SimCLR), 0.075 x sqrt(B)
    lr_scaling: str = "linear"  # linear: base*B/256 | sqrt: base*sqrt(B) | none
    weight_decay: float = 1e-6  # L2 weight decay (LARS: not on biases and norms)
    momentum: float = 0.9  # the optimiser's momentum
    schedule: str = "warmup_cosine"  # warmup_cosine | step | constant
    warmup_epochs: float = 10.0  # linear warm-up from 0, then cosine
    final_lr: float = 0.0  # the cosine schedule's end


@dataclass
class TrainConfig:
    epochs: int = 100  # passes over the pretraining split (train.steps overrides)
    steps: int | None = None  # total optimiser steps; overrides epochs (fixed-budget runs)
    batch_size: int = 256  # global batch (all ranks together)
    seed: int = 0  # weights, data order and augmentations: a resumed run is bit-identical
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where native: CUDA, AMX/AVX512-BF16) | bf16 | fp32
    compile: bool = False  # torch.compile the method step
    channels_last: bool | str = "auto"  # NHWC convs: auto (CUDA, bf16-native CPUs) | true | false
    sync_bn: bool = False  # SyncBatchNorm across ranks under torchrun (CUDA)
    max_time_s: float | None = None  # wall-clock budget; stops cleanly with a checkpoint
    num_threads: int | None = None  # CPU threads; None: the CPUs available / local ranks
    timeout_s: float = 120.0  # a step waits this long for a stopped rank (checkpoints: 30 min)


@dataclass
class EvalConfig:
    knn_every: int = 10  # epochs between k-NN monitors (0: only at the end, -1: never)
    knn_k: int = 200  # neighbours of the k-NN monitor (knn-200 protocol)
    knn_temperature: float = 0.1  # vote weight exp(sim / T)
    batch_size: int = 512  # images per batch of feature extraction
    knn_random_init: bool = False  # also the final k-NN of the same network at its random init
    # val: a class-balanced 10 % of train held out of pretraining and the memory, for tuning
    split: str = "test"  # k-NN / linear queries: test | val (10 % of train, PROTOCOLS.md)


@dataclass
class RunConfig:
    out_dir: str = "runs"  # run folders go to out_dir/name
    name: str | None = None  # default: <method>-<dataset>-<time>
    checkpoint_every: int = 0  # also keep checkpoints/epoch_<N>.pt every N epochs
    checkpoint_steps: int = 0  # also write last.pt every N steps (mid-epoch resume)
    log_every: int = 20  # steps between metric syncs (each is one host sync)
    score_bins: int = 40  # histogram bins of positive/negative cosine scores over [-1, 1]
    tensorboard: bool = False  # also write TensorBoard logs (selfsup[tb])
    progress: bool = True  # tqdm progress bars
    # continue the named run: auto (after a torchrun elastic restart) | true (also when
    # launched again by hand, if it has a checkpoint) | false (always a new folder)
    resume: bool | str = "auto"  # auto | true | false, as said above


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
        """Plain data (lists for tuples); ``method`` with only its own method's sections."""
        d = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return _plain({**d, "method": self.method.to_dict()})


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


