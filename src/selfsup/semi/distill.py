"""Distillation of a fine-tuned teacher into a student on unlabeled data (SimCLR v2, stage 3).

Chen et al. (arXiv 2006.10029), §2: "we use the fine-tuned network as a
teacher to impute labels for training a student network", minimising
−Σ_x Σ_y P_T(y|x; τ) log P_S(y|x; τ) over the unlabeled images (the whole
train split here, labels unused), the teacher fixed; with the labelled
subset also (1 − α)·CE on its labels. The student is the same architecture
(self-distillation) or a smaller one (big-to-small), trained from scratch;
its backbone is exported like any encoder.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from selfsup.data.loader import place_images
from selfsup.errors import ConfigError
from selfsup.experiment import (
    eval_augmentation,
    input_spec,
    load_data,
    make_backbone,
    resolve_device,
)
from selfsup.losses import distillation_loss
from selfsup.models import check_backbone_name
from selfsup.semi.classifier import (
    Classifier,
    evaluate_classifier,
    finetune_augmentation,
    load_classifier,
    new_stage_dir,
    write_stage,
)
from selfsup.train.logging import MetricsLogger
from selfsup.train.supervised import SupervisedRecipe, fit_classifier


def distill(teacher_run: str | Path, *, student: str = "resnet18", student_width: float = 1.0,
            student_sk_ratio: float = 0.0,
            temperature: float = 1.0, alpha: float = 1.0, recipe: SupervisedRecipe | None = None,
            out_dir: str | Path | None = None, device: str = "auto",
            overrides: list[str] | None = None, progress: bool = True) -> Path:
    """Train ``student`` on the teacher's soft labels; returns the new run folder.

    ``teacher_run``: a ``selfsup finetune`` (or distill) run. ``alpha`` < 1
    adds the label term on the teacher's labelled subset (its ``subset.txt``).
    """
    teacher_run = Path(teacher_run)
    recipe = recipe or SupervisedRecipe(epochs=30, batch_size=256, lr=0.1, weight_decay=0.0)
    check_backbone_name(student, "student")
    if not temperature > 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation alpha must be in [0, 1], got {alpha}")
    teacher, cfg, info = load_classifier(teacher_run, overrides)
    data = load_data(cfg)
    train, test = data.memory, data.test
    classes = int(train.labels.max()) + 1 if train.labels is not None else len(train.classes)
    if classes and classes != teacher.num_classes:
        raise ConfigError(f"teacher {teacher_run} predicts {teacher.num_classes} classes, but "
                          f"{cfg.data.dataset} has {classes}")
    labels = torch.full((len(train),), -1, dtype=torch.int64)  # -1: unlabeled
    if alpha < 1.0:
        subset = teacher_run / "subset.txt"
        if not subset.is_file() or train.labels is None:
            raise ConfigError(f"alpha={alpha} needs the teacher's labelled subset "
                              f"({subset}) and a labelled train split")
        from selfsup.data.subsets import load_subset

        idx = load_subset(subset, len(train))
        labels[idx] = train.labels[idx]
    student_cfg = replace(cfg, model=replace(cfg.model, backbone=student, width=student_width,
                                             sk_ratio=student_sk_ratio))
    torch.manual_seed(recipe.seed)
    backbone = make_backbone(student_cfg, data.channels)
    net = Classifier(backbone, torch.nn.Sequential(), backbone.feature_dim, teacher.num_classes)
    dev = resolve_device(device)
    teacher.to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    net.to(dev)

    def objective(model, x, y):
        with torch.no_grad():
            t_logits = teacher(x)  # N x C, BN in eval mode: the teacher stays fixed
        return distillation_loss(model(x), t_logits, temperature,
                                 labels=None if alpha == 1.0 else y, alpha=alpha)

    name = f"{teacher_run.name}-distill-{student}-w{student_width:g}-s{recipe.seed}"
    out = new_stage_dir(Path(out_dir) if out_dir else teacher_run.parent / name)
    logger = MetricsLogger(out)
    t0 = time.perf_counter()
    fit_classifier(net, place_images(train.images, dev, cfg.data.on_device), labels, recipe,
                   transform=finetune_augmentation(cfg, data), objective=objective,
                   log=logger.log, progress=progress, desc=f"distill into {student}")
    train_s = time.perf_counter() - t0
    res, t_res = {}, {}
    if test is not None and test.labels is not None:
        tf = eval_augmentation(data)
        res = evaluate_classifier(net, test.images, test.labels, tf, dev)
        t_res = evaluate_classifier(teacher, test.images, test.labels, tf, dev)
    logger.log({"event": "end", **res})
    logger.close()
    stage = {"stage": "distill", "teacher_run": str(teacher_run), "student": student,
             "student_width": student_width, "head_layers": 0, "fc_in": backbone.feature_dim,
             "num_classes": teacher.num_classes, "temperature": temperature, "alpha": alpha,
             "unlabeled_images": len(train), "labelled_images": int((labels >= 0).sum()),
             "recipe": {**asdict(recipe), "augmentation": "random resized crop + flip",
                        "schedule": "cosine"}}
    summary = {"stage": "distill", "epochs": recipe.epochs, "train_s": round(train_s, 2),
               **{f"test_{k}": v for k, v in res.items()},
               **{f"teacher_test_{k}": v for k, v in t_res.items()}}
    write_stage(out, net.cpu(), student_cfg, stage, data.channels, summary, input_spec(data))
    return out
