"""The skeleton of a supervised stage run: fit on the one supervised loop, evaluate, write.

Every stage (fine-tune, distill, transfer) loads its input run and data,
builds its network and makes its run folder, then calls :func:`run_stage`
with what is its own: the network, the images and targets, the
augmentation, the objective and the evaluation. The run folder holds
``config.yaml`` (the data and the encoder's architecture), ``stage.json``
(what the stage did), ``checkpoints/last.pt`` with keys ``backbone.*``,
``head.*``, ``fc.*`` (so ``selfsup export`` and ``selfsup knn`` take it like
a pretraining run), ``metrics.jsonl`` and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from selfsup import __version__
from selfsup.augment.pipeline import Pipeline
from selfsup.augment.recipes import build_recipe
from selfsup.config import Config, save_config
from selfsup.data.loader import place_images
from selfsup.errors import ConfigError
from selfsup.experiment import Data, eval_augmentation, input_spec
from selfsup.outputs import check_out, make_folder, write_error
from selfsup.runs import RunFolder
from selfsup.stages.classifier import Classifier, evaluate_classifier
from selfsup.train.checkpoint import atomic_save, atomic_write_text
from selfsup.train.logging import MetricsLogger
from selfsup.train.supervised import SupervisedRecipe, fit_classifier

# the trained network (on its device) -> (the metrics of the log's "end" record, summary fields)
Evaluation = Callable[[Classifier], tuple[dict, dict]]


def finetune_augmentation(cfg: Config, data: Data) -> Pipeline:
    """The ``finetune`` recipe (random resized crop, flip) at the run's ``augment.crop_scale``."""
    scale = {"crop_scale": cfg.augment.crop_scale} if cfg.augment.crop_scale else {}
    return build_recipe("finetune", size=data.size, mean=data.mean, std=data.std, **scale)


def recipe_info(recipe: SupervisedRecipe, augmentation: str, **notes) -> dict:
    """The ``recipe`` entry of ``stage.json``: the loop's settings and what they trained on."""
    return {**asdict(recipe), "augmentation": augmentation, "schedule": "cosine", **notes}


def accuracy_on_test(net: nn.Module, data: Data, device: torch.device) -> dict:
    """Top-1 / top-5 on the labelled test split, un-augmented; {} when there is none."""
    test = data.test
    if test is None or test.labels is None:
        return {}
    return evaluate_classifier(net, test.images, test.labels, eval_augmentation(data), device)


def check_stage_dir(path: str | Path) -> Path:
    """Refuse, before the model and data are loaded and creating nothing, an output run
    folder that cannot be written or holds what a stage must not overwrite: a finished run,
    or a folder of files that is no selfsup run (its config.yaml would be replaced)."""
    run = RunFolder(check_out(path, "the run folder"))
    if run.summary.exists():
        raise ConfigError(f"{run.path}: already holds a finished run; pass another --out")
    ours = run.config.is_file() or run.stage.is_file() or run.checkpoints.is_dir()
    if run.path.is_dir() and not ours and any(run.path.iterdir()):
        raise ConfigError(f"{run.path}: not empty and not a selfsup run folder; pass another "
                          "--out")
    return run.path


def new_stage_dir(path: Path) -> Path:
    """Create the checked run folder (checked again: another process may have finished a run
    there meanwhile)."""
    path = check_stage_dir(path)
    make_folder(RunFolder(path).checkpoints, "the run folder")
    return path


def write_stage(out: Path, net: Classifier, cfg: Config, info: dict, in_channels: int,
                summary: dict, spec: dict | None = None) -> None:
    """config.yaml, stage.json, the checkpoint (atomic) and summary.json of a stage run;
    ``spec`` is the input the network takes (:func:`selfsup.experiment.input_spec`)."""
    run = RunFolder(out)
    try:
        save_config(cfg, run.config)
    except OSError as e:  # a full disk or a folder turned read-only: one line
        raise write_error(run.config, "the run's config", e) from None
    atomic_write_text(run.stage, json.dumps(info, indent=2))
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    extra = {"input": spec} if spec is not None else {}
    atomic_save({"model": state, "config": cfg.to_dict(), "in_channels": in_channels,
                 "stage": info, "selfsup_version": __version__, **extra}, run.checkpoint())
    atomic_write_text(run.summary, json.dumps(summary, indent=2))


def run_stage(out: Path, net: Classifier, images: Tensor, targets: Tensor,
              recipe: SupervisedRecipe, *, cfg: Config, data: Data, info: dict,
              device: torch.device, transform: Callable[[Tensor, torch.Generator], Tensor],
              evaluate: Evaluation,
              objective: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
              desc: str = "supervised", progress: bool = True) -> Path:
    """Fit ``net`` on uint8 ``images`` and per-row ``targets``, evaluate it, write ``out``.

    ``images`` go to ``device`` when they fit there (``data.on_device``), else
    each batch is copied over by the loop; ``transform`` augments every batch;
    the loss is ``objective(net, x, y)`` when given, else cross-entropy.
    ``info`` becomes ``stage.json`` (its ``"stage"`` names the stage), ``cfg``
    the run's ``config.yaml``; ``summary.json`` holds the stage, epochs,
    training seconds and the summary fields of ``evaluate``.
    """
    net.to(device)
    logger = MetricsLogger(out)
    t0 = time.perf_counter()
    inputs = place_images(images, device, cfg.data.on_device)
    fit_classifier(net, inputs, targets, recipe, transform=transform, objective=objective,
                   log=logger.log, progress=progress, desc=desc)
    train_s = time.perf_counter() - t0
    end, fields = evaluate(net)
    logger.log({"event": "end", **end})
    logger.close()
    summary = {"stage": info["stage"], "epochs": recipe.epochs, "train_s": round(train_s, 2),
               **fields}
    write_stage(out, net.cpu(), cfg, info, data.channels, summary, input_spec(data))
    return out
