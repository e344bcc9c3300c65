"""The figures of :mod:`selfsup.pictures`: image grids and a 2-D map, drawn with matplotlib.

Every figure says what it shows in its title (run, split, features, what a colour means),
so it can be read without the code. Images are drawn as stored (uint8, gray or RGB).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from torch import Tensor

SAME, OTHER = "#1a7f37", "#cf222e"  # title colours: same class as the query, another class
DPI = 80


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _show(ax, image: Tensor) -> None:
    """One uint8 (C, H, W) image, without axes ticks."""
    a = image.numpy()
    if a.shape[0] == 1:
        ax.imshow(a[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(a.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a 256-colour PNG: a third of the bytes, no visible change here."""
    from PIL import Image

    from selfsup.outputs import make_folder, remove_made, write_error

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    pyplot().close(fig)
    image = Image.open(buffer).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    made = make_folder(path.parent, "the pictures")  # one line if it cannot be made
    tmp = path.with_name(f".{path.name}.tmp")
    try:  # through a temporary: a failed write leaves no half PNG (nor a folder we made)
        image.save(tmp, format="png", optimize=True)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        remove_made(made)
        raise write_error(path, "the picture", e) from None
    return path


def draw_neighbours(path: Path, title: str, queries: Tensor, query_names: list[str] | None,
                    neighbours: Tensor, neighbour_names: list[list[str]] | None,
                    sims: Tensor) -> Path:
    """Row i: query i, then its k neighbours (uint8 (Q, C, H, W) and (Q, k, C, H, W)),
    titled with class names and cosine; green/red: the neighbour's class is/is not the query's."""
    plt = pyplot()
    q, k = neighbours.shape[:2]
    fig, axes = plt.subplots(q, k + 1, figsize=(1.05 * (k + 1) + 0.3, 1.3 * q + 0.6),
                             squeeze=False, layout="constrained")
    for i in range(q):
        _show(axes[i, 0], queries[i])
        axes[i, 0].set_title("query" + (f"\n{query_names[i]}" if query_names else ""),
                             fontsize=7, fontweight="bold")
        for side in axes[i, 0].spines.values():
            side.set(color="#0969da", linewidth=2.5)
        for j in range(k):
            ax = axes[i, j + 1]
            _show(ax, neighbours[i, j])
            name = neighbour_names[i][j] if neighbour_names else None
            colour = "black" if not name else SAME if name == query_names[i] else OTHER
            ax.set_title((f"{name}\n" if name else "") + f"cos {float(sims[i, j]):.3f}",
                         fontsize=7, color=colour)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def draw_map(path: Path, title: str, xy: np.ndarray, groups: np.ndarray | None,
             names: list[str]) -> Path:
    """A scatter of 2-D points, one colour per group (class or cluster), with a legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.2, 6.2))
    if groups is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=5, color="#555555", linewidths=0)
    else:
        present = np.unique(groups)
        cmap = plt.get_cmap("tab10" if len(present) <= 10 else "tab20"
                            if len(present) <= 20 else "nipy_spectral")
        for n, g in enumerate(present):
            at = groups == g
            colour = cmap(n if len(present) <= 20 else n / max(len(present) - 1, 1))
            ax.scatter(xy[at, 0], xy[at, 1], s=6, color=colour, linewidths=0,
                       label=names[g] if g < len(names) else str(g))
        if len(present) <= 20:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
                      markerscale=2.5, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def draw_rows(path: Path, title: str, rows: list[tuple[str, Tensor]], columns: int) -> Path:
    """One labelled row of images per group (a cluster): (label, uint8 (n, C, H, W))."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), columns, squeeze=False, layout="constrained",
                             figsize=(1.0 * columns + 1.9, 1.0 * len(rows) + 0.7))
    for i, (label, images) in enumerate(rows):
        for j in range(columns):
            ax = axes[i, j]
            if j < len(images):
                _show(ax, images[j])
            else:
                ax.axis("off")
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7,
                              labelpad=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
