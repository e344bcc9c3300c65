"""Tiny MoCo models and views shared by the MoCo test files (not a test module)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.methods.moco import MoCo


def tiny_moco(**kw) -> MoCo:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
    args = dict(temperature=0.2, momentum=0.9, queue_size=10, shuffle_bn="off", out_dim=3)
    return MoCo(backbone, nn.Linear(6, 3), **{**args, **kw})


def views(n: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)]
