"""The transfer stage: a target architecture learns to predict the teacher's cluster ids.

Noroozi et al., CVPR 2018, §3: "we train a new network (of any architecture)
to classify the images into the clusters"; its representation is the
transferred knowledge. Not distillation: only cluster membership travels,
not the teacher's outputs. The target trains from scratch on the supervised
loop, on the pretraining augmentation of the labelled data set, and its run
folder (``stage.json`` with ``stage: transfer``, ``checkpoints/last.pt`` with
``backbone.*``/``fc.*``) is evaluated, exported and fine-tuned like any run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from selfsup.cluster.pseudo_labels import load_pseudo_labels
from selfsup.experiment import (
    check_device,
    eval_augmentation,
    load_data,
    make_backbone,
    resolve_device,
    run_config,
    train_augmentation,
)
from selfsup.models import check_backbone_name
from selfsup.stages import (
    Classifier,
    check_stage_dir,
    evaluate_classifier,
    new_stage_dir,
    run_stage,
)
from selfsup.stages.run import recipe_info
from selfsup.train.supervised import SupervisedRecipe


def transfer(cluster_run: str | Path, *, arch: str = "resnet18", width: float = 1.0,
             stem: str | None = None, recipe: SupervisedRecipe | None = None,
             out_dir: str | Path | None = None, device: str = "auto",
             overrides: list[str] | None = None, progress: bool = True) -> Path:
    """Train ``arch`` (from scratch) on the pseudo-labels of ``cluster_run``; the new run folder.

    ``overrides`` (``--section.key value``) apply to the cluster run's config,
    e.g. ``--augment.recipe moco_v2`` or ``--data.root``.
    """
    cluster_run = Path(cluster_run)
    recipe = recipe or SupervisedRecipe(epochs=30, batch_size=256, lr=0.1, weight_decay=5e-4)
    check_backbone_name(arch, "target")
    name = f"{cluster_run.name}-transfer-{arch}-w{width:g}-s{recipe.seed}"
    out = check_stage_dir(Path(out_dir) if out_dir else cluster_run.parent / name)
    check_device(device)
    cfg = run_config(cluster_run, overrides)
    cfg = replace(cfg, model=replace(cfg.model, backbone=arch, width=width,
                                     stem=stem or cfg.model.stem, sk_ratio=0.0))
    data = load_data(cfg)
    labels, info = load_pseudo_labels(cluster_run, len(data.train))
    k = int(info["k"])
    torch.manual_seed(recipe.seed)
    backbone = make_backbone(cfg, data.channels)
    net = Classifier(backbone, torch.nn.Sequential(), backbone.feature_dim, k)
    dev = resolve_device(device)

    def evaluate(net):  # how well the target learned the clusters, on un-augmented train images
        fit = evaluate_classifier(net, data.train.images, labels, eval_augmentation(data), dev)
        return {"pseudo_label_top1": fit["top1"]}, {"pseudo_label_train_top1": fit["top1"], "k": k}

    out = new_stage_dir(out)
    stage = {"stage": "transfer", "cluster_run": str(cluster_run), "teacher": info["teacher"],
             "layer": info["layer"], "k": k, "arch": arch, "width": width, "head_layers": 0,
             "fc_in": backbone.feature_dim, "num_classes": k,
             "recipe": recipe_info(recipe, cfg.augment.recipe, targets="cluster ids (hard)")}
    return run_stage(out, net, data.train.images, labels, recipe, cfg=cfg, data=data,
                     info=stage, device=dev, transform=train_augmentation(cfg, data),
                     evaluate=evaluate, progress=progress,
                     desc=f"transfer into {arch} w{width:g} ({k} clusters)")
