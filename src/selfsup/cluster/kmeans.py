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
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import rank, world_size

INITS = ("k-means++", "random")
BACKENDS = ("torch", "faiss")
_FIX_ROUNDS = 32  # extra update steps allowed after ``iters`` to refill empty clusters


@dataclass
class KMeansResult:
    """What :func:`kmeans_fit` found; ``assign`` covers this rank's points only."""

    centroids: Tensor  # k x d, x's dtype and device; unit rows when spherical
    assign: Tensor  # N, int64 cluster id of each point; every cluster is non-empty
    inertia: float  # Σ ||x - c||² or Σ (1 - cos), over all ranks
    inertia_history: list[float]  # after each assignment step (n_iter + 1 values)
    n_iter: int  # centroid updates run


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
    per_rank = [stats] if world_size() == 1 else _gather_var(stats)  # per rank: N, non-finite
    sizes = [int(s[0]) for s in per_rank]
    bad = sum(int(s[1]) for s in per_rank)
    if bad:
        raise ValueError(f"x has {bad} non-finite values (NaN or inf)")
    if k > sum(sizes):
        raise ValueError(f"k={k} exceeds the number of points N={sum(sizes)}")
    return sizes


def _gather_var(t: Tensor, counts: list[int] | None = None) -> list[Tensor]:
    """``all_gather`` of rows whose number differs by rank (``counts``; equal if None)."""
    counts = counts or [t.shape[0]] * world_size()
    padded = t.new_zeros(max(counts), *t.shape[1:])  # all_gather wants equal shapes
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(out, padded)
    return [o[:c] for o, c in zip(out, counts)]


def _all_reduce(t: Tensor) -> Tensor:
    if world_size() > 1:
        dist.all_reduce(t)
    return t


def _pool(x: Tensor, sizes: list[int], m: int, gen: torch.Generator) -> Tensor:
    """A uniform sample of at most ``m`` points of the whole data set, the same on every rank."""
    n = sum(sizes)
    idx = torch.arange(n) if n <= m else torch.randperm(n, generator=gen)[:m].sort().values
    starts = [sum(sizes[:r]) for r in range(len(sizes))]
    mine = [(idx >= s) & (idx < s + c) for s, c in zip(starts, sizes)]
    rows = x[(idx[mine[rank()]] - starts[rank()]).to(x.device)]  # rows of this shard, in order
    if world_size() == 1:
        return rows
    return torch.cat(_gather_var(rows, [int(b.sum()) for b in mine]))  # M x d, global order


def _kmeans_pp(pool: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Greedy k-means++ on ``pool`` (M x d); uniform draws come from the CPU ``gen``."""
    m, trials = pool.shape[0], 2 + int(math.log(k))
    p_sq = (pool * pool).sum(1)  # M
    chosen = torch.zeros(k, dtype=torch.long, device=pool.device)  # k: rows of the pool
    chosen[0] = int(torch.randint(m, (1,), generator=gen))
    closest = ((pool - pool[chosen[0]]) ** 2).sum(1)  # M: D(x)², to the nearest seed
    for i in range(1, k):
        cum = closest.cumsum(0, dtype=torch.float64)  # M
        u = torch.rand(trials, generator=gen, dtype=torch.float64).to(pool.device)  # L
        cand = torch.searchsorted(cum, u * cum[-1], right=True).clamp_(max=m - 1)  # L
        # ||p - c||² = ||p||² - 2 p·c + ||c||², one matrix product for all candidates
        d_cand = torch.addmm(p_sq[cand, None] + p_sq, pool[cand], pool.T, alpha=-2)  # L x M
        d_cand = torch.minimum(closest, d_cand.clamp_(min=0), out=d_cand)  # L x M
        best = d_cand.sum(1, dtype=torch.float64).argmin()  # leaves the smallest potential
        chosen[i], closest = cand[best], d_cand[best]
    return pool[chosen]


def _init(x: Tensor, k: int, init: str | Tensor, sizes: list[int], init_sample: int,
          spherical: bool, gen: torch.Generator) -> Tensor:
    """Starting centroids (k x d), identical on every rank."""
    if isinstance(init, Tensor):
        c = init.detach().to(x.device, x.dtype, copy=True)
        c = F.normalize(c, dim=1) if spherical else c
    elif init == "random":
        pool = _pool(x, sizes, max(init_sample, k), gen)  # M x d
        c = pool[torch.randperm(pool.shape[0], generator=gen)[:k].to(x.device)]
    else:
        c = _kmeans_pp(_pool(x, sizes, max(init_sample, k), gen), k, gen)
    if world_size() > 1:  # the same draws on the same pool already agree; make it exact
        dist.broadcast(c, src=0)
    return c


def _assign(x: Tensor, c: Tensor, spherical: bool, chunk: int) -> tuple[Tensor, Tensor]:
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
        vals, pts = torch.cat(_gather_var(vals)), torch.cat(_gather_var(pts))
        old = torch.cat(_gather_var(old))
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
    _all_reduce(sums)
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
    counts = _all_reduce(torch.bincount(assign, minlength=k))  # k
    inertia = _all_reduce(d_min.double().sum())
    pair = torch.stack([inertia, (counts == 0).sum().double()]).tolist()  # one host sync
    return counts, pair[0], int(pair[1])


def _lloyd(x: Tensor, c: Tensor, iters: int, spherical: bool, tol: float,
           chunk: int) -> KMeansResult:
    """``iters`` Lloyd steps from ``c`` (fewer once the inertia improves by < tol relative),
    then more while a cluster is empty; ``iters=0`` only assigns and refills."""
    assign, d_min = _assign(x, c, spherical, chunk)
    counts, inertia, n_empty = _stats(assign, d_min, c.shape[0])
    history, n_iter = [inertia], 0
    while True:
        converged = tol > 0 and len(history) > 1 and history[-2] - history[-1] <= tol * history[-2]
        if (n_iter >= iters or converged) and n_empty == 0:
            break
        if n_iter >= iters + _FIX_ROUNDS:
            raise RuntimeError(f"k-means left {n_empty} clusters empty after {n_iter} updates")
        c = _update(x, c, assign, d_min, counts, n_empty, spherical, chunk)
        assign, d_min = _assign(x, c, spherical, chunk)
        counts, inertia, n_empty = _stats(assign, d_min, c.shape[0])
        history.append(inertia)
        n_iter += 1
    return KMeansResult(c, assign, inertia, history, n_iter)


def _faiss_lloyd(x: Tensor, c: Tensor, iters: int, spherical: bool, seed: int,
                 chunk: int) -> KMeansResult:
    """faiss's Lloyd steps from our seeds (it stops early once its objective stops
    changing); the final assignment and any refill of empty clusters run in torch."""
    import faiss  # optional: selfsup[faiss]; _check has made sure it is there

    n, d = x.shape
    km = faiss.Kmeans(d, c.shape[0], niter=iters, spherical=spherical, seed=seed,
                      max_points_per_centroid=n, min_points_per_centroid=1)  # no subsampling
    km.train(x.float().cpu().numpy(), init_centroids=c.float().cpu().numpy())
    obj = [n - float(o) if spherical else float(o) for o in km.obj]  # spherical obj is Σ cos
    res = _lloyd(x, torch.from_numpy(km.centroids).to(x.device, x.dtype), 0, spherical, 0.0, chunk)
    res.inertia_history, res.n_iter = obj + res.inertia_history, len(obj) + res.n_iter
    return res


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
    chunk = chunk_size or _default_chunk(k, x.device)
    gen = torch.Generator().manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(1 if isinstance(init, Tensor) else n_init):
        c = _init(work, k, init, sizes, init_sample or max(32 * k, 8192), spherical, gen)
        if backend == "faiss":
            res = _faiss_lloyd(work, c, iters, spherical, seed, chunk)
        else:
            res = _lloyd(work, c, iters, spherical, tol, chunk)
        if best is None or res.inertia < best.inertia:
            best = res
    assert best is not None
    best.centroids = best.centroids.to(x.dtype)
    return best


def _default_chunk(k: int, device: torch.device) -> int:
    # about 16 MB of distances per chunk stays in a CPU's cache; a GPU wants big blocks
    return max(256, (2**22 if device.type == "cpu" else 2**26) // k)


@torch.no_grad()
def nearest_centroids(x: Tensor, centroids: Tensor, spherical: bool = False,
                      chunk_size: int | None = None) -> Tensor:
    """Cluster id (N,) of every row of ``x`` by its nearest centroid, chunked as in the fit
    (points of another data set labelled with centroids fitted elsewhere)."""
    x, c = x.float(), centroids.to(x.device).float()
    if spherical:
        x, c = F.normalize(x, dim=1), F.normalize(c, dim=1)
    return _assign(x, c, spherical, chunk_size or _default_chunk(len(c), x.device))[0]


def kmeans(x: Tensor, k: int, iters: int = 50, spherical: bool = False, seed: int = 0, *,
           init: str | Tensor = "k-means++", n_init: int = 1, tol: float = 1e-4,
           chunk_size: int | None = None, init_sample: int | None = None,
           backend: str = "torch") -> tuple[Tensor, Tensor]:
    """Centroids (k, d) and the cluster id (N,) of every row of ``x``; see :func:`kmeans_fit`."""
    res = kmeans_fit(x, k, iters, spherical, seed, init=init, n_init=n_init, tol=tol,
                     chunk_size=chunk_size, init_sample=init_sample, backend=backend)
    return res.centroids, res.assign
