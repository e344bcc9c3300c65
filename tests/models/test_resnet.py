"""ResNet encoders: output widths, stems, torchvision names and sizes, SK (SimCLR v2)."""

import math

import pytest
import torch
from torch import nn

from selfsup.errors import ConfigError
from selfsup.models import SKConv2d, resnet

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3)}


def torchvision_shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """State-dict entries of torchvision.models.resnet{depth}() minus fc, written from its
    definition (not from our model): conv1 7x7 -> 64, bn1; four stages of BasicBlocks
    (conv1 3x3, conv2 3x3) or Bottlenecks (conv1 1x1, conv2 3x3, conv3 1x1 -> 4x), a
    downsample.0 (1x1 conv) / .1 (BN) on a stage's first block when shape changes."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    cin = 64
    for i, n in enumerate(BLOCKS[depth]):
        planes = 64 * 2**i
        for b in range(n):
            p = f"layer{i + 1}.{b}"
            if depth >= 50:
                convs = [(planes, cin, 1, 1), (planes, planes, 3, 3), (4 * planes, planes, 1, 1)]
            else:
                convs = [(planes, cin, 3, 3), (planes, planes, 3, 3)]
            for k, shape in enumerate(convs, 1):
                shapes[f"{p}.conv{k}.weight"] = shape
                bn(f"{p}.bn{k}", shape[0])
            cout = convs[-1][0]
            if b == 0 and (i > 0 or cin != cout):
                shapes[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                bn(f"{p}.downsample.1", cout)
            cin = cout
    return shapes


@pytest.mark.parametrize("depth, n_entries, n_params", [(18, 120, 11_689_512 - 513_000),
                                                        (50, 318, 25_557_032 - 2_049_000)])
def test_torchvision_state_dict_loads_strict(depth, n_entries, n_params):
    ref = torchvision_shapes(depth)
    # The reference itself matches torchvision's published sizes (its parameter count minus fc).
    assert len(ref) == n_entries
    assert sum(math.prod(s) for k, s in ref.items() if k.rsplit(".", 1)[1] in
               ("weight", "bias")) == n_params
    state = {k: torch.randn(s) if s else torch.tensor(7) for k, s in ref.items()}
    model = resnet(depth)
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.layer2[0].downsample[0].weight, state["layer2.0.downsample.0.weight"])
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert not hasattr(model, "fc")


@pytest.mark.parametrize("depth, width, dim", [(18, 1, 512), (18, 0.25, 128), (18, 0.5, 256),
                                               (34, 0.25, 128), (50, 0.25, 512), (50, 1, 2048)])
def test_forward_feature_dim(depth, width, dim):
    model = resnet(depth, width=width)  # ImageNet stem: 32x32 -> 8x8 early, so it is cheap
    assert model.feature_dim == dim
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, dim)


@pytest.mark.parametrize("depth, width, dim", [(18, 2, 1024), (50, 2, 4096), (101, 1, 2048),
                                               (152, 3, 6144), (18, 0.3, 154)])
def test_feature_dim_without_forward(depth, width, dim):
    with torch.device("meta"):  # no memory, no init cost: ResNet-152 3x has 522M parameters
        model = resnet(depth, width=width)
    assert model.feature_dim == dim
    assert model.layer1[0].conv1.out_channels == round(64 * width)


def test_tiny_width_keeps_at_least_one_channel():
    model = resnet(18, width=0.001, stem="cifar")
    assert model.conv1.out_channels == 1 and model.feature_dim == 1
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 1)


def _spatial_sizes(model, x):
    sizes = {}
    hooks = [getattr(model, n).register_forward_hook(
        lambda _m, _i, out, n=n: sizes.__setitem__(n, tuple(out.shape[-2:])))
        for n in ("maxpool", "layer1", "layer4")]
    model(x)
    for h in hooks:
        h.remove()
    return sizes


def test_stems_spatial_sizes():
    cifar = _spatial_sizes(resnet(18, width=0.25, stem="cifar"), torch.randn(2, 3, 32, 32))
    assert cifar == {"maxpool": (32, 32), "layer1": (32, 32), "layer4": (4, 4)}
    imnet = _spatial_sizes(resnet(18, width=0.25), torch.randn(2, 3, 64, 64))
    assert imnet == {"maxpool": (16, 16), "layer1": (16, 16), "layer4": (2, 2)}
    assert isinstance(resnet(18, stem="cifar").conv1, nn.Conv2d)
    assert resnet(18, stem="cifar").conv1.kernel_size == (3, 3)


def test_in_channels_and_input_validation():
    gray = resnet(18, width=0.25, stem="cifar", in_channels=1)
    assert gray(torch.randn(2, 1, 16, 16)).shape == (2, 128)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\), got \(2, 3, 16, 16\)"):
        gray(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"got \(3, 16, 16\)"):
        resnet(18, width=0.25)(torch.randn(3, 16, 16))


@pytest.mark.parametrize("kwargs, word", [({"depth": 20}, "depth"), ({"width": 0}, "width"),
                                          ({"width": float("nan")}, "width"),
                                          ({"stem": "tiny"}, "stem"), ({"sk_ratio": -1}, "sk"),
                                          ({"in_channels": 0}, "in_channels")])
def test_bad_arguments_raise_config_error(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        resnet(**kwargs)


def test_init_kaiming_and_zero_init_residual():
    model = resnet(18)
    w = model.layer4[1].conv2.weight  # fan_out = 512 * 3 * 3
    assert w.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.05)
    assert all(m.weight.eq(1).all() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    zero = resnet(50, width=0.25, zero_init_residual=True)
    assert all(b.bn3.weight.eq(0).all() for layer in (zero.layer1, zero.layer4) for b in layer)
    assert zero.layer1[0].bn2.weight.eq(1).all()


def test_backward_reaches_the_stem():
    model = resnet(18, width=0.25, stem="cifar")
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


# --- SimCLR v2 selective kernels -------------------------------------------------------------

@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("width", [1, 2, 3])
def test_sk_resnet_builds_at_every_width(depth, width):
    with torch.device("meta"):
        model = resnet(depth, width=width, sk_ratio=0.0625)
    assert model.feature_dim == (512 if depth < 50 else 2048) * width

@pytest.mark.parametrize("depth, width, millions", [
    (50, 1, 35), (50, 2, 140), (101, 1, 65), (101, 2, 257), (152, 1, 89), (152, 2, 354),
    (152, 3, 795)])
def test_sk_parameter_counts_match_simclr_v2_table(depth, width, millions):
    """SimCLR v2 (arXiv 2006.10029) Table 1 parameter counts of the SK encoders, within 1 %."""
    with torch.device("meta"):
        model = resnet(depth, width=width, sk_ratio=0.0625)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert n == pytest.approx(millions, rel=0.01)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("stem, size", [("cifar", 8), ("imagenet", 35)])
def test_sk_resnet_forward(depth, stem, size):
    """Every depth x stem runs (width 1/8 keeps it quick; odd sizes too)."""
    model = resnet(depth, width=0.125, stem=stem, sk_ratio=0.0625)
    assert model(torch.randn(2, 3, size, size)).shape == (2, model.feature_dim)


def test_sk_resnet_d_structure():
    model = resnet(50, width=0.25, sk_ratio=0.0625)
    stem_convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in stem_convs] == [(3, 3)] * 3
    assert [c.stride for c in stem_convs] == [(2, 2), (1, 1), (1, 1)]
    assert isinstance(model.layer2[0].downsample[0], nn.AvgPool2d)
    assert model.layer2[0].downsample[1].stride == (1, 1)
    assert isinstance(model.layer1[0].downsample[0], nn.Identity)  # stride 1: nothing to pool
    assert isinstance(model.layer3[1].conv2, SKConv2d)
    assert isinstance(resnet(18, width=0.25, sk_ratio=0.0625).layer2[0].conv1, SKConv2d)


@pytest.mark.parametrize("dilated", [False, True])
def test_sk_attention_sums_to_one_and_mixes_branches(dilated):
    torch.manual_seed(0)
    sk = SKConv2d(8, 16, stride=2, sk_ratio=0.25, min_dim=4, dilated=dilated)
    x = torch.randn(3, 8, 9, 9)
    u, a = sk.branches(x)
    assert u.shape == (3, 2, 16, 5, 5) and a.shape == (3, 2, 16, 1, 1)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(3, 16, 1, 1))
    assert (u >= 0).all() and (a > 0).all()
    expected = a[:, 0] * u[:, 0] + a[:, 1] * u[:, 1]
    torch.testing.assert_close(sk(x), expected)
    assert sk.fuse.out_channels == 4 and sk.select.out_channels == 32


def test_sk_bottleneck_width_uses_min_dim():
    assert SKConv2d(64, 64, sk_ratio=0.0625).fuse.out_channels == 32  # max(64/16, 32)
    assert SKConv2d(1024, 1024, sk_ratio=0.0625).fuse.out_channels == 64
    with pytest.raises(ConfigError, match="sk_ratio"):
        SKConv2d(8, 8, sk_ratio=0)
