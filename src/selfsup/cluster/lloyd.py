"""Lloyd's iterations of k-means (Lloyd, IEEE Trans. Inf. Theory 1982), chunked and sharded.

Assign every point to its nearest centroid, move every centroid to the mean
of its points; neither step can raise the inertia Σ ||x - c||² (spherical
k-means, Dhillon & Modha 2001: Σ (1 - cos)). The assignment walks over row
chunks, so the N x k distance matrix never exists; cluster sums, counts and
inertia are all-reduced over the ranks. An empty cluster takes over a point
far from its centroid (as scikit-learn does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.cluster._shards import all_reduce, gather_var
from selfsup.distributed import world_size

_FIX_ROUNDS = 32  # extra update steps allowed after ``iters`` to refill empty clusters


@dataclass
class KMeansResult:
    """What :func:`kmeans_fit` found; ``assign`` covers this rank's points only."""

    centroids: Tensor  # k x d, x's dtype and device; unit rows when spherical
    assign: Tensor  # N, int64 cluster id of each point; every cluster is non-empty
    inertia: float  # Σ ||x - c||² or Σ (1 - cos), over all ranks
    inertia_history: list[float]  # after each assignment step (n_iter + 1 values)
    n_iter: int  # centroid updates run


def assign_nearest(x: Tensor, c: Tensor, spherical: bool, chunk: int) -> tuple[Tensor, Tensor]:
    """Nearest centroid of every point and the distance to it (||x - c||² or 1 - cos)."""
    assign = torch.empty(x.shape[0], dtype=torch.long, device=x.device)  # N
    d_min = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)  # N
    c_sq = (c * c).sum(1)  # k
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk]  # B x d
        if spherical:
            sim, assign[s : s + chunk] = (xc @ c.T).max(1)  # B
            d_min[s : s + chunk] = (1 - sim).clamp_(min=0)
        else:  # ||x||² is the same for every centroid: add it after the argmin
            part, assign[s : s + chunk] = torch.addmm(c_sq, xc, c.T, alpha=-2).min(1)  # B
            d_min[s : s + chunk] = (part + (xc * xc).sum(1)).clamp_(min=0)
    return assign, d_min


def _farthest(x: Tensor, d_min: Tensor, assign: Tensor, counts: Tensor,
              m: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``m`` points farthest from their centroid, over all ranks, among clusters of >= 2.

    Returns their distances (m,), coordinates (m x d) and old clusters (m,),
    the same on every rank. Points alone in their cluster are passed over, so
    moving one out never empties another cluster.
    """
    score = torch.where(counts[assign] >= 2, d_min, torch.full_like(d_min, -1.0))  # N
    top, i = score.topk(min(m, score.shape[0]))  # m' <= m, fewer on a small shard: pad
    vals = F.pad(top, (0, m - top.shape[0]), value=-math.inf)  # m
    pts, old = F.pad(x[i], (0, 0, 0, m - top.shape[0])), F.pad(assign[i], (0, m - top.shape[0]))
    if world_size() > 1:
        vals, pts = torch.cat(gather_var(vals)), torch.cat(gather_var(pts))
        old = torch.cat(gather_var(old))
        vals, i = vals.topk(m)
        pts, old = pts[i], old[i]
    return vals, pts, old


def _update(x: Tensor, c: Tensor, assign: Tensor, d_min: Tensor, counts: Tensor,
            n_empty: int, spherical: bool, chunk: int) -> Tensor:
    """Each centroid moves to its cluster's mean (spherical: mean direction).

    An empty cluster takes over one of the points farthest from its centroid,
    which leaves its old cluster (as in scikit-learn): that point's cost drops
    to 0 and nothing else rises, so the inertia still cannot increase.
    """
    k, d = c.shape
    sums = torch.zeros(k, d, dtype=torch.float64, device=x.device)  # float64 over many chunks
    for s in range(0, x.shape[0], chunk):
        sums += x.new_zeros(k, d).index_add_(0, assign[s : s + chunk], x[s : s + chunk])
    all_reduce(sums)
    counts = counts.clone()
    if n_empty:
        vals, pts, old = _farthest(x, d_min, assign, counts, n_empty)
        if not vals[0] > 0:  # every point already sits on a centroid of a non-empty cluster
            raise ValueError(f"x has fewer than k={k} distinct points; clusters would stay empty")
        ok = vals > 0
        target = (counts == 0).nonzero()[:, 0][ok]  # empty clusters that get a point
        sums.index_add_(0, old[ok], -pts[ok].double())
        counts.index_add_(0, old[ok], -torch.ones_like(old[ok]))
        sums[target], counts[target] = pts[ok].double(), 1
    new = sums / counts.clamp(min=1)[:, None].double()  # k x d
    new = torch.where((counts == 0)[:, None], c.double(), new)  # still empty: stay put
    return (F.normalize(new, dim=1) if spherical else new).to(x.dtype)


def _stats(assign: Tensor, d_min: Tensor, k: int) -> tuple[Tensor, float, int]:
    """Cluster sizes (k,), inertia and number of empty clusters, over all ranks."""
    counts = all_reduce(torch.bincount(assign, minlength=k))  # k
    inertia = all_reduce(d_min.double().sum())
    pair = torch.stack([inertia, (counts == 0).sum().double()]).tolist()  # one host sync
    return counts, pair[0], int(pair[1])


def lloyd(x: Tensor, c: Tensor, iters: int, spherical: bool, tol: float,
           chunk: int) -> KMeansResult:
    """``iters`` Lloyd steps from ``c`` (fewer once the inertia improves by < tol relative),
    then more while a cluster is empty; ``iters=0`` only assigns and refills."""
    assign, d_min = assign_nearest(x, c, spherical, chunk)
    counts, inertia, n_empty = _stats(assign, d_min, c.shape[0])
    history, n_iter = [inertia], 0
    while True:
        converged = tol > 0 and len(history) > 1 and history[-2] - history[-1] <= tol * history[-2]
        if (n_iter >= iters or converged) and n_empty == 0:
            break
        if n_iter >= iters + _FIX_ROUNDS:
            raise RuntimeError(f"k-means left {n_empty} clusters empty after {n_iter} updates")
        c = _update(x, c, assign, d_min, counts, n_empty, spherical, chunk)
        assign, d_min = assign_nearest(x, c, spherical, chunk)
        counts, inertia, n_empty = _stats(assign, d_min, c.shape[0])
        history.append(inertia)
        n_iter += 1
    return KMeansResult(c, assign, inertia, history, n_iter)


def faiss_lloyd(x: Tensor, c: Tensor, iters: int, spherical: bool, seed: int,
                 chunk: int) -> KMeansResult:
    """faiss's Lloyd steps from our seeds (it stops early once its objective stops
    changing); the final assignment and any refill of empty clusters run in torch."""
    import faiss  # optional: selfsup[faiss]; _check has made sure it is there

    n, d = x.shape
    km = faiss.Kmeans(d, c.shape[0], niter=iters, spherical=spherical, seed=seed,
                      max_points_per_centroid=n, min_points_per_centroid=1)  # no subsampling
    km.train(x.float().cpu().numpy(), init_centroids=c.float().cpu().numpy())
    obj = [n - float(o) if spherical else float(o) for o in km.obj]  # spherical obj is Σ cos
    res = lloyd(x, torch.from_numpy(km.centroids).to(x.device, x.dtype), 0, spherical, 0.0, chunk)
    res.inertia_history, res.n_iter = obj + res.inertia_history, len(obj) + res.n_iter
    return res


def default_chunk(k: int, device: torch.device) -> int:
    # about 16 MB of distances per chunk stays in a CPU's cache; a GPU wants big blocks
    return max(256, (2**22 if device.type == "cpu" else 2**26) // k)
