"""What every supervised stage shares: the classifier network and the stage-run skeleton.

Fine-tuning and distillation (:mod:`selfsup.semi`) and the transfer of
knowledge by clustering (:mod:`selfsup.cluster.transfer`) differ only in the
network they start from, their targets, augmentation and objective, and what
they evaluate; loading, fitting on the one supervised loop and writing the
run folder are :func:`run_stage`.
"""

from selfsup.stages.classifier import (
    Classifier,
    Encoder,
    classifier_from_pretrained,
    evaluate_classifier,
    fresh_model,
    load_classifier,
    pretrained_model,
    stage_info,
)
from selfsup.stages.run import (
    check_stage_dir,
    finetune_augmentation,
    new_stage_dir,
    run_stage,
    write_stage,
)

__all__ = [
    "Classifier", "Encoder", "check_stage_dir", "classifier_from_pretrained",
    "evaluate_classifier",
    "finetune_augmentation", "fresh_model", "load_classifier", "new_stage_dir",
    "pretrained_model", "run_stage", "stage_info", "write_stage",
]
