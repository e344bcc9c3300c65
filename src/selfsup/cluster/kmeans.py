"""k-means for pseudo-labels: Lloyd's algorithm, chunked, seeded, sharded under torchrun.

Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 1982:
assign every point to its nearest centroid, move every centroid to the mean of
its points; neither step can raise the inertia Σ ||x - c||². Seeding is
k-means++ (Arthur & Vassilvitskii, SODA 2007: "choose ... x with probability
D(x)² / Σ D(x)²") in its greedy form, which draws 2 + ⌊ln k⌋ candidates per
step and keeps the one that lowers the potential most, as scikit-learn does.
Spherical k-means (Dhillon & Modha, Machine Learning 2001) keeps points and
centroids on the unit sphere and assigns by the largest cosine; its inertia
is Σ (1 - cos).

Built for millions of points: the assignment walks over row chunks, so the
N x k distance matrix never exists; k-means++ runs on a uniform sample of at
most ``init_sample`` points, because it makes k sequential passes over its
pool. Under ``torchrun`` each rank passes its own shard: the seeding pool is
gathered, the seeds are broadcast from rank 0, and cluster sums, counts and
inertia are all-reduced, so every rank holds the same centroids as one
process would on the concatenated data.

This module is the API (checks, restarts, the public functions); the seeding
is :mod:`selfsup.cluster.seeding`, the iterations :mod:`selfsup.cluster.lloyd`,
the collectives :mod:`selfsup.cluster._shards`.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.cluster._shards import gather_var
from selfsup.cluster.lloyd import (
    KMeansResult,
    assign_nearest,
    default_chunk,
    faiss_lloyd,
    lloyd,
)
from selfsup.cluster.seeding import INITS, init_centroids
from selfsup.distributed import world_size

BACKENDS = ("torch", "faiss")
__all__ = ["BACKENDS", "INITS", "KMeansResult", "kmeans", "kmeans_fit", "nearest_centroids"]


def _check(x: Tensor, k: int, iters: int, init: str | Tensor, n_init: int, tol: float,
           chunk_size: int | None, backend: str) -> list[int]:
    """Validate the arguments; return every rank's number of points (one collective)."""
    if x.ndim != 2:
        raise ValueError(f"kmeans expects x of shape (N, d), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"kmeans expects a float tensor x, got dtype {x.dtype}")
    chunk = 1 if chunk_size is None else chunk_size
    for name, value, low in (("k", k, 2), ("iters", iters, 1), ("n_init", n_init, 1),
                             ("chunk_size", chunk, 1), ("tol", tol, 0)):
        if not value >= low:
            raise ValueError(f"{name} must be >= {low}, got {name}={value}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faiss" and importlib.util.find_spec("faiss") is None:
        raise ImportError("backend='faiss' needs faiss: pip install 'selfsup[faiss]'")
    if backend == "faiss" and world_size() > 1:
        raise ValueError("backend='faiss' runs on one process; use backend='torch' under DDP")
    if isinstance(init, Tensor):
        if init.shape != (k, x.shape[1]):
            raise ValueError(f"init centroids must be ({k}, {x.shape[1]}), "
                             f"got {tuple(init.shape)}")
    elif init not in INITS:
        raise ValueError(f"init must be one of {INITS} or a (k, d) tensor, got {init!r}")
    stats = torch.stack([torch.tensor(x.shape[0], device=x.device), (~torch.isfinite(x)).sum()])
    per_rank = [stats] if world_size() == 1 else gather_var(stats)  # per rank: N, non-finite
    sizes = [int(s[0]) for s in per_rank]
    bad = sum(int(s[1]) for s in per_rank)
    if bad:
        raise ValueError(f"x has {bad} non-finite values (NaN or inf)")
    if k > sum(sizes):
        raise ValueError(f"k={k} exceeds the number of points N={sum(sizes)}")
    return sizes


@torch.no_grad()
def kmeans_fit(x: Tensor, k: int, iters: int = 50, spherical: bool = False, seed: int = 0, *,
               init: str | Tensor = "k-means++", n_init: int = 1, tol: float = 1e-4,
               chunk_size: int | None = None, init_sample: int | None = None,
               backend: str = "torch") -> KMeansResult:
    """Cluster the rows of ``x`` (N, d) into ``k`` groups; see the module docstring.

    - ``init``: "k-means++", "random" or a (k, d) tensor of starting centroids;
      ``n_init`` restarts keep the lowest inertia.
    - ``tol``: stop once an update lowers the inertia by less than ``tol`` of
      itself; 0 runs all ``iters`` (faiss stops when its objective is constant).
    - ``chunk_size``: rows per assignment chunk; default 2**22 / k on the CPU
      (16 MB of float32 distances, cache-sized), 2**26 / k on a GPU (256 MB).
    - ``init_sample``: size of the seeding pool, default max(32 k, 8192).
    - ``backend="faiss"``: faiss runs the Lloyd steps, on the CPU, one process.

    Points are processed in float32 (float64 stays float64) on x's device.
    The same ``seed`` gives the same result; CPU and CUDA draw the same numbers.
    """
    sizes = _check(x, k, iters, init, n_init, tol, chunk_size, backend)
    work = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if spherical:
        work = F.normalize(work, dim=1)
    chunk = chunk_size or default_chunk(k, x.device)
    gen = torch.Generator().manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(1 if isinstance(init, Tensor) else n_init):
        c = init_centroids(work, k, init, sizes, init_sample or max(32 * k, 8192), spherical, gen)
        if backend == "faiss":
            res = faiss_lloyd(work, c, iters, spherical, seed, chunk)
        else:
            res = lloyd(work, c, iters, spherical, tol, chunk)
        if best is None or res.inertia < best.inertia:
            best = res
    assert best is not None
    best.centroids = best.centroids.to(x.dtype)
    return best


@torch.no_grad()
def nearest_centroids(x: Tensor, centroids: Tensor, spherical: bool = False,
                      chunk_size: int | None = None) -> Tensor:
    """Cluster id (N,) of every row of ``x`` by its nearest centroid, chunked as in the fit
    (points of another data set labelled with centroids fitted elsewhere)."""
    x, c = x.float(), centroids.to(x.device).float()
    if spherical:
        x, c = F.normalize(x, dim=1), F.normalize(c, dim=1)
    return assign_nearest(x, c, spherical, chunk_size or default_chunk(len(c), x.device))[0]


def kmeans(x: Tensor, k: int, iters: int = 50, spherical: bool = False, seed: int = 0, *,
           init: str | Tensor = "k-means++", n_init: int = 1, tol: float = 1e-4,
           chunk_size: int | None = None, init_sample: int | None = None,
           backend: str = "torch") -> tuple[Tensor, Tensor]:
    """Centroids (k, d) and the cluster id (N,) of every row of ``x``; see :func:`kmeans_fit`."""
    res = kmeans_fit(x, k, iters, spherical, seed, init=init, n_init=n_init, tol=tol,
                     chunk_size=chunk_size, init_sample=init_sample, backend=backend)
    return res.centroids, res.assign
