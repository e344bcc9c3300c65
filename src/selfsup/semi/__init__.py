"""SimCLR v2's task-specific stages: semi-supervised fine-tuning and distillation."""

from selfsup.semi.classifier import Classifier, load_classifier
from selfsup.semi.distill import distill
from selfsup.semi.finetune import finetune

__all__ = ["Classifier", "distill", "finetune", "load_classifier"]
