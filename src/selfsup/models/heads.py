"""Projection heads g: the MLP between the representation h and the loss's z = g(h).

SimCLR (Chen et al., arXiv 2002.05709, sec. 2.1): "a MLP with one hidden
layer to obtain z_i = g(h_i) = W(2) σ(W(1) h_i)"; the reference code puts BN
after the hidden layer. h, not z, is the representation used downstream.

SimCLR v2 (arXiv 2006.10029, sec. 2): a deeper, 3-layer head, and fine-tuning
"from the middle layer of the projection head": the first k layers of g are
kept as part of the network that is fine-tuned. ``.layers`` is an
``nn.ModuleList`` of blocks for exactly that: ``nn.Sequential(*head.layers[:k])``.

MoCo v1 (He et al., arXiv 1911.05722) projects with a single linear layer
(``num_layers=1``); MoCo v2 (arXiv 2003.04297) uses a 2-layer MLP without BN
(``hidden_bn=False``).

Choices and their reasons:
- A Linear that feeds a BN has no bias: BN's shift makes it redundant.
- The v2 output BN is ``BatchNorm1d(out_dim)`` with a learnable scale AND
  shift. The reference code (google-research/simclr ``tf2/model.py``) uses
  scale only (``center=False``); a frozen-zero shift cannot be expressed
  without a parameter that fine-tuning code might unfreeze, so we keep it.
  (That code also puts a BN on the output of its 2-layer head; the
  ``ProjectionHead`` API fixes v1 as Linear-BN-ReLU, Linear, i.e. the paper.)
- Linear weights use PyTorch's default init (as MoCo and lightly do).
"""

from __future__ import annotations

from torch import Tensor, nn

from selfsup.errors import ConfigError


def _block(in_dim: int, out_dim: int, bn: bool, relu: bool) -> nn.Sequential:
    """Linear[, BN][, ReLU]."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(out_dim))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """``num_layers`` blocks ``in_dim -> hidden_dim -> ... -> out_dim``.

    - ``num_layers=1``: Linear (MoCo v1).
    - ``num_layers=2``: Linear-BN-ReLU, Linear (SimCLR v1).
    - ``num_layers=3``: Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN (SimCLR v2).

    Every block but the last is Linear-BN-ReLU (Linear-ReLU with
    ``hidden_bn=False``). The last block is Linear, plus BN when ``out_bn``
    (default: ``num_layers >= 3``, SimCLR v2's choice). ``dims[k]`` is the
    width after the first k blocks, i.e. the input size of a classifier put on
    ``layers[:k]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, *,
                 hidden_bn: bool = True, out_bn: bool | None = None) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim),
                            ("out_dim", out_dim), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ProjectionHead {name} must be an integer >= 1, got {value!r}")
        if out_bn is None:
            out_bn = num_layers >= 3
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.num_layers = num_layers
        self.dims: list[int] = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            _block(self.dims[i], self.dims[i + 1], bn=hidden_bn, relu=True)
            for i in range(num_layers - 1)
        )
        self.layers.append(_block(self.dims[-2], out_dim, bn=bool(out_bn), relu=False))

    def forward(self, h: Tensor) -> Tensor:
        # A shape check is free and names the mismatch better than a matmul error does.
        if h.ndim != 2 or h.shape[1] != self.in_dim:
            raise ValueError(f"ProjectionHead expects input of shape (N, {self.in_dim}), "
                             f"got {tuple(h.shape)}")
        for layer in self.layers:
            h = layer(h)
        return h  # N x out_dim
