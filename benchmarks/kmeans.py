"""k-means on Gaussian-mixture data: selfsup against scikit-learn (and faiss when importable).

Data: N points in d = 128 around 1000 centres drawn from N(0, I), unit
isotropic noise; k = 1000, N = 100k and 1M, float32. Both libraries run the
same fixed number of Lloyd iterations (``--iters``, default 5, chosen so the
CPU run fits in about 10 minutes on 2 cores) with n_init=1 and tol=0, so
neither stops early (scikit-learn still would on exactly unchanged labels;
``n_iter`` says whether it did). Two timings per system:

- ``run_s``: one complete fit with the library's own k-means++ seeding
  (greedy, 2 + ln k candidates per step, in both; scikit-learn seeds on all N
  points, selfsup on a uniform sample of 32 k points) and its final inertia;
- ``lloyd_s``: the same number of iterations from identical starting
  centroids (k rows of the data drawn with a fixed seed), so ``s_per_iter`` =
  lloyd_s / iters is the cost of one assignment + update step (plus a share
  of the closing assignment that every library makes) and ``lloyd_inertia``
  is directly comparable across systems.

``sklearn_over_*`` is scikit-learn's time divided by the row's (> 1: the row
is faster). faiss runs as selfsup's ``backend="faiss"`` (selfsup's seeds,
faiss's Lloyd steps, always on the CPU). ``--threads`` caps every library's
CPU threads (torch, OpenMP/BLAS via threadpoolctl, faiss); the default, 1,
gives a per-core comparison, because on a machine whose cores other jobs
share, a multi-threaded library waits on descheduled threads (scikit-learn's
k-means++ on 20k points took 4.5 s on one thread and 36 s on two there).

    python benchmarks/kmeans.py [--device cuda] [--iters 5] [--threads 1]
                                [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

from selfsup.cluster import kmeans_fit  # noqa: E402

K, DIM = 1000, 128


def mixture(n: int, seed: int = 0) -> torch.Tensor:
    """n x DIM points: a uniformly chosen one of K centres N(0, I) plus N(0, I) noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, DIM, generator=g)  # K x d
    return centres[torch.randint(K, (n,), generator=g)] + torch.randn(n, DIM, generator=g)


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def run_selfsup(x: torch.Tensor, start: torch.Tensor, iters: int, backend: str,
                device: torch.device) -> dict:
    xd = x.to(device)
    full, run_s = timed(lambda: kmeans_fit(xd, K, iters, seed=0, tol=0.0, backend=backend),
                        device)
    fixed, lloyd_s = timed(lambda: kmeans_fit(xd, K, iters, init=start.to(device), tol=0.0,
                                              backend=backend), device)
    return {"run_s": run_s, "inertia": full.inertia, "n_iter": full.n_iter, "lloyd_s": lloyd_s,
            "lloyd_inertia": fixed.inertia}


def run_sklearn(x: torch.Tensor, start: torch.Tensor, iters: int) -> dict:
    xn, cpu = x.numpy(), torch.device("cpu")
    full, run_s = timed(lambda: KMeans(K, init="k-means++", n_init=1, max_iter=iters, tol=0.0,
                                       random_state=0).fit(xn), cpu)
    fixed, lloyd_s = timed(lambda: KMeans(K, init=start.numpy(), n_init=1, max_iter=iters,
                                          tol=0.0).fit(xn), cpu)
    return {"run_s": run_s, "inertia": float(full.inertia_), "n_iter": int(full.n_iter_),
            "lloyd_s": lloyd_s, "lloyd_inertia": float(fixed.inertia_)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = p.parse_args()
    device = torch.device(args.device)
    has_faiss = importlib.util.find_spec("faiss") is not None
    if has_faiss:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    else:
        print("faiss is not importable (pip install 'selfsup[faiss]'): skipping it")
    torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads)  # scikit-learn's OpenMP and BLAS
    load_before = os.getloadavg()[0]
    systems = ["selfsup", "scikit-learn"] + (["selfsup[faiss]"] if has_faiss else [])
    rows = []
    for n in args.sizes:
        x = mixture(n)
        start = x[torch.randperm(n, generator=torch.Generator().manual_seed(1))[:K]].clone()
        found = {}
        for system in systems:
            if system == "scikit-learn":
                found[system] = run_sklearn(x, start, args.iters)
            else:
                backend = "faiss" if system == "selfsup[faiss]" else "torch"
                on = device if backend == "torch" else torch.device("cpu")
                found[system] = run_selfsup(x, start, args.iters, backend, on)
            print(f"n={n} {system}: {found[system]}", flush=True)
        ref = found["scikit-learn"]
        for system, r in found.items():
            on = args.device if system == "selfsup" else "cpu"
            rows.append({"system": system, "device": on, "threads": args.threads, "n": n,
                         "d": DIM, "k": K, "iters": args.iters, "n_iter": r["n_iter"],
                         "run_s": r["run_s"],
                         "s_per_iter": r["lloyd_s"] / args.iters,
                         "sklearn_over_run": ref["run_s"] / r["run_s"],
                         "sklearn_over_iter": ref["lloyd_s"] / r["lloyd_s"],
                         "inertia": r["inertia"],
                         "inertia_vs_sklearn": r["inertia"] / ref["inertia"],
                         "lloyd_inertia": r["lloyd_inertia"],
                         "lloyd_inertia_vs_sklearn": r["lloyd_inertia"] / ref["lloyd_inertia"]})
    limits.restore_original_limits()
    print_table(rows, ["system", "device", "n", "n_iter", "run_s", "s_per_iter", "sklearn_over_run",
                       "sklearn_over_iter", "inertia_vs_sklearn", "lloyd_inertia_vs_sklearn"])
    name = "kmeans" + ("" if args.device == "cpu" else "_cuda")
    extra = {"protocol": f"k={K}, d={DIM}, {args.iters} Lloyd iterations, n_init=1, tol=0",
             "faiss": "selfsup backend='faiss'" if has_faiss else "not importable, skipped",
             "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]}}
    print(f"wrote {write_results(name, rows, args.device, extra)}")


if __name__ == "__main__":
    main()
