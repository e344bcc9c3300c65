"""Semi-supervised fine-tuning on a class-balanced label subset (SimCLR v2, stage 2).

Chen et al. (arXiv 2006.10029), §2 and §4: the pretrained encoder and the
first k layers of its projection head, plus a new linear classifier, are all
trained on 1 % or 10 % of the labels ("fine-tune from the first layer of the
projection head", k = 1; k = 0 is SimCLR v1's choice), with random crops and
flips only, LARS and no weight decay in the paper. Results are reported as
the ``finetune-1pct`` / ``finetune-10pct`` protocols of docs/protocols.md.
"""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup.data.subsets import class_balanced_subset, load_subset, save_subset
from selfsup.errors import ConfigError
from selfsup.experiment import check_device, load_data, resolve_device
from selfsup.runs import RunFolder
from selfsup.stages import (
    check_stage_dir,
    classifier_from_pretrained,
    finetune_augmentation,
    fresh_model,
    new_stage_dir,
    pretrained_model,
    run_stage,
)
from selfsup.stages.run import accuracy_on_test, recipe_info
from selfsup.train.supervised import SupervisedRecipe


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
    tag = _subset_tag(label_fraction, per_class, subset_file)
    name = f"{run_dir.name}-{'scratch' if scratch else 'finetune'}-{tag}-k{head_layer}-s" \
        f"{recipe.seed}"
    out = check_stage_dir(Path(out_dir) if out_dir else run_dir.parent / name)  # creates none
    check_device(device)
    model, cfg, ckpt = pretrained_model(run_dir, overrides)
    if scratch:  # the same architecture, randomly initialised
        torch.manual_seed(recipe.seed)
        model = fresh_model(model, cfg, int(ckpt.get("in_channels", 3)))
    net = classifier_from_pretrained(model, head_layer, 1)  # checks k before loading data
    data = load_data(cfg)
    train = data.memory
    if train is None or train.labels is None:
        raise ConfigError(f"{cfg.data.dataset}: the train split has no labels to fine-tune on")
    if subset_file is not None:
        idx = load_subset(subset_file, len(train), getattr(train, "files", None))
    else:
        idx = class_balanced_subset(train.labels, label_fraction, per_class, seed=subset_seed)
    num_classes = int(train.labels.max()) + 1
    net = classifier_from_pretrained(model, head_layer, num_classes)
    out = new_stage_dir(out)
    save_subset(idx, RunFolder(out).subset)
    dev = resolve_device(device)
    net.to(dev)
    torch.manual_seed(recipe.seed)
    net.fc.reset_parameters()  # the classifier's init follows the fine-tuning seed

    def evaluate(net):
        res = accuracy_on_test(net, data, dev)
        return res, {"labelled_images": len(idx), **{f"test_{k}": v for k, v in res.items()}}

    info = {"stage": "finetune", "pretrain_run": str(run_dir), "scratch": scratch,
            "head_layers": head_layer, "fc_in": net.fc.in_features, "num_classes": num_classes,
            "label_fraction": label_fraction, "per_class": per_class,
            "subset_file": str(subset_file) if subset_file else None,
            "subset_seed": subset_seed, "labelled_images": len(idx),
            "recipe": recipe_info(recipe, "random resized crop + flip")}
    return run_stage(out, net, train.read(idx), train.labels[idx], recipe, cfg=cfg, data=data,
                     info=info, device=dev, transform=finetune_augmentation(cfg, data),
                     evaluate=evaluate, progress=progress,
                     desc=f"fine-tune k={head_layer} on {len(idx)} labels")
