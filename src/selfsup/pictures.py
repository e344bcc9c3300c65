"""Pictures of what an encoder learned, written into ``RUN/plots/``.

* ``neighbours.png``: a few query images of the test split (the train split when there is
  none) and their k nearest train images by cosine of the backbone features h, with class
  names: the classic check of what a self-supervised encoder learned (Wu et al. 2018, Fig. 4;
  Chen et al. 2020 look at the same retrievals).
* ``map.png``: a 2-D map of the train images' features (UMAP when ``umap`` is installed,
  else t-SNE from scikit-learn), coloured by class, or by cluster for a cluster run.
* ``clusters.png`` (a ``selfsup cluster`` folder): a row of images per cluster, with its size
  and its most common true class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.cluster.teacher import Teacher, layer_features, load_teacher
from selfsup.data import ImageSet
from selfsup.errors import ConfigError, DataError
from selfsup.experiment import check_device, load_split, resolve_device
from selfsup.outputs import check_out
from selfsup.picture_plots import draw_map, draw_neighbours, draw_rows, pyplot
from selfsup.runs import RunFolder, run_config

MAPS = ("auto", "umap", "tsne", "none")
# Issue 23: --k 100000 drew a grid of 100000 columns for ever. Past these a figure is too wide
# (or tall) to read anyway; fewer map points than MIN_MAP_POINTS make t-SNE refuse (its
# perplexity must be below the number of points) and show nothing.
MAX_GRID = {"--queries": 50, "--k": 50, "--per-cluster": 50, "--clusters": 100}
MIN_MAP_POINTS = 10
NO_MAP = ("no 2-D map: it needs scikit-learn for t-SNE (pip install scikit-learn, or "
          "'selfsup[maps]') or umap-learn for UMAP (pip install umap-learn)")


def pick_queries(labels: Tensor | None, n: int, total: int) -> Tensor:
    """``n`` query positions: the first image of each class in turn (then the second of
    each...), or ``n`` evenly spaced images of an unlabelled set."""
    n = min(n, total)
    if labels is None:
        return torch.linspace(0, total - 1, n).round().long().unique()
    rank = torch.zeros_like(labels)  # the image's place among those of its class
    for c in labels.unique():
        at = (labels == c).nonzero().view(-1)
        rank[at] = torch.arange(len(at))
    key = rank * (int(labels.max()) + 1) + labels
    return key.argsort(stable=True)[:n]


def nearest(queries: Tensor, memory: Tensor, k: int, self_index: Tensor | None = None
            ) -> tuple[Tensor, Tensor]:
    """Cosine similarities and positions (Q, k) of the ``k`` nearest ``memory`` rows of each
    query (both L2-normalised); ``self_index`` leaves each query's own row out."""
    sims = queries @ memory.T  # Q x N
    if self_index is not None:
        sims[torch.arange(len(queries)), self_index] = -float("inf")
    top = sims.topk(min(k, sims.shape[1] - (self_index is not None)), dim=1)
    return top.values, top.indices


def map_2d(x: np.ndarray, method: str = "auto") -> tuple[np.ndarray | None, str]:
    """2-D coordinates (N, 2) of L2-normalised features and the method's name, or None and
    the reason (neither library installed)."""
    if method not in MAPS:
        raise ConfigError(f"unknown map {method!r}; known: {', '.join(MAPS)}")
    if method == "none":
        return None, "no 2-D map (--map none)"
    for name in (("umap", "tsne") if method == "auto" else (method,)):
        try:
            if name == "umap":
                import umap

                return umap.UMAP(n_components=2, random_state=0).fit_transform(x), "UMAP"
            from sklearn.manifold import TSNE
        except ImportError:
            continue
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        return TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(x), \
            "t-SNE"
    return None, NO_MAP


def _features(teacher: Teacher, images: ImageSet, layer: str | None, device, progress) -> Tensor:
    f = layer_features(teacher, images.images, layer, device=device, progress=progress)
    return F.normalize(f.float().cpu(), dim=1)  # N x D, unit rows: dot products are cosines


def _names(images: ImageSet, index: Tensor) -> list[str] | None:
    if images.labels is None:
        return None
    cls = images.classes
    return [cls[i] if i < len(cls) else str(i) for i in images.labels[index].tolist()]


def _map(out: Path, title: str, feats: Tensor, groups: Tensor | None, names: list[str],
         method: str, points: int) -> tuple[list[Path], list[str]]:
    """``map.png`` of up to ``points`` images (an evenly spaced subset)."""
    if len(feats) < MIN_MAP_POINTS:
        return [], [f"no 2-D map: only {len(feats)} images (a map needs {MIN_MAP_POINTS})"]
    idx = torch.linspace(0, len(feats) - 1, min(points, len(feats))).round().long().unique()
    xy, how = map_2d(feats[idx].numpy(), method)
    if xy is None:
        return [], [how]
    g = None if groups is None else groups[idx].numpy()
    return [draw_map(out / "map.png", f"{how} of {title.format(n=len(idx))}", xy, g, names)], []


def run_pictures(run: Path, out: Path, *, queries: int, k: int, method: str, points: int,
                 device: str, progress: bool, overrides: list[str] | None
                 ) -> tuple[list[Path], list[str]]:
    """``neighbours.png`` and ``map.png`` of a run folder."""
    teacher = load_teacher(run, overrides)
    if teacher.cfg is None:
        raise ConfigError(f"{run}: pictures need a run folder (its config names the data), "
                          "not an export folder")
    cfg, dev = teacher.cfg, resolve_device(device)
    memory = load_split(cfg, "train")
    try:
        query_set, split = load_split(cfg, "test"), "test"
    except DataError:
        query_set, split = memory, "train"
    mf = _features(teacher, memory, None, dev, progress)
    qf = mf if query_set is memory else _features(teacher, query_set, None, dev, progress)
    qi = pick_queries(query_set.labels, queries, len(query_set))
    sims, nb = nearest(qf[qi], mf, k, qi if query_set is memory else None)
    clamped = [f"k={nb.shape[1]}, not {k}: the train split holds {len(memory)} images"
               ] if nb.shape[1] < k else []
    qnames, nnames = _names(query_set, qi), _names(memory, nb.reshape(-1))
    title = (f"{run.name} ({cfg.method.name}, {cfg.data.dataset}): the {nb.shape[1]} nearest "
             f"train images of {len(qi)} {split} queries by cosine of the backbone features h"
             + ("\ngreen: the query's class, red: another class" if qnames else ""))
    written = [draw_neighbours(
        out / "neighbours.png", title, query_set.read(qi), qnames,
        memory.read(nb.reshape(-1)).view(*nb.shape, *memory.images.shape[1:]),
        None if nnames is None else [nnames[i * nb.shape[1]:(i + 1) * nb.shape[1]]
                                     for i in range(len(qi))], sims)]
    what = "coloured by class" if memory.labels is not None else "(no labels)"
    maps, notes = _map(out, f"the backbone features h of {{n}} {cfg.data.dataset} train images,"
                       f" {what}\n(run {run.name}; nearby points: images the encoder finds "
                       "alike)", mf, memory.labels, memory.classes, method, points)
    return written + maps, clamped + notes


def _layer_name(layer: str) -> str:
    return "backbone features h" if layer == "output" else f"{layer} features"


def _cluster_class(images: ImageSet, members: Tensor) -> str:
    """``"54% Ankle boot"``: the share of the cluster's most common true class ("" if none)."""
    if images.labels is None or not members.any():
        return ""
    counts = torch.bincount(images.labels[members])
    top = int(counts.argmax())
    name = images.classes[top] if top < len(images.classes) else str(top)
    return f"{100 * counts[top] / int(members.sum()):.0f}% {name}"


def _teacher_of(cluster_run: Path, info: dict) -> Teacher | None:
    """The cluster run's teacher: where it was, or beside the cluster run (moved together)."""
    given = Path(info["teacher"])
    for path in (given, cluster_run.parent / given.name):
        if path.exists():
            return load_teacher(path)
    return None


def cluster_pictures(run: Path, out: Path, *, per_cluster: int, max_clusters: int,
                     method: str, points: int, device: str, progress: bool,
                     overrides: list[str] | None) -> tuple[list[Path], list[str]]:
    """``clusters.png`` and ``map.png`` (coloured by cluster) of a cluster run."""
    from selfsup.cluster.pseudo_labels import load_pseudo_labels

    cfg = run_config(run, overrides)
    images = load_split(cfg, cfg.data.train_split)
    assign, info = load_pseudo_labels(run, len(images))
    k, stats = info["k"], info["labelled_stats"]
    sizes = torch.bincount(assign, minlength=k)
    gen = torch.Generator().manual_seed(0)
    about = [_cluster_class(images, assign == c) for c in range(k)]
    rows = []
    for c in sizes.argsort(descending=True, stable=True)[:max_clusters].tolist():
        members = (assign == c).nonzero().view(-1)
        pick = members[torch.randperm(len(members), generator=gen)[:per_cluster]].sort().values
        rows.append((f"cluster {c}\n{len(members)} images" + (f"\n{about[c]}" if about[c]
                                                               else ""), images.read(pick)))
    quality = (f"; against the true classes: purity {stats['purity']:.2f}, NMI "
               f"{stats['nmi']:.2f}" if "nmi" in stats else "")
    shown = f"the {len(rows)} largest" if len(rows) < k else "each"
    title = (f"{run.name}: k-means (k={k}) on the {_layer_name(info['layer'])} of "
             f"{Path(info['teacher']).name}; {per_cluster} random images of {shown} cluster, "
             f"largest first\n(left: cluster id, size and its most common true class{quality})")
    written = [draw_rows(out / "clusters.png", title, rows, per_cluster)]
    teacher = _teacher_of(run, info)
    if teacher is None:
        return written, [f"no map: the teacher {info['teacher']} is not there any more"]
    layer = None if info["layer"] == "output" else info["layer"]
    feats = _features(teacher, images, layer, resolve_device(device), progress)
    maps, notes = _map(out, f"the {_layer_name(info['layer'])} of {{n}} {cfg.data.dataset} images,"
                       f" coloured by k-means cluster\n(cluster run {run.name})", feats, assign,
                       [f"cluster {c}: {int(sizes[c])}" + (f", {about[c]}" if about[c] else "")
                        for c in range(k)], method, points)
    return written + maps, notes


def pictures(path: str | Path, *, queries: int = 8, k: int = 8, map: str = "auto",
             map_points: int = 2000, per_cluster: int = 10, max_clusters: int = 20,
             out_dir: str | Path | None = None, device: str = "auto", progress: bool = True,
             overrides: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Write the pictures of a run or cluster run; returns the PNGs and notes (what was not
    drawn, and why)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such run folder")
    for name, value in (("--queries", queries), ("--k", k), ("--map-points", map_points),
                        ("--per-cluster", per_cluster), ("--clusters", max_clusters)):
        if value < 1:
            raise ConfigError(f"pictures {name} must be >= 1, got {value}")
        if value > MAX_GRID.get(name, value):
            raise ConfigError(f"pictures {name} must be <= {MAX_GRID[name]} (a wider grid "
                              f"cannot be read), got {value}")
    if map not in MAPS:
        raise ConfigError(f"unknown map {map!r}; known: {', '.join(MAPS)}")
    if map != "none" and map_points < MIN_MAP_POINTS:
        raise ConfigError(f"pictures --map-points must be >= {MIN_MAP_POINTS} (a 2-D map of "
                          f"fewer images shows nothing; or --map none), got {map_points}")
    check_device(device)
    if pyplot() is None:
        raise ConfigError("pictures need matplotlib: pip install 'selfsup[plot]'")
    out = check_out(Path(out_dir) if out_dir is not None else RunFolder(path).plots,
                    "the pictures")  # before any feature is computed; creates nothing
    common = dict(method=map, points=map_points, device=device, progress=progress,
                  overrides=overrides)
    if (path / "cluster.json").is_file():
        return cluster_pictures(path, out, per_cluster=per_cluster, max_clusters=max_clusters,
                                **common)
    return run_pictures(path, out, queries=queries, k=k, **common)

