"""The network of every supervised stage, built from a run folder, and its evaluation.

Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised
Learners" (arXiv 2006.10029), §2: "we fine-tune from the middle layer of the
projection head": the encoder f, the first k layers of the head g, then a
linear classifier (k = 0 is SimCLR v1's choice, and the only choice for a
network trained from scratch: a distilled student or a transfer target).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from selfsup.config import Config
from selfsup.errors import ConfigError, DataError
from selfsup.experiment import make_backbone
from selfsup.methods import build_method
from selfsup.runs import RunFolder, check_checkpoint_method, load_run_backbone, run_config
from selfsup.train.checkpoint import load_checkpoint


class Classifier(nn.Module):
    """``fc(head(backbone(x)))``: f, the kept head layers ``g.layers[:k]``, a Linear."""

    def __init__(self, backbone: nn.Module, head: nn.Sequential, in_dim: int,
                 num_classes: int) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.fc = nn.Linear(in_dim, num_classes)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.backbone(x)))  # N x classes


def classifier_from_pretrained(model: nn.Module, head_layer: int, num_classes: int) -> Classifier:
    """f and the first ``head_layer`` blocks of g of a pretraining method (the same modules,
    not copies), and a new Linear on top; ConfigError when the head has fewer blocks."""
    head = getattr(model, "head", None)
    depth = len(head.layers) if head is not None else 0
    if not 0 <= head_layer <= depth:
        raise ConfigError(f"head layer {head_layer} is beyond the projection head, which has "
                          f"{depth} layers (0..{depth} allowed)")
    kept = nn.Sequential(*head.layers[:head_layer]) if head_layer else nn.Sequential()
    fc_in = head.dims[head_layer] if head is not None else model.backbone.feature_dim
    return Classifier(model.backbone, kept, fc_in, num_classes)


class Encoder(nn.Module):
    """A bare backbone to fine-tune from (a transfer, distill or fine-tune run): no head."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


def pretrained_model(run_dir: str | Path, overrides: list[str] | None = None
                     ) -> tuple[nn.Module, Config, dict]:
    """The whole pretraining method (backbone + head, and any key encoder) of a run, CPU.

    The run of a later stage (transfer, distill, fine-tune) gives its backbone
    alone, as an :class:`Encoder`: only head layer 0 can be kept from it.
    """
    run_dir = Path(run_dir)
    cfg = run_config(run_dir, overrides)
    if RunFolder(run_dir).stage.is_file():
        backbone, cfg, meta = load_run_backbone(run_dir, cfg)
        return Encoder(backbone.train()), cfg, meta
    ckpt = load_checkpoint(RunFolder(run_dir).checkpoint())
    check_checkpoint_method(ckpt, cfg, RunFolder(run_dir).checkpoint())
    torch.manual_seed(0)  # any init: every parameter is overwritten below
    model = build_method(cfg, make_backbone(cfg, int(ckpt.get("in_channels", 3))))
    load_weights(model, ckpt["model"], run_dir, cfg)
    return model, cfg, ckpt


def load_weights(net: nn.Module, state: dict, run_dir: Path, cfg: Config) -> None:
    """``net.load_state_dict(state)``, or the one-line error that ``knn``, ``export`` and
    every stage reading a backbone give (:func:`selfsup.runs.load_run_backbone`) when an
    override (``--model.width``, ``--method.name``, ...) built another network."""
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        lines = [x.strip() for x in str(e).splitlines()]
        detail = next((x for x in lines if "size mismatch" in x), lines[1] if len(lines) > 1
                      else str(e))
        raise DataError(f"{run_dir}: checkpoint does not fit model.backbone "
                        f"{cfg.model.backbone} w{cfg.model.width:g} ({detail[:200]})") from None


def fresh_model(model: nn.Module, cfg: Config, in_channels: int) -> nn.Module:
    """The architecture of ``model`` (a method or an :class:`Encoder`), randomly initialised."""
    backbone = make_backbone(cfg, in_channels)
    return Encoder(backbone) if isinstance(model, Encoder) else build_method(cfg, backbone)


def stage_info(run_dir: str | Path) -> dict:
    path = RunFolder(Path(run_dir)).stage
    if not path.is_file():
        raise DataError(f"{run_dir}: not a fine-tuned or distilled run (no stage.json)")
    return json.loads(path.read_text())


def load_classifier(run_dir: str | Path, overrides: list[str] | None = None
                    ) -> tuple[Classifier, Config, dict]:
    """The classifier of a stage run (CPU, eval mode), its config and stage info."""
    run_dir = Path(run_dir)
    info, cfg = stage_info(run_dir), run_config(run_dir, overrides)
    ckpt = load_checkpoint(RunFolder(run_dir).checkpoint())
    backbone = make_backbone(cfg, int(ckpt.get("in_channels", 3)))
    head = nn.Sequential()
    if info["head_layers"]:  # the kept blocks of the pretraining head, rebuilt from its config
        head = nn.Sequential(*build_method(cfg, backbone).head.layers[: info["head_layers"]])
    net = Classifier(backbone, head, info["fc_in"], info["num_classes"])
    load_weights(net, ckpt["model"], run_dir, cfg)
    return net.eval(), cfg, info


@torch.no_grad()
def evaluate_classifier(net: nn.Module, images: Tensor, labels: Tensor, transform,
                        device: torch.device, batch_size: int = 512) -> dict:
    """Top-1 / top-5 of ``net`` (eval mode) on uint8 ``images`` through ``transform``."""
    net.eval()
    g = torch.Generator(device=device)
    k = min(5, net.num_classes)
    hits1 = hits5 = 0
    for i in range(0, len(images), batch_size):
        x = transform(images[i : i + batch_size].to(device), g)
        y = labels[i : i + batch_size].to(device)
        top = net(x).topk(k, dim=1).indices  # B x k
        hits1 += (top[:, 0] == y).sum().item()
        hits5 += (top == y[:, None]).any(dim=1).sum().item()
    return {"top1": hits1 / len(images), "top5": hits5 / len(images)}
