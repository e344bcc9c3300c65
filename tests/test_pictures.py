"""selfsup pictures: the neighbour grid, the 2-D map and the cluster grid of a tiny run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.cli import main
from selfsup.cluster.pseudo_labels import cluster
from selfsup.config import load_config
from selfsup.errors import ConfigError, DataError
from selfsup.pictures import NO_MAP, map_2d, nearest, pick_queries, pictures
from selfsup.train.pretrain import pretrain
from tests.conftest import TINY

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return pretrain(load_config("quickstart", [*TINY, "--run.out_dir", str(out),
                                               "--optim.warmup_epochs", "0"]))


def _png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" \
        and path.stat().st_size > 5000


def test_run_pictures_are_written(run, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "plots"
    assert main(["pictures", str(run), "--queries", "3", "--k", "4", "--map-points", "120",
                 "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert _png(out / "neighbours.png") and _png(out / "map.png")
    written, notes = pictures(run, queries=2, k=3, map="none", progress=False)
    assert written == [run / "plots" / "neighbours.png"] and notes == ["no 2-D map (--map none)"]


def test_cluster_pictures_are_written(run, tmp_path):
    pytest.importorskip("sklearn")
    crun = cluster(run, 3, iters=5, out_dir=tmp_path / "c", progress=False)
    written, notes = pictures(crun, per_cluster=4, map_points=100, progress=False)
    assert written == [crun / "plots" / "clusters.png", crun / "plots" / "map.png"]
    assert all(_png(p) for p in written) and notes == []


def test_no_map_library_is_said_clearly(run, tmp_path, monkeypatch):
    for name in ("umap", "sklearn", "sklearn.manifold"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    assert map_2d(np.zeros((10, 4), np.float32)) == (None, NO_MAP)
    written, notes = pictures(run, queries=2, k=2, out_dir=tmp_path, progress=False)
    assert [p.name for p in written] == ["neighbours.png"] and notes == [NO_MAP]
    assert "pip install" in NO_MAP


def test_bad_arguments_are_one_line(run, tmp_path):
    with pytest.raises(DataError, match="no such run folder"):
        pictures(tmp_path / "missing")
    with pytest.raises(ConfigError, match="--k must be >= 1"):
        pictures(run, k=0)
    with pytest.raises(ConfigError, match="unknown map"):
        pictures(run, map="pca")
    # issue 23: --k 100000 drew for ever; one t-SNE point made sklearn raise
    with pytest.raises(ConfigError, match="--k must be <= 50 .*got 100000"):
        pictures(run, k=100000)
    with pytest.raises(ConfigError, match="--map-points must be >= 10 .*got 1"):
        pictures(run, map="tsne", map_points=1)
    with pytest.raises(ConfigError, match="--device must be auto, cpu"):
        pictures(run, device="tpu", out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_a_small_train_split_clamps_k_and_says_so(run, tmp_path, monkeypatch):
    import selfsup.pictures as pictures_module

    real = pictures_module.load_split

    def five_images(cfg, split):
        if split != "train":
            raise DataError("no test split")  # the queries come from the train split then
        return real(cfg, split).head(5)

    monkeypatch.setattr(pictures_module, "load_split", five_images)
    written, notes = pictures(run, queries=2, k=8, out_dir=tmp_path, progress=False)
    assert [p.name for p in written] == ["neighbours.png"]
    assert notes == ["k=4, not 8: the train split holds 5 images",
                     "no 2-D map: only 5 images (a map needs 10)"]


def test_a_failed_write_is_one_line_and_leaves_nothing(run, tmp_path, monkeypatch):
    import errno
    import os

    from PIL import Image

    save = Image.Image.save

    def read_only(image, target, *args, **kwargs):  # a file on disk fails, a buffer is fine
        if isinstance(target, (str, os.PathLike)):
            raise OSError(errno.EROFS, "Read-only file system")
        return save(image, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", read_only)
    with pytest.raises(DataError, match=r"neighbours\.png: cannot write the picture "
                                        r"\(Read-only file system\)"):
        pictures(run, queries=2, k=2, map="none", out_dir=tmp_path / "p", progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary


def test_queries_take_each_class_in_turn():
    labels = torch.tensor([2, 0, 0, 1, 2, 1, 0])
    assert pick_queries(labels, 4, 7).tolist() == [1, 3, 0, 2]  # first of 0, 1, 2; then 0
    assert pick_queries(None, 3, 9).tolist() == [0, 4, 8]
    assert len(pick_queries(labels, 50, 7)) == 7


def test_nearest_is_cosine_top_k_without_the_query_itself():
    gen = torch.Generator().manual_seed(0)
    memory = F.normalize(torch.randn(30, 5, generator=gen, dtype=torch.float64), dim=1)
    sims, idx = nearest(memory[[3, 7]], memory, 4, torch.tensor([3, 7]))
    for row, q in enumerate((3, 7)):
        ref = [(float(memory[q] @ memory[j]), j) for j in range(30) if j != q]
        ref.sort(reverse=True)
        assert idx[row].tolist() == [j for _, j in ref[:4]]
        torch.testing.assert_close(sims[row], torch.tensor([s for s, _ in ref[:4]],
                                                           dtype=torch.float64))
