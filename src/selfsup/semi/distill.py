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

from dataclasses import replace
from pathlib import Path

import torch

from selfsup.data.subsets import load_subset
from selfsup.errors import ConfigError
from selfsup.experiment import check_device, load_data, make_backbone, resolve_device
from selfsup.losses import distillation_loss
from selfsup.models import check_backbone_name
from selfsup.runs import RunFolder
from selfsup.stages import (
    Classifier,
    check_stage_dir,
    finetune_augmentation,
    load_classifier,
    new_stage_dir,
    run_stage,
)
from selfsup.stages.run import accuracy_on_test, recipe_info
from selfsup.train.supervised import SupervisedRecipe


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
    name = f"{teacher_run.name}-distill-{student}-w{student_width:g}-s{recipe.seed}"
    out = check_stage_dir(Path(out_dir) if out_dir else teacher_run.parent / name)
    check_device(device)
    teacher, cfg, _ = load_classifier(teacher_run, overrides)
    data = load_data(cfg)
    train = data.memory
    classes = int(train.labels.max()) + 1 if train.labels is not None else len(train.classes)
    if classes and classes != teacher.num_classes:
        raise ConfigError(f"teacher {teacher_run} predicts {teacher.num_classes} classes, but "
                          f"{cfg.data.dataset} has {classes}")
    labels = torch.full((len(train),), -1, dtype=torch.int64)  # -1: unlabeled
    if alpha < 1.0:
        subset = RunFolder(teacher_run).subset
        if not subset.is_file() or train.labels is None:
            raise ConfigError(f"alpha={alpha} needs the teacher's labelled subset "
                              f"({subset}) and a labelled train split")
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

    def objective(model, x, y):
        with torch.no_grad():
            t_logits = teacher(x)  # N x C, BN in eval mode: the teacher stays fixed
        return distillation_loss(model(x), t_logits, temperature,
                                 labels=None if alpha == 1.0 else y, alpha=alpha)

    def evaluate(net):
        res, t_res = accuracy_on_test(net, data, dev), accuracy_on_test(teacher, data, dev)
        return res, {**{f"test_{k}": v for k, v in res.items()},
                     **{f"teacher_test_{k}": v for k, v in t_res.items()}}

    out = new_stage_dir(out)
    info = {"stage": "distill", "teacher_run": str(teacher_run), "student": student,
            "student_width": student_width, "head_layers": 0, "fc_in": backbone.feature_dim,
            "num_classes": teacher.num_classes, "temperature": temperature, "alpha": alpha,
            "unlabeled_images": len(train), "labelled_images": int((labels >= 0).sum()),
            "recipe": recipe_info(recipe, "random resized crop + flip")}
    return run_stage(out, net, train.images, labels, recipe, cfg=student_cfg, data=data,
                     info=info, device=dev, transform=finetune_augmentation(cfg, data),
                     objective=objective, evaluate=evaluate, progress=progress,
                     desc=f"distill into {student}")
