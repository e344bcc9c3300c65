"""k-means: Lloyd's monotone inertia, agreement with scikit-learn, empty clusters, seeds,
chunking, bad input, CUDA and two gloo processes holding one shard each."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor

from selfsup.cluster import KMeansResult, kmeans, kmeans_fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems


def _blobs(n: int = 1200, d: int = 16, k: int = 6, std: float = 0.6, seed: int = 0) -> Tensor:
    """Gaussian blobs around centres drawn in [-10, 10]^d, as scikit-learn's make_blobs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(k, d, generator=g) * 20 - 10  # k x d
    return centres[torch.randint(k, (n,), generator=g)] + std * torch.randn(n, d, generator=g)


def _same_partition(a, b) -> bool:
    """Equal up to a renaming of the labels (adjusted Rand index 1): pairs are one-to-one."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    pairs = torch.unique(torch.stack([a, b]), dim=1).shape[1]
    return pairs == torch.unique(a).numel() == torch.unique(b).numel()


def _overlapping(n: int = 600, d: int = 5, seed: int = 0) -> Tensor:
    """Uniform noise: no true clusters, so Lloyd needs many steps and seeds matter."""
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def _reference_inertia(x: Tensor, res: KMeansResult, spherical: bool) -> float:
    """The inertia recomputed in float64 from the returned centroids and assignment."""
    x, c = x.double(), res.centroids.double()
    if spherical:
        return float((1 - (F.normalize(x, dim=1) * F.normalize(c, dim=1)[res.assign]).sum(1)).sum())
    return float(((x - c[res.assign]) ** 2).sum())


@pytest.mark.parametrize("spherical", [False, True])
@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_inertia_never_increases_and_matches_its_formula(spherical, init):
    x = _overlapping()
    res = kmeans_fit(x, 12, iters=40, spherical=spherical, init=init, tol=0.0)
    hist = np.array(res.inertia_history)
    assert len(hist) == res.n_iter + 1 and res.n_iter >= 40
    assert (np.diff(hist) <= 1e-6 * hist[0]).all(), hist
    assert hist[-1] < hist[0]
    assert res.inertia == pytest.approx(_reference_inertia(x, res, spherical), rel=1e-5)
    assert res.inertia == hist[-1]
    if spherical:
        torch.testing.assert_close(res.centroids.norm(dim=1), torch.ones(12))


def test_tol_stops_early_and_every_point_goes_to_its_nearest_centroid():
    x = _blobs()
    res = kmeans_fit(x, 6, iters=100, tol=1e-4)
    assert res.n_iter < 100
    nearest = torch.cdist(x.double(), res.centroids.double()).argmin(1)
    assert torch.equal(nearest, res.assign)


def test_matches_scikit_learn_on_separated_blobs():
    from sklearn.cluster import KMeans  # imported here: the DDP workers re-import this file

    x = _blobs()
    ours = kmeans_fit(x, 6, seed=0, n_init=3)
    ref = KMeans(6, n_init=3, random_state=0).fit(x.numpy())
    assert _same_partition(ref.labels_, ours.assign)
    assert ours.inertia == pytest.approx(ref.inertia_, rel=0.01)
    # the same partition, so the same centroids once the labels are matched
    perm = torch.tensor([np.bincount(ref.labels_[ours.assign.numpy() == j]).argmax()
                         for j in range(6)])
    assert sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(ours.centroids, torch.from_numpy(ref.cluster_centers_)[perm].float(),
                               atol=1e-4, rtol=1e-4)


def test_spherical_separates_directions():
    from sklearn.cluster import KMeans

    x = _blobs(d=8, std=0.3) + 20.0  # blobs far from the origin: cosine still tells them apart
    x = F.normalize(x - x.mean(0), dim=1) * torch.rand(x.shape[0], 1).add(0.5)  # random norms
    res = kmeans_fit(x, 6, spherical=True, n_init=3)
    labels = KMeans(6, n_init=3, random_state=0).fit(F.normalize(x, dim=1).numpy()).labels_
    assert _same_partition(labels, res.assign)


def test_empty_clusters_are_refilled():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.zeros(50, 2), torch.randn(12, 2, generator=g) + 5])  # 50 duplicates
    init = torch.zeros(4, 2)  # every seed on the duplicate: three clusters start empty
    res = kmeans_fit(x, 4, iters=3, init=init)
    assert (torch.bincount(res.assign, minlength=4) > 0).all()
    assert (np.diff(res.inertia_history) <= 1e-6).all()
    for seed in range(4):  # random seeds drawn mostly from the duplicates
        x = torch.cat([torch.ones(300, 3), torch.randn(6, 3, generator=g)])
        res = kmeans_fit(x, 7, init="random", seed=seed, iters=1)
        assert (torch.bincount(res.assign, minlength=7) > 0).all()


def test_fewer_distinct_points_than_k_is_an_error():
    x = torch.cat([torch.zeros(5, 2), torch.ones(5, 2)])
    with pytest.raises(ValueError, match="fewer than k=3 distinct points"):
        kmeans_fit(x, 3)


def test_seed_determines_the_result():
    x = _overlapping()
    a, b = kmeans_fit(x, 10, seed=3), kmeans_fit(x, 10, seed=3)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assign, b.assign)
    others = [kmeans_fit(x, 10, seed=s).centroids for s in (4, 5, 6)]
    assert any(not torch.equal(a.centroids, c) for c in others)


def test_restarts_keep_the_lowest_inertia():
    x = _overlapping()
    one = kmeans_fit(x, 10, seed=1, init="random", iters=5, tol=0.0)
    best = kmeans_fit(x, 10, seed=1, init="random", iters=5, tol=0.0, n_init=4)
    assert best.inertia <= one.inertia  # the first restart draws what n_init=1 drew


@pytest.mark.parametrize("spherical", [False, True])
def test_chunked_equals_unchunked(spherical):
    x = _overlapping(n=500)
    whole = kmeans_fit(x, 8, spherical=spherical, chunk_size=10_000, tol=0.0, iters=10)
    tiny = kmeans_fit(x, 8, spherical=spherical, chunk_size=37, tol=0.0, iters=10)
    assert torch.equal(whole.assign, tiny.assign)
    torch.testing.assert_close(whole.centroids, tiny.centroids)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_float_dtype(dtype):
    x = _blobs(n=300)
    c, a = kmeans(x.to(dtype), 6, seed=0)
    ref = kmeans_fit(x, 6, seed=0)
    assert c.dtype == dtype and c.shape == (6, 16) and a.dtype == torch.long and a.shape == (300,)
    assert _same_partition(ref.assign, a)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"x": torch.zeros(5)}, r"shape \(N, d\), got shape \(5,\)"),
    ({"x": torch.zeros(5, 2, dtype=torch.long)}, "float tensor"),
    ({"k": 1}, "k must be >= 2, got k=1"),
    ({"k": 11}, "k=11 exceeds the number of points N=10"),
    ({"iters": 0}, "iters must be >= 1, got iters=0"),
    ({"n_init": 0}, "n_init must be >= 1"),
    ({"chunk_size": 0}, "chunk_size must be >= 1"),
    ({"init": "kmeans"}, "init must be one of"),
    ({"init": torch.zeros(3, 5)}, r"init centroids must be \(2, 2\)"),
    ({"backend": "sklearn"}, "backend must be one of"),
])
def test_bad_input_is_one_clear_error(kwargs, message):
    args = {"x": torch.randn(10, 2), "k": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        kmeans_fit(**args)


def test_non_finite_values_are_counted():
    x = torch.randn(10, 3)
    x[0, 0], x[4, 2], x[7, 1] = float("nan"), float("inf"), float("-inf")
    with pytest.raises(ValueError, match="x has 3 non-finite values"):
        kmeans(x, 2)


def test_faiss_backend_agrees():
    pytest.importorskip("faiss")
    x = _blobs()
    ours, theirs = kmeans_fit(x, 6, seed=0), kmeans_fit(x, 6, seed=0, backend="faiss")
    assert _same_partition(ours.assign, theirs.assign)
    assert theirs.inertia == pytest.approx(ours.inertia, rel=1e-4)


def test_faiss_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(ImportError, match=r"selfsup\[faiss\]"):
        kmeans(_blobs(n=100), 3, backend="faiss")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu():
    x = _blobs()
    cpu = kmeans_fit(x, 6, seed=0)
    gpu = kmeans_fit(x.cuda().half(), 6, seed=0, chunk_size=100)
    assert gpu.centroids.device.type == "cuda" and gpu.assign.device.type == "cuda"
    assert _same_partition(cpu.assign, gpu.assign.cpu())
    assert gpu.inertia == pytest.approx(cpu.inertia, rel=1e-2)


# each case: (data, k, keyword arguments); shards are uneven, 330 + 270 points
_DDP_CASES = [
    ("blobs", 6, {}),
    ("noise", 9, {"spherical": True, "init": "random", "init_sample": 100, "tol": 0.0}),
    ("noise", 9, {"init_sample": 50, "n_init": 2, "iters": 15}),
    ("dups", 5, {"init": torch.zeros(5, 3), "iters": 4}),  # empty clusters refilled
]


def _ddp_data(name: str) -> Tensor:
    if name == "blobs":
        return _blobs(n=600, d=3)
    if name == "noise":
        return _overlapping(n=600, d=3)
    return torch.cat([torch.zeros(300, 3), _overlapping(n=300, d=3)])[
        torch.randperm(600, generator=torch.Generator().manual_seed(0))]


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    shard = slice(0, 330) if rank == 0 else slice(330, 600)
    results = []
    for name, k, kwargs in _DDP_CASES:
        res = kmeans_fit(_ddp_data(name)[shard], k, **kwargs)
        parts = [None] * world
        dist.all_gather_object(parts, res.assign)
        results.append((res.centroids, torch.cat(parts), res.inertia_history, res.n_iter))
    all_results = [None] * world
    dist.all_gather_object(all_results, results)
    if rank == 0:
        torch.save(all_results, out)
    dist.destroy_process_group()


def test_two_gloo_shards_equal_one_process(tmp_path):
    out = tmp_path / "res.pt"
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'init'}", str(out)), nprocs=2)
    per_rank = torch.load(out)
    for i, (name, k, kwargs) in enumerate(_DDP_CASES):
        single = kmeans_fit(_ddp_data(name), k, **kwargs)
        for centroids, assign, history, n_iter in (r[i] for r in per_rank):
            assert torch.equal(assign, single.assign), name
            torch.testing.assert_close(centroids, single.centroids, rtol=1e-5, atol=1e-6)
            assert history == pytest.approx(single.inertia_history, rel=1e-5)
            assert n_iter == single.n_iter
        assert torch.equal(per_rank[0][i][0], per_rank[1][i][0])  # identical on both ranks
