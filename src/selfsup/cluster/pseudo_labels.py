"""The cluster stage: teacher features -> k-means -> a pseudo-label for every image.

Noroozi et al., CVPR 2018, §3: "we cluster the features with k-means ... and
assign to each image the label of its closest cluster centre"; the images
labelled may be those clustered or another data set ("clusters computed on
one data set can label another", §5). A cluster run folder holds
``config.yaml`` (the labelled data set, for the transfer stage),
``cluster.json`` (teacher, layer, k, k-means settings and statistics),
``centroids.pt``, ``pseudo_labels.pt`` and ``plots/cluster_sizes.png``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from selfsup import __version__
from selfsup.cluster.kmeans import kmeans_fit, nearest_centroids
from selfsup.cluster.teacher import layer_features, load_teacher
from selfsup.config import Config, DataConfig, save_config
from selfsup.errors import ConfigError, DataError
from selfsup.experiment import check_device, load_split, resolve_device
from selfsup.outputs import check_out, make_folder, write_error
from selfsup.runs import RunFolder
from selfsup.train.checkpoint import atomic_save, atomic_write_text


def cluster_statistics(assign: Tensor, k: int, labels: Tensor | None) -> dict:
    """Cluster sizes, and with true labels the purity and NMI of the pseudo-labels."""
    sizes = torch.bincount(assign, minlength=k)
    stats = {"sizes_min": int(sizes.min()), "sizes_max": int(sizes.max()),
             "sizes_median": float(sizes.float().median()),
             "empty_clusters": int((sizes == 0).sum())}
    if labels is not None:
        c = int(labels.max()) + 1
        table = torch.bincount(assign * c + labels, minlength=k * c).view(k, c).double()  # k x c
        n = table.sum()
        stats["purity"] = float(table.max(1).values.sum() / n)
        p = table / n
        pa, pl = p.sum(1, keepdim=True), p.sum(0, keepdim=True)  # k x 1, 1 x c
        nz = p > 0
        mi = (p[nz] * (p[nz] / (pa @ pl)[nz]).log()).sum()
        ent = [-(q[q > 0] * q[q > 0].log()).sum() for q in (pa, pl)]
        stats["nmi"] = float(2 * mi / (ent[0] + ent[1])) if ent[0] + ent[1] > 0 else 0.0
    return stats


def _data_config(teacher_cfg: Config | None, dataset: str | None, root: str | None) -> Config:
    """The config of a data set to cluster or label: the teacher's own (whole train split,
    no ``data.limit``) unless another ``dataset`` is named."""
    if dataset is None and teacher_cfg is None:
        raise ConfigError("an export folder as teacher needs --data (the set to cluster)")
    base = teacher_cfg or Config()
    if dataset is None or (dataset == base.data.dataset and root is None):
        return replace(base, data=replace(base.data, limit=None))
    return replace(base, data=DataConfig(dataset=dataset, root=root))


def default_name(teacher_path: str | Path, dataset: str, k: int, layer: str | None,
                 spherical: bool, seed: int) -> str:
    """``cluster-<teacher>-<data>-k<k>[-<layer>][-sph]-s<seed>``: each setting that changes
    the pseudo-labels is in the name, so two clusterings of one run never collide."""
    return (f"cluster-{Path(teacher_path).name}-{dataset}-k{k}{f'-{layer}' if layer else ''}"
            f"{'-sph' if spherical else ''}-s{seed}")


def _check_out(out: Path) -> None:
    check_out(out, "the cluster run")  # below a file, read-only: refused, nothing created
    if out.is_dir() and any(out.iterdir()):
        what = "a cluster run" if (out / "cluster.json").is_file() else "files"
        raise ConfigError(f"{out}: already holds {what}; pass another --out or remove it")


def _images(cfg: Config):
    return load_split(cfg, cfg.data.train_split)


def cluster(teacher_path: str | Path, k: int, *, layer: str | None = None,
            data: str | None = None, data_root: str | None = None,
            cluster_data: str | None = None, cluster_root: str | None = None,
            spherical: bool = False, iters: int = 50, n_init: int = 1, seed: int = 0,
            out_dir: str | Path | None = None, device: str = "auto",
            progress: bool = True, overrides: list[str] | None = None) -> Path:
    """Cluster the teacher's features and pseudo-label a data set; returns the run folder.

    The centroids come from the train split of ``cluster_data`` (default: the
    teacher's own data set); the pseudo-labels are for the train split of
    ``data`` (default: the clustered set itself), by nearest centroid.
    """
    for name, value in (("--iters", iters), ("--n-init", n_init)):  # before any features
        if value < 1:
            raise ConfigError(f"cluster {name} must be >= 1, got {value}")
    check_device(device)
    teacher = load_teacher(teacher_path, overrides)
    label_cfg = _data_config(teacher.cfg, data, data_root)
    # the clustered set: --cluster-data, else the teacher's own, else (an export) the labelled one
    fit_cfg = (label_cfg if teacher.cfg is None and cluster_data is None
               else _data_config(teacher.cfg, cluster_data, cluster_root))
    out = Path(out_dir) if out_dir else Path(teacher_path).parent / default_name(
        teacher_path, label_cfg.data.dataset, k, layer, spherical, seed)
    _check_out(out)  # before the data and the features (minutes on a large set)
    fit_set = _images(fit_cfg)
    if not 2 <= k <= len(fit_set):
        raise ConfigError(f"k must be in [2, {len(fit_set)}] (the number of images clustered), "
                          f"got {k}")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    feats = layer_features(teacher, fit_set.images, layer, device=dev, progress=progress)
    t_feat = time.perf_counter() - t0
    res = kmeans_fit(feats, k, iters=iters, spherical=spherical, seed=seed, n_init=n_init)
    t_km = time.perf_counter() - t0 - t_feat
    same = fit_cfg.data == label_cfg.data
    label_set = fit_set if same else _images(label_cfg)
    if same:
        assign = res.assign.cpu()
    else:
        lf = layer_features(teacher, label_set.images, layer, device=dev, progress=progress)
        assign = nearest_centroids(lf, res.centroids, spherical).cpu()
    _check_out(out)  # again: another process may have written it meanwhile
    make_folder(out, "the cluster run")
    info = {
        "stage": "cluster", "selfsup_version": __version__, "teacher": str(teacher_path),
        "layer": layer or "output", "feature_dim": feats.shape[1], "k": k, "spherical": spherical,
        "iters": iters, "n_init": n_init, "seed": seed,
        "clustered": {"dataset": fit_cfg.data.dataset, "split": fit_cfg.data.train_split,
                      "images": len(fit_set)},
        "labelled": {"dataset": label_cfg.data.dataset, "split": label_cfg.data.train_split,
                     "images": len(label_set)},
        "inertia": float(res.inertia), "features_s": round(t_feat, 2),
        "kmeans_s": round(t_km, 2),
        "clustered_stats": cluster_statistics(res.assign.cpu(), k, fit_set.labels),
        "labelled_stats": cluster_statistics(assign, k, label_set.labels),
    }
    try:
        save_config(label_cfg, RunFolder(out).config)
    except OSError as e:  # the disk filled up, or the folder turned read-only
        raise write_error(RunFolder(out).config, "the cluster run", e) from None
    atomic_save({"centroids": res.centroids.cpu(), "spherical": spherical,
                 "layer": layer or "output"}, out / "centroids.pt")
    atomic_save({"labels": assign, "dataset": label_cfg.data.dataset,
                 "split": label_cfg.data.train_split, "num_images": len(label_set)},
                out / "pseudo_labels.pt")
    atomic_write_text(out / "cluster.json", json.dumps(info, indent=2))
    try:
        _plot_sizes(out, assign, k)
    except OSError as e:  # the run is complete without its picture: one line all the same
        raise write_error(RunFolder(out).plots, "the cluster sizes plot", e) from None
    return out


def load_pseudo_labels(run_dir: str | Path, num_images: int) -> tuple[Tensor, dict]:
    """The pseudo-labels (N,) and ``cluster.json`` of a cluster run; checks N."""
    run_dir = Path(run_dir)
    path = run_dir / "cluster.json"
    if not path.is_file():
        raise DataError(f"{run_dir}: not a cluster run (no cluster.json); run `selfsup cluster`")
    info = json.loads(path.read_text())
    labels = load_plain(run_dir / "pseudo_labels.pt")["labels"]
    if labels.dim() != 1 or len(labels) != num_images:
        raise DataError(f"{run_dir}/pseudo_labels.pt: {len(labels)} pseudo-labels for a data set "
                        f"of {num_images} images")
    if labels.min() < 0 or labels.max() >= info["k"]:
        raise DataError(f"{run_dir}/pseudo_labels.pt: labels outside [0, {info['k']})")
    return labels, info


def load_plain(path: Path) -> dict:
    """A file of plain tensors written by this stage (weights_only: no code is run)."""
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise DataError(f"{path}: unreadable ({type(e).__name__})") from None
    if not isinstance(data, dict) or "labels" not in data and "centroids" not in data:
        raise DataError(f"{path}: not a selfsup cluster file")
    return data


def _plot_sizes(out: Path, assign: Tensor, k: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    sizes = torch.bincount(assign, minlength=k).sort(descending=True).values
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(range(k), sizes.tolist(), width=1.0)
    ax.set(xlabel="cluster (by size)", ylabel="images", title=f"cluster sizes, k={k}")
    RunFolder(out).plots.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(RunFolder(out).plots / "cluster_sizes.png", dpi=80)
    plt.close(fig)
