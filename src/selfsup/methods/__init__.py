"""Methods: small modules that turn a batch of views into ``(loss, metrics)``.

:class:`Method` is the contract with the pretraining loop; :func:`register_method` adds a
method by name (the built-ins register themselves on import); :class:`MomentumEncoder` and
:class:`KeyQueue` are the momentum network and the queue that MoCo and SimCLR v2's memory
compose.
"""

from selfsup.methods.base import Method
from selfsup.methods.jigsaw import Jigsaw
from selfsup.methods.moco import MoCo
from selfsup.methods.momentum import MomentumEncoder, cosine_momentum
from selfsup.methods.queue import KeyQueue
from selfsup.methods.registry import METHODS, build_method, list_methods, register_method
from selfsup.methods.simclr import SimCLR
from selfsup.methods.simclr_memory import SimCLRMemory

__all__ = [
    "METHODS",
    "Jigsaw",
    "KeyQueue",
    "Method",
    "MoCo",
    "MomentumEncoder",
    "SimCLR",
    "SimCLRMemory",
    "build_method",
    "cosine_momentum",
    "list_methods",
    "register_method",
]
