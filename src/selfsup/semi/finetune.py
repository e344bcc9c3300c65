"""Semi-supervised fine-tuning on a class-balanced label subset (SimCLR v2, stage 2).

Chen et al. (arXiv 2006.10029), §2 and §4: the pretrained encoder and the
first k layers of its projection head, plus a new linear classifier, are all
trained on 1 % or 10 % of the labels ("fine-tune from the first layer of the
projection head", k = 1; k = 0 is SimCLR v1's choice), with random crops and
flips only, LARS and no weight decay in the paper.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from selfsup.data.loader import place_images
from selfsup.data.subsets import class_balanced_subset, load_subset, save_subset
from selfsup.errors import ConfigError
from selfsup.experiment import eval_augmentation, input_spec, load_data, resolve_device
from selfsup.semi.classifier import (
    classifier_from_pretrained,
    evaluate_classifier,
    finetune_augmentation,
    fresh_model,
    new_stage_dir,
    pretrained_model,
    write_stage,
)
from selfsup.train.logging import MetricsLogger
from selfsup.train.supervised import SupervisedRecipe, fit_classifier


def _subset_tag(fraction: float | None, per_class: int | None, subset_file) -> str:
    if subset_file is not None:
        return Path(subset_file).stem
    return f"{fraction * 100:g}pct" if fraction is not None else f"{per_class}per-class"


def finetune(run_dir: str | Path, *, label_fraction: float | None = None,
             per_class: int | None = None, subset_file: str | Path | None = None,
             subset_seed: int = 0, head_layer: int = 1, recipe: SupervisedRecipe | None = None,
             scratch: bool = False,
             out_dir: str | Path | None = None, device: str = "auto",
             overrides: list[str] | None = None, progress: bool = True) -> Path:
    """Fine-tune a pretraining run on a label subset; returns the new run folder.

    The subset is ``label_fraction`` (in (0, 1]) or ``per_class`` images of
    every class, drawn with ``subset_seed``, or the indices / file names of
    ``subset_file``; it is written to ``subset.txt`` in the new folder, so a
    later stage (and a rerun) can reuse exactly the same labels. ``scratch``
    trains the same network from random init (seeded by ``recipe.seed``)
    instead: the supervised baseline on the same labels.
    """
    run_dir = Path(run_dir)
    recipe = recipe or SupervisedRecipe(epochs=60, batch_size=256, lr=0.1, weight_decay=0.0)
    if subset_file is None and (label_fraction is None) == (per_class is None):
        raise ConfigError("give one of --label-fraction, --per-class or --subset")
    if label_fraction is not None and not 0.0 < label_fraction <= 1.0:
        raise ConfigError(f"label fraction must be in (0, 1], got {label_fraction}")
    model, cfg, ckpt = pretrained_model(run_dir, overrides)
    if scratch:  # the same architecture, randomly initialised
        torch.manual_seed(recipe.seed)
        model = fresh_model(model, cfg, int(ckpt.get("in_channels", 3)))
    net = classifier_from_pretrained(model, head_layer, 1)  # checks k before loading data
    data = load_data(cfg)
    train, test = data.memory, data.test
    if train is None or train.labels is None:
        raise ConfigError(f"{cfg.data.dataset}: the train split has no labels to fine-tune on")
    if subset_file is not None:
        idx = load_subset(subset_file, len(train), getattr(train, "files", None))
    else:
        idx = class_balanced_subset(train.labels, label_fraction, per_class, seed=subset_seed)
    num_classes = int(train.labels.max()) + 1
    net = classifier_from_pretrained(model, head_layer, num_classes)
    fc_in = net.fc.in_features
    tag = _subset_tag(label_fraction, per_class, subset_file)
    stage = "scratch" if scratch else "finetune"
    name = f"{run_dir.name}-{stage}-{tag}-k{head_layer}-s{recipe.seed}"
    out = new_stage_dir(Path(out_dir) if out_dir else run_dir.parent / name)
    save_subset(idx, out / "subset.txt")
    dev = resolve_device(device)
    net.to(dev)
    torch.manual_seed(recipe.seed)
    net.fc.reset_parameters()  # the classifier's init follows the fine-tuning seed
    logger = MetricsLogger(out)
    t0 = time.perf_counter()
    labelled = place_images(train.read(idx), dev, cfg.data.on_device)  # a few % of the set
    fit_classifier(net, labelled, train.labels[idx].to(dev), recipe,
                   transform=finetune_augmentation(cfg, data), log=logger.log, progress=progress,
                   desc=f"fine-tune k={head_layer} on {len(idx)} labels")
    train_s = time.perf_counter() - t0
    res = (evaluate_classifier(net, test.images, test.labels, eval_augmentation(data), dev)
           if test is not None and test.labels is not None else {})
    logger.log({"event": "end", **res})
    logger.close()
    info = {"stage": "finetune", "pretrain_run": str(run_dir), "scratch": scratch,
            "head_layers": head_layer,
            "fc_in": fc_in, "num_classes": num_classes, "label_fraction": label_fraction,
            "per_class": per_class, "subset_file": str(subset_file) if subset_file else None,
            "subset_seed": subset_seed, "labelled_images": len(idx),
            "recipe": {**asdict(recipe), "augmentation": "random resized crop + flip",
                       "schedule": "cosine"}}
    summary = {"stage": "finetune", "labelled_images": len(idx), "epochs": recipe.epochs,
               "train_s": round(train_s, 2), **{f"test_{k}": v for k, v in res.items()}}
    write_stage(out, net.cpu(), cfg, info, int(ckpt.get("in_channels", 3)), summary,
                input_spec(data))
    return out
