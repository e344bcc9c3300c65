"""Projection heads: SimCLR v1 / v2 and MoCo layouts, slicing for fine-tuning from layer k."""

import pytest
import torch
from torch import nn

from selfsup.errors import ConfigError
from selfsup.models import ProjectionHead


def layout(head: ProjectionHead) -> list[list[str]]:
    return [[type(m).__name__ for m in block] for block in head.layers]


@pytest.mark.parametrize("num_layers, expected", [
    (1, [["Linear"]]),  # MoCo v1
    (2, [["Linear", "BatchNorm1d", "ReLU"], ["Linear"]]),  # SimCLR v1
    (3, [["Linear", "BatchNorm1d", "ReLU"], ["Linear", "BatchNorm1d", "ReLU"],
         ["Linear", "BatchNorm1d"]]),  # SimCLR v2
])
def test_layer_structure(num_layers, expected):
    head = ProjectionHead(32, 24, 8, num_layers=num_layers)
    assert isinstance(head.layers, nn.ModuleList)
    assert all(isinstance(block, nn.Sequential) for block in head.layers)
    assert layout(head) == expected


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_dims_and_bias_only_without_bn(num_layers):
    head = ProjectionHead(32, 24, 8, num_layers=num_layers)
    assert head(torch.randn(5, 32)).shape == (5, 8)
    assert head.dims == [32] + [24] * (num_layers - 1) + [8]
    for block, (d_in, d_out) in zip(head.layers, zip(head.dims, head.dims[1:])):
        linear = block[0]
        assert (linear.in_features, linear.out_features) == (d_in, d_out)
        feeds_bn = len(block) > 1 and isinstance(block[1], nn.BatchNorm1d)
        assert (linear.bias is None) == feeds_bn  # BN's shift makes a bias redundant


def test_slicing_keeps_first_k_layers():
    """SimCLR v2: fine-tune from the middle of the head = keep g's first k blocks."""
    head = ProjectionHead(32, 24, 8, num_layers=3)
    for k in range(4):
        kept = nn.Sequential(*head.layers[:k])
        out = kept(torch.randn(4, 32))
        assert out.shape == (4, head.dims[k])
    # The kept blocks are the head's own modules (their weights are the pretrained ones).
    assert head.layers[:1][0][0] is head.layers[0][0]


def test_forward_runs_layers_in_order():
    torch.manual_seed(0)
    head = ProjectionHead(6, 5, 3, num_layers=3).eval()
    x = torch.randn(4, 6)
    manual = x
    for block in head.layers:
        manual = block(manual)
    torch.testing.assert_close(head(x), manual)
    # Eval-mode reference from the formulas (running stats of a fresh BN: mean 0, var 1).
    ref = x
    for i, block in enumerate(head.layers):
        ref = ref @ block[0].weight.T / (1 + 1e-5) ** 0.5
        if i < 2:
            ref = ref.clamp_min(0)
    torch.testing.assert_close(head(x), ref)


def test_options_hidden_bn_and_out_bn():
    moco_v2 = ProjectionHead(16, 16, 4, num_layers=2, hidden_bn=False)
    assert layout(moco_v2) == [["Linear", "ReLU"], ["Linear"]]
    assert moco_v2.layers[0][0].bias is not None
    with_out_bn = ProjectionHead(16, 16, 4, num_layers=2, out_bn=True)
    assert layout(with_out_bn)[-1] == ["Linear", "BatchNorm1d"]
    no_out_bn = ProjectionHead(16, 16, 4, num_layers=3, out_bn=False)
    assert layout(no_out_bn)[-1] == ["Linear"]


@pytest.mark.parametrize("kwargs, name", [
    ({"in_dim": 0}, "in_dim"), ({"hidden_dim": -1}, "hidden_dim"), ({"out_dim": 0}, "out_dim"),
    ({"num_layers": 0}, "num_layers"), ({"in_dim": 2.5}, "in_dim"),
])
def test_bad_dims_raise_config_error(kwargs, name):
    args = {"in_dim": 8, "hidden_dim": 8, "out_dim": 4} | kwargs
    with pytest.raises(ConfigError, match=name):
        ProjectionHead(**args)


def test_wrong_input_width_names_shapes():
    with pytest.raises(ValueError, match=r"\(N, 8\), got \(2, 7\)"):
        ProjectionHead(8, 8, 4)(torch.randn(2, 7))
