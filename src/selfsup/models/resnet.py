"""ResNet encoders f for contrastive learning, ending at global average pooling.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv 1512.03385): BasicBlock for depths 18/34, Bottleneck (expansion 4)
for 50/101/152, with the stride on the bottleneck's 3x3 conv ("ResNet v1.5",
as in torchvision).

SimCLR (Chen et al., arXiv 2002.05709) varies the *width* (1x, 2x, 4x: every
channel count multiplied) and, for 32x32 images (appendix B.9), replaces "the
first convolution layer with 7x7 kernel and stride of 2 with 3x3 kernel and
stride of 1" and removes "the first max pooling operation": ``stem="cifar"``.

SimCLR v2 (arXiv 2006.10029) adds selective kernels (``sk_ratio > 0``, see
:mod:`selfsup.models.sk`) and, as its reference code does with SK, the
ResNet-D changes (He et al., "Bag of Tricks", arXiv 1812.01187): an ImageNet
stem of three 3x3 convs and projection shortcuts that average-pool before a
stride-1 1x1 conv.

Parameter names. The standard variant (``sk_ratio=0``) has exactly
torchvision's names (``conv1``, ``bn1``, ``layer1``..``layer4``, blocks with
``conv1/bn1/conv2/bn2[/conv3/bn3]`` and ``downsample.0/.1``) and no ``fc``,
so a torchvision state dict minus ``fc.*`` loads with ``strict=True``. The SK
variant follows timm's ResNet-D names: ``conv1.{0,1,3,4,6}`` (deep stem, then
``bn1``), ``downsample.0`` (pool, no weights), ``.1`` (conv), ``.2`` (BN), and
the SK conv's own names inside ``conv2`` (``conv1`` in BasicBlocks).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.models.sk import SKConv2d

STEMS = ("imagenet", "cifar")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


def _spatial_conv(cin: int, cout: int, stride: int, sk_ratio: float) -> tuple[nn.Module, nn.Module]:
    """The block's 3x3 conv and the norm after it; an SK conv normalises its branches itself."""
    if sk_ratio > 0:
        return SKConv2d(cin, cout, stride, sk_ratio), nn.Identity()
    return _conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)


def _shortcut(cin: int, cout: int, stride: int, avg_down: bool) -> nn.Sequential:
    """Projection shortcut; ResNet-D pools first so the 1x1 conv sees every input pixel."""
    if not avg_down:
        return nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
    # ceil_mode + count_include_pad=False: odd sizes give ceil(H/2), like the strided 3x3 path.
    pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1 else nn.Identity())
    return nn.Sequential(pool, _conv1x1(cin, cout), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs (He et al. 2016, fig. 2); with SK, the first (strided) one is an SK conv.

    (SimCLR v2's code only puts SK into bottleneck blocks; there is no
    reference for depths 18/34, so we put it where it sits in a bottleneck.)
    """

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, sk_ratio: float = 0.0) -> None:
        super().__init__()
        self.conv1, self.bn1 = _spatial_conv(cin, planes, stride, sk_ratio)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        # After an SK conv this ReLU is a no-op (its output is >= 0); kept for one code path.
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided; SK in SimCLR v2), 1x1 expand to 4x ``planes``."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, sk_ratio: float = 0.0) -> None:
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _spatial_conv(planes, planes, stride, sk_ratio)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))  # no-op ReLU after SK, as in BasicBlock
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_CONFIGS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
DEPTHS = tuple(_CONFIGS)


def _scaled(channels: int, width: float) -> int:
    """SimCLR's width multiplier: ``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


class ResNet(nn.Module):
    """A ResNet trunk: ``forward(x) -> (N, feature_dim)`` pooled features, no classifier.

    Build it with :func:`resnet`; the attributes ``depth``, ``width``, ``stem``,
    ``sk_ratio``, ``in_channels`` and ``feature_dim`` describe it.
    """

    def __init__(self, depth: int, width: float, stem: str, sk_ratio: float,
                 in_channels: int, zero_init_residual: bool = False) -> None:
        super().__init__()
        block, counts = _CONFIGS[depth]
        self.depth, self.width, self.stem = depth, width, stem
        self.sk_ratio, self.in_channels = sk_ratio, in_channels
        sk = sk_ratio > 0
        c = _scaled(64, width)
        if stem == "cifar":  # SimCLR B.9: keep all 32x32 pixels for layer1
            self.conv1: nn.Module = _conv3x3(in_channels, c)
        elif sk:  # ResNet-D deep stem: three 3x3 convs cost less than one 7x7 and see as far
            half = max(1, c // 2)
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_channels, half, 3, 2, padding=1, bias=False),
                nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                _conv3x3(half, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                _conv3x3(half, c),
            )
        else:
            self.conv1 = nn.Conv2d(in_channels, c, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (nn.Identity() if stem == "cifar"
                                   else nn.MaxPool2d(3, stride=2, padding=1))
        cin = c
        stages = []
        for i, n in enumerate(counts):
            planes, stride = _scaled(64 * 2**i, width), 1 if i == 0 else 2
            cout = planes * block.expansion
            down = (_shortcut(cin, cout, stride, avg_down=sk)
                    if stride != 1 or cin != cout else None)
            blocks = [block(cin, planes, stride, down, sk_ratio)]
            blocks += [block(cout, planes, 1, None, sk_ratio) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's init: Kaiming normal (fan_out) for convs, BN as the identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Goyal et al. 2017: each residual branch starts at 0, so every block starts as
            # the identity (SimCLR v2's code always does this).
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        # Shape checks read metadata only (no device sync) and beat a deep conv error.
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"resnet expects input of shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # N x feature_dim


def resnet(depth: int = 18, width: float = 1, stem: str = "imagenet", sk_ratio: float = 0.0,
           in_channels: int = 3, *, zero_init_residual: bool = False) -> ResNet:
    """A ResNet-``depth`` encoder, ``width`` times as wide, returning pooled features.

    ``feature_dim`` is ``round(512 * width)`` for depths 18/34 and four times
    that for 50/101/152 (ResNet-50 1x: 2048). ``stem="cifar"`` is SimCLR's
    3x3 stride-1 stem without max-pool for 32x32 images; ``sk_ratio > 0``
    (SimCLR v2 uses 0.0625) gives selective kernels with ResNet-D.
    """
    if isinstance(depth, bool) or depth not in _CONFIGS:
        raise ConfigError(f"resnet depth must be one of {list(DEPTHS)}, got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (
            math.isfinite(width) and width > 0):
        raise ConfigError(f"resnet width must be a finite number > 0, got {width!r}")
    if stem not in STEMS:
        raise ConfigError(f"resnet stem must be one of {list(STEMS)}, got {stem!r}")
    if isinstance(sk_ratio, bool) or not isinstance(sk_ratio, (int, float)) or not (
            math.isfinite(sk_ratio) and sk_ratio >= 0):
        raise ConfigError(f"resnet sk_ratio must be a finite number >= 0, got {sk_ratio!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"resnet in_channels must be an integer >= 1, got {in_channels!r}")
    return ResNet(int(depth), float(width), stem, float(sk_ratio), in_channels,
                  zero_init_residual=bool(zero_init_residual))
