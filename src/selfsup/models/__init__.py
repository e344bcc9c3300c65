"""Encoders f and projection heads g (fixed public API: ``resnet``, ``ProjectionHead``).

``resnet`` follows He et al. 2016 with SimCLR's width multiplier and CIFAR
stem (arXiv 2002.05709) and SimCLR v2's selective kernels (arXiv 2006.10029);
``build_backbone`` builds any of them, or a torchvision / timm model, by name.
"""

from selfsup.models.heads import ProjectionHead
from selfsup.models.registry import (
    Backbone,
    backbone_config,
    build_backbone,
    build_from_config,
    check_backbone_name,
    list_backbones,
    register_backbone,
)
from selfsup.models.resnet import BasicBlock, Bottleneck, ResNet, resnet
from selfsup.models.sk import SKConv2d

__all__ = [
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "ProjectionHead",
    "ResNet",
    "SKConv2d",
    "backbone_config",
    "build_backbone",
    "build_from_config",
    "check_backbone_name",
    "list_backbones",
    "register_backbone",
    "resnet",
]
