"""Jigsaw puzzles as a pretext task, and Jigsaw++.

Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving
Jigsaw Puzzles", ECCV 2016 (arXiv 1603.09246): an image is cut into a 3x3 grid
of tiles, the tiles are shuffled by one of a fixed set of permutations
(:mod:`selfsup.methods.permutations`) and the network classifies which one.
The context-free network runs each tile through a shared trunk up to
the first fully connected layer (fc6), concatenates the nine fc6 outputs in
tile order and classifies the permutation (fc7, fc8). Shortcuts are blocked
as in the paper: tiles are cut with a random gap inside their cells, so that
edges and lines do not continue from tile to tile, and each tile's mean and
standard deviation are normalised on their own, so that low-level
statistics cannot give a tile's position away.

Jigsaw++ (Noroozi, Vinjimoor, Favaro, Pirsiavash, "Boosting Self-Supervised
Learning via Knowledge Transfer", CVPR 2018) replaces a random number of
tiles (0 to 2) by tiles of another random image and uses 701 permutations
with a minimum Hamming distance of 3; the classifier is the same.
Here the other image is another image of the batch and each replaced tile is
a random cell of it (not its own cell, whose content would still hint at the
permutation). With ``plus`` more images are also made grey, so that colour
helps less: ``grayscale`` (default 0.6 with ``plus``, our choice) is applied
in the method, on top of the augmentation recipe's own grayscale (0.2).

The trunk is an ordinary backbone (its ``feature_dim``), so k-NN, export and
clustering use it on whole images unchanged. Its input here is one tile:
side // 3 - ``gap`` pixels (7 at 28 px, 8 at 32 px); the CIFAR-stem ResNet
pools adaptively and takes it as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.augment import ops, params
from selfsup.config import Config
from selfsup.config.method_checks import check_jigsaw
from selfsup.errors import ConfigError
from selfsup.methods.base import Method
from selfsup.methods.permutations import TILES, permutation_set
from selfsup.methods.registry import register_method

GRID = 3  # tiles per side


def _randint(low: int, high: int, size: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Integers in [low, high) on the generator's device."""
    return torch.randint(low, high, size, generator=g, device=g.device)


def extract_tiles(images: Tensor, gap: int, generator: torch.Generator) -> Tensor:
    """A 3x3 grid of tiles per image with random gaps: (N, C, H, W) -> (N, 9, C, t, t).

    Cells are ``c = min(H, W) // 3`` pixels; the grid is shifted at random by
    the leftover ``H - 3c`` (``W - 3c``) pixels and each tile of side
    ``t = c - gap`` by 0..gap pixels per axis inside its cell, independently
    per tile and per image. Tile k is cell (k // 3, k % 3), in reading order.
    """
    n, _, height, width = images.shape
    cell = min(height, width) // GRID
    side = cell - gap
    if side < 2:
        raise ConfigError(f"method.jigsaw.gap {gap} leaves {side}-pixel tiles of {height}x{width} "
                          f"images (cells of {cell}); use a smaller gap or larger images")
    g = generator
    grid_y = _randint(0, height - GRID * cell + 1, (n, 1), g)  # N x 1
    grid_x = _randint(0, width - GRID * cell + 1, (n, 1), g)  # N x 1
    k = torch.arange(TILES, device=images.device)  # 9
    top = grid_y + (k // GRID) * cell + _randint(0, gap + 1, (n, TILES), g)  # N x 9
    left = grid_x + (k % GRID) * cell + _randint(0, gap + 1, (n, TILES), g)  # N x 9
    step = torch.arange(side, device=images.device)  # t
    rows = (top[..., None] + step)[:, :, :, None]  # N x 9 x t x 1
    cols = (left[..., None] + step)[:, :, None, :]  # N x 9 x 1 x t
    batch = torch.arange(n, device=images.device)[:, None, None, None]  # N x 1 x 1 x 1
    tiles = images.permute(0, 2, 3, 1)[batch, rows, cols]  # N x 9 x t x t x C
    return tiles.permute(0, 1, 4, 2, 3)  # N x 9 x C x t x t


def normalize_tiles(tiles: Tensor, eps: float = 1e-5) -> Tensor:
    """Each tile's channels to mean 0, std 1 over its pixels: (..., C, t, t), same shape.

    A constant tile (a blank background) becomes all zeros.
    """
    var, mean = torch.var_mean(tiles, dim=(-2, -1), keepdim=True, correction=0)  # ... x C x 1 x 1
    return (tiles - mean) * torch.rsqrt(var + eps)


def shuffle_tiles(tiles: Tensor, perms: Tensor) -> Tensor:
    """Position k of sample n shows tile ``perms[n, k]``: (N, 9, ...) with perms (N, 9).

    ``shuffle_tiles(shuffle_tiles(x, p), inverse(p))`` is ``x``.
    """
    batch = torch.arange(tiles.shape[0], device=tiles.device)[:, None]  # N x 1
    return tiles[batch, perms]  # N x 9 x ...


def replace_tiles(tiles: Tensor, generator: torch.Generator,
                  max_replaced: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """Jigsaw++: 0..``max_replaced`` tiles per image (uniformly) from another image of the batch.

    Returns the tiles (N, 9, C, t, t), the replaced positions (N, 9) bool and
    the other image's index (N,), never the sample's own. A replaced tile is
    a random cell of that image.
    """
    n = tiles.shape[0]
    if n < 2:
        raise ValueError(f"Jigsaw++ takes tiles from another image: needs N >= 2, got {n}")
    g = generator
    count = _randint(0, max_replaced + 1, (n,), g)  # N: tiles to replace
    rank = torch.argsort(params.random_order(n, TILES, g), dim=1)  # N x 9: random rank of a cell
    replaced = rank < count[:, None]  # N x 9: `count` random cells
    other = (torch.arange(n, device=tiles.device) + _randint(1, n, (n,), g)) % n  # N, != own
    source = _randint(0, TILES, (n, TILES), g)  # N x 9: the other image's cell to take
    foreign = tiles[other[:, None], source]  # N x 9 x C x t x t
    mask = replaced[:, :, None, None, None]  # N x 9 x 1 x 1 x 1
    return torch.where(mask, foreign, tiles), replaced, other


class JigsawHead(nn.Module):
    """fc6 per tile (shared), concatenation in tile order, fc7, fc8 over the permutations.

    The context-free network's layers after the trunk (Noroozi & Favaro,
    Fig. 3: fc6 1024 per tile, fc7 4096, fc8 the classes); here both hidden
    widths are ``hidden``, for small trunks.
    """

    def __init__(self, feature_dim: int, num_permutations: int, hidden: int = 512) -> None:
        super().__init__()
        self.fc6 = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True))
        self.fc7 = nn.Sequential(nn.Linear(TILES * hidden, hidden), nn.ReLU(inplace=True))
        self.fc8 = nn.Linear(hidden, num_permutations)

    def forward(self, h: Tensor) -> Tensor:
        """Trunk features of the tiles in shuffled order (N, 9, D) -> logits (N, P)."""
        f = self.fc6(h)  # N x 9 x hidden
        return self.fc8(self.fc7(f.flatten(1)))  # N x P


class Jigsaw(Method):
    """Solve a 3x3 jigsaw puzzle per image; returns ``(loss, metrics)`` from one view.

    Per step, for each image of the view: (grayscale with p = ``grayscale``),
    cut 9 tiles with random gaps (:func:`extract_tiles`), with ``plus``
    replace 0-2 by tiles of another image (:func:`replace_tiles`), normalise
    each tile (:func:`normalize_tiles`), draw a permutation class y
    uniformly and shuffle the tiles by ``permutations[y]``. All 9N tiles go
    through the backbone as one batch; :class:`JigsawHead` classifies y with
    cross-entropy. Randomness comes from :attr:`generator` (the run's seeded
    generator, set by the loop; if None, a private one seeded 0 on first use).

    ``num_permutations`` None: 100 (Jigsaw), 701 (Jigsaw++); the set is the
    greedy max-min Hamming set of ``permutation_seed``, kept in a buffer so it
    travels with the checkpoint. ``grayscale`` None: 0.6 with ``plus``, else 0.

    Metrics: ``loss`` and ``acc`` (permutation accuracy), device tensors.
    There are no positive/negative scores, so the score monitor stays empty.
    """

    n_views = 1  # the loop augments each batch once

    def __init__(self, backbone: nn.Module, num_permutations: int | None = None, *,
                 plus: bool = False, grayscale: float | None = None, gap: int = 2,
                 hidden: int = 512, permutation_seed: int = 0) -> None:
        super().__init__()
        check_jigsaw(num_permutations, grayscale, gap, hidden)
        if num_permutations is None:
            num_permutations = 701 if plus else 100
        grayscale = (0.6 if plus else 0.0) if grayscale is None else grayscale
        perms = permutation_set(num_permutations, permutation_seed)  # P x 9
        self.backbone = backbone
        self.head = JigsawHead(backbone.feature_dim, num_permutations, hidden)
        self.register_buffer("permutations", perms)
        self.plus, self.grayscale, self.gap = bool(plus), float(grayscale), int(gap)

    @property
    def num_permutations(self) -> int:
        return self.permutations.shape[0]

    def puzzles(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Shuffled, normalised tiles (N, 9, C, t, t) and their permutation classes (N,)."""
        n = x.shape[0]
        g = self._generator(x.device)
        if self.grayscale > 0:
            x = ops.grayscale(x, params.bernoulli(n, self.grayscale, g))  # N x C x H x W
        tiles = extract_tiles(x, self.gap, g)  # N x 9 x C x t x t
        if self.plus:
            tiles, _, _ = replace_tiles(tiles, g)
        tiles = normalize_tiles(tiles)
        y = _randint(0, self.num_permutations, (n,), g)  # N: permutation classes
        return shuffle_tiles(tiles, self.permutations[y]), y

    def forward(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if len(views) != 1:
            raise ValueError(f"Jigsaw takes 1 view, got {len(views)}")
        tiles, y = self.puzzles(views[0])  # N x 9 x C x t x t, N
        n = tiles.shape[0]
        h = self.backbone(tiles.flatten(0, 1))  # 9N x D: one batch, shared trunk
        logits = self.head(h.view(n, TILES, -1))  # N x P
        loss = F.cross_entropy(logits.float(), y)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}

    def extra_repr(self) -> str:
        return (f"num_permutations={self.num_permutations}, plus={self.plus}, "
                f"grayscale={self.grayscale}, gap={self.gap}")


@register_method("jigsaw")
def build_jigsaw(cfg: Config, backbone: nn.Module) -> Method:
    """Jigsaw (Noroozi & Favaro, ECCV 2016) or, with ``jigsaw.plus``, Jigsaw++ (CVPR 2018)."""
    j = cfg.method.jigsaw
    return Jigsaw(backbone, j.permutations, plus=j.plus, grayscale=j.grayscale, gap=j.gap,
                  hidden=j.hidden)
