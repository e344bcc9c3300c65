"""Class-balanced label subsets, for semi-supervised fine-tuning on 1% / 10% of the labels.

SimCLR (Chen et al. 2020, Sec. 6) fine-tunes on "1% and 10% of the labeled ILSVRC-12 training
datasets in a class-balanced way". Here each class keeps the same fraction of its images (or
the same count), drawn from one seeded shuffle, so a smaller subset is always contained in a
larger one with the same seed: the 1% run sees a subset of the 10% run's labels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup.errors import ConfigError, read_text_file


def class_balanced_subset(labels: torch.Tensor, fraction: float | None = None,
                          per_class: int | None = None, seed: int = 0) -> torch.Tensor:
    """Sorted int64 indices of a class-balanced subset of ``labels``.

    Args:
        labels: integer class labels (N,); negative values count as unlabeled and are skipped.
        fraction: share of every class to keep, in (0, 1]; rounded per class, at least 1.
        per_class: number to keep from every class instead (must not exceed any class size).
        seed: the same seed gives the same subset; subsets of one seed are nested.

    Give exactly one of ``fraction`` and ``per_class``. Raises ConfigError (a ValueError)
    on bad arguments.
    """
    if (fraction is None) == (per_class is None):
        raise ConfigError("class_balanced_subset: give exactly one of fraction and per_class")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ConfigError(f"label fraction must be in (0, 1], got {fraction}")
    if per_class is not None and per_class < 1:
        raise ConfigError(f"per_class must be >= 1, got {per_class}")
    labels = torch.as_tensor(labels).cpu()
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ConfigError(f"labels must be a 1-D integer tensor, got {labels.dtype} "
                          f"{tuple(labels.shape)}")
    # One shuffle shared by all classes; each class keeps its first k in this order.
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)  # (N,)
    shuffled = labels[order]  # (N,)
    picks = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        members = order[shuffled == c]  # this class's indices, in shuffled order
        if per_class is not None:
            if per_class > len(members):
                raise ConfigError(f"class {c} has {len(members)} labelled images, fewer than "
                                  f"per_class={per_class}")
            k = per_class
        else:
            k = max(1, int(fraction * len(members) + 0.5))  # round half up, never 0
        picks.append(members[:k])
    if not picks:
        return torch.empty(0, dtype=torch.int64)
    return torch.sort(torch.cat(picks)).values.to(torch.int64)



VAL_FRACTION, VAL_SEED = 0.1, 0  # ../shared PROTOCOLS.md, "Validation split"


def validation_split(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, val)``: sorted indices of the train split's other 90 % and its held-out,
    class-balanced 10 % (``VAL_FRACTION`` of every class, fixed by ``VAL_SEED``).

    Recipe values are chosen on ``val`` (k-NN queries) with ``keep`` as the pretraining set
    and the k-NN memory, so a preset never sees the test split while it is tuned. The two are
    disjoint and cover the split; the same labels always give the same split."""
    val = class_balanced_subset(labels, fraction=VAL_FRACTION, seed=VAL_SEED)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val] = False
    return mask.nonzero().view(-1), val


def save_subset(indices: torch.Tensor, path: str | Path) -> Path:
    """Write ``indices`` one per line (the format :func:`load_subset` reads back)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{i}\n" for i in indices.tolist()))
    tmp.replace(path)
    return path


def load_subset(path: str | Path, num_images: int, names: list[str] | None = None) -> torch.Tensor:
    """Sorted int64 indices from a subset file: one index per line, or one file name per line.

    File-name lists (the official ImageNet ``1percent.txt`` / ``10percent.txt``
    of SimCLR, lines like ``n01440764_10026.JPEG``) are matched against
    ``names``, the base names of the data set's files (image-folder sets).
    Blank lines and ``#`` comments are skipped. Raises ConfigError naming the
    file and the first bad line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: subset file not found")
    text = read_text_file(path, "one index or file name per line")
    lines = [(n, s.strip()) for n, s in enumerate(text.splitlines(), 1)]
    lines = [(n, s) for n, s in lines if s and not s.startswith("#")]
    if not lines:
        raise ConfigError(f"{path}: subset file lists no images")
    if all(s.isdigit() for _, s in lines):
        idx = [int(s) for _, s in lines]
        bad = next(((n, i) for (n, _), i in zip(lines, idx) if i >= num_images), None)
        if bad:
            raise ConfigError(f"{path}:{bad[0]}: index {bad[1]} is out of range for a data set "
                              f"of {num_images} images")
    else:
        if names is None:
            raise ConfigError(f"{path}: lists file names, but this data set has no file names "
                              f"(give indices, or use an image-folder data set)")
        exact = {nm: i for i, nm in enumerate(names)}  # relative paths (a packed folder's)
        base: dict[str, int] = {}
        for i, nm in enumerate(names):  # base names, as ImageNet's lists give them
            base[Path(nm).name] = -1 if Path(nm).name in base else i  # -1: ambiguous
        idx = []
        for n, s in lines:
            i = exact.get(s, base.get(Path(s).name))
            if i is None:
                raise ConfigError(f"{path}:{n}: {s!r} is not in the data set")
            if i < 0:
                raise ConfigError(f"{path}:{n}: several images are named {Path(s).name!r}; "
                                  "give the path relative to the image folder")
            idx.append(i)
    out = torch.tensor(idx, dtype=torch.int64)
    if len(torch.unique(out)) != len(out):
        raise ConfigError(f"{path}: lists an image more than once")
    return torch.sort(out).values
