"""Methods: small modules that turn a batch of views into ``(loss, metrics)``."""

from selfsup.methods.jigsaw import Jigsaw
from selfsup.methods.moco import MoCo
from selfsup.methods.registry import METHODS, build_method
from selfsup.methods.simclr import SimCLR

__all__ = ["METHODS", "Jigsaw", "MoCo", "SimCLR", "build_method"]
