"""Starting centroids of k-means: k-means++ or uniform draws, from a pool the same on every rank.

Arthur & Vassilvitskii, SODA 2007: "choose ... x with probability D(x)² /
Σ D(x)²", here in its greedy form, which draws 2 + ⌊ln k⌋ candidates per
step and keeps the one that lowers the potential most, as scikit-learn does.
k-means++ makes k sequential passes over its pool, so the pool is a uniform
sample of at most ``init_sample`` points; under ``torchrun`` it is gathered
from every rank's shard and the seeds are broadcast from rank 0.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from selfsup.cluster._shards import gather_var
from selfsup.distributed import rank, world_size

INITS = ("k-means++", "random")


def _pool(x: Tensor, sizes: list[int], m: int, gen: torch.Generator) -> Tensor:
    """A uniform sample of at most ``m`` points of the whole data set, the same on every rank."""
    n = sum(sizes)
    idx = torch.arange(n) if n <= m else torch.randperm(n, generator=gen)[:m].sort().values
    starts = [sum(sizes[:r]) for r in range(len(sizes))]
    mine = [(idx >= s) & (idx < s + c) for s, c in zip(starts, sizes)]
    rows = x[(idx[mine[rank()]] - starts[rank()]).to(x.device)]  # rows of this shard, in order
    if world_size() == 1:
        return rows
    return torch.cat(gather_var(rows, [int(b.sum()) for b in mine]))  # M x d, global order


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


def init_centroids(x: Tensor, k: int, init: str | Tensor, sizes: list[int], init_sample: int,
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
