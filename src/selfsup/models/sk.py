"""Selective-kernel convolution, as used by SimCLR v2's ResNet-152 (3x+SK).

Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019 (arXiv 1903.06586):
an SK unit *splits* the input into branches with different receptive fields,
*fuses* them (sum, global average pool, a small bottleneck FC) and *selects*
among them with a softmax attention over the branches, per channel.

Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised Learners"
(SimCLR v2, arXiv 2006.10029) use SK in the 3x3 conv of every bottleneck
block. Their reference code (google-research/simclr, ``tf2/resnet.py``,
``SK_Conv2D``) makes both branches 3x3 kernels computed by ONE conv with 2C
output channels, followed by BN + ReLU; the bottleneck of the fuse step has
``max(int(C * sk_ratio), 32)`` channels. We follow that code by default;
``dilated=True`` gives SKNet's original pair (3x3 and 3x3 with dilation 2,
the cheap equivalent of a 5x5).

Parameter names (the SK variant is not torchvision-compatible anyway):
``split`` (3x3 conv, 2C outputs; C with ``dilated``), ``split_dilated``
(only with ``dilated``), ``split_bn`` (BN over the 2C branch channels),
``fuse`` (1x1 conv C -> d), ``fuse_bn``, ``select`` (1x1 conv d -> 2C).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from selfsup.errors import ConfigError


class SKConv2d(nn.Module):
    """A 3x3 selective-kernel conv: ``in_channels`` -> ``out_channels``, given ``stride``.

    The output is already batch-normalised and non-negative (a convex mix of
    two ReLU outputs), so a block using it needs no BN + ReLU after it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        sk_ratio: float = 0.0625,
        min_dim: int = 32,
        dilated: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("stride", stride), ("min_dim", min_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SKConv2d: {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(sk_ratio, (int, float)) and math.isfinite(sk_ratio) and sk_ratio > 0):
            raise ConfigError(f"SKConv2d: sk_ratio must be a finite number > 0, got {sk_ratio!r}")
        self.out_channels = out_channels
        c = out_channels
        # Split: both branches in one conv (SimCLR v2) unless SKNet's dilated pair is asked for.
        self.split = nn.Conv2d(in_channels, c if dilated else 2 * c, 3, stride, 1, bias=False)
        self.split_dilated = (
            nn.Conv2d(in_channels, c, 3, stride, padding=2, dilation=2, bias=False)
            if dilated else None
        )
        self.split_bn = nn.BatchNorm2d(2 * c)
        self.relu = nn.ReLU(inplace=True)
        # Fuse: a bottleneck so the attention costs little (SKNet's d = max(C/r, L), L = 32).
        mid = max(int(c * sk_ratio), min_dim)
        self.fuse = nn.Conv2d(c, mid, 1, bias=False)
        self.fuse_bn = nn.BatchNorm2d(mid)
        # Select: one logit per branch and channel.
        self.select = nn.Conv2d(mid, 2 * c, 1, bias=False)

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two branch outputs U (N, 2, C, H', W') and their attention A (N, 2, C, 1, 1).

        A sums to 1 over dim 1 (the branches); ``forward`` returns sum_b A_b * U_b.
        """
        c = self.out_channels
        u = self.split(x)  # N x 2C x H' x W'
        if self.split_dilated is not None:
            u = torch.cat([u, self.split_dilated(x)], dim=1)
        u = self.relu(self.split_bn(u)).unflatten(1, (2, c))  # N x 2 x C x H' x W'
        # Pool first, then sum the branches: same as SKNet's GAP(U_1 + U_2), on a tiny tensor.
        s = u.mean(dim=(3, 4)).sum(dim=1)  # N x C
        z = self.relu(self.fuse_bn(self.fuse(s[:, :, None, None])))  # N x d x 1 x 1
        logits = self.select(z).unflatten(1, (2, c))  # N x 2 x C x 1 x 1
        # Autocast runs softmax in float32; cast back so the mix keeps the activations' dtype.
        a = logits.softmax(dim=1).to(u.dtype)
        return u, a

    def forward(self, x: Tensor) -> Tensor:
        u, a = self.branches(x)
        return (u * a).sum(dim=1)  # N x C x H' x W'
