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

import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from selfsup.cluster.pseudo_labels import load_pseudo_labels
from selfsup.data.loader import place_images
from selfsup.experiment import (
    eval_augmentation,
    input_spec,
    load_data,
    make_backbone,
    resolve_device,
    run_config,
    train_augmentation,
)
from selfsup.models import check_backbone_name
from selfsup.semi.classifier import Classifier, evaluate_classifier, new_stage_dir, write_stage
from selfsup.train.logging import MetricsLogger
from selfsup.train.supervised import SupervisedRecipe, fit_classifier


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
    net.to(dev)
    name = f"{cluster_run.name}-transfer-{arch}-w{width:g}-s{recipe.seed}"
    out = new_stage_dir(Path(out_dir) if out_dir else cluster_run.parent / name)
    logger = MetricsLogger(out)
    t0 = time.perf_counter()
    fit_classifier(net, place_images(data.train.images, dev, cfg.data.on_device), labels, recipe,
                   transform=train_augmentation(cfg, data), log=logger.log, progress=progress,
                   desc=f"transfer into {arch} w{width:g} ({k} clusters)")
    train_s = time.perf_counter() - t0
    # how well the target learned the clusters, on un-augmented train images
    fit = evaluate_classifier(net, data.train.images, labels, eval_augmentation(data), dev)
    logger.log({"event": "end", "pseudo_label_top1": fit["top1"]})
    logger.close()
    stage = {"stage": "transfer", "cluster_run": str(cluster_run), "teacher": info["teacher"],
             "layer": info["layer"], "k": k, "arch": arch, "width": width, "head_layers": 0,
             "fc_in": backbone.feature_dim, "num_classes": k,
             "recipe": {**asdict(recipe), "augmentation": cfg.augment.recipe,
                        "schedule": "cosine", "targets": "cluster ids (hard)"}}
    summary = {"stage": "transfer", "epochs": recipe.epochs, "train_s": round(train_s, 2),
               "pseudo_label_train_top1": fit["top1"], "k": k}
    write_stage(out, net.cpu(), cfg, stage, data.channels, summary, input_spec(data))
    return out
