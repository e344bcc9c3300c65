"""SimCLR v2's task-specific stages: semi-supervised fine-tuning and distillation.

The classifier network and the stage-run skeleton they share with the
transfer stage live in :mod:`selfsup.stages`; ``Classifier`` and
``load_classifier`` are re-exported here, where users met them first.
"""

from selfsup.semi.distill import distill
from selfsup.semi.finetune import finetune
from selfsup.stages import Classifier, load_classifier

__all__ = ["Classifier", "distill", "finetune", "load_classifier"]
