"""The loaders: deterministic order from (seed, epoch), disjoint shards, clear errors; the
mapped loader's batches equal the resident loader's."""

import json

import numpy as np
import pytest
import torch

from selfsup.data.loader import MappedLoader, ResidentLoader, make_loader, place_images
from selfsup.errors import ConfigError


def _images(n=40):
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()


def test_epoch_covers_each_image_once_and_is_seeded():
    loader = ResidentLoader(_images(), 8, seed=3)
    assert loader.steps_per_epoch == 5
    seen = torch.cat([loader.batch(s)[:, 0, 0, 0] for s in range(5)])
    assert sorted(seen.tolist()) == list(range(40))
    again = ResidentLoader(_images(), 8, seed=3)
    assert torch.equal(again.batch(7), loader.batch(7))  # random access, same result
    assert not torch.equal(ResidentLoader(_images(), 8, seed=4).batch(0), loader.batch(0))


def test_ranks_get_disjoint_slices_of_the_global_batch():
    shards = [ResidentLoader(_images(), 8, seed=0, rank=r, world=2) for r in range(2)]
    single = ResidentLoader(_images(), 8, seed=0)
    for step in range(3):
        parts = [s.batch(step) for s in shards]
        assert parts[0].shape[0] == 4
        assert torch.equal(torch.cat(parts), single.batch(step))


def test_not_resident_gives_the_same_batches():
    a = ResidentLoader(_images(), 8, seed=1, resident=False)
    b = ResidentLoader(_images(), 8, seed=1)
    assert torch.equal(a.batch(3), b.batch(3))


@pytest.mark.parametrize("batch,world,match", [(9, 2, "not divisible by the world size 2"),
                                               (64, 1, "larger than the data set")])
def test_bad_batch(batch, world, match):
    with pytest.raises(ConfigError, match=match):
        ResidentLoader(_images(), batch, world=world)


# ---------------------------------------------------------------- the mapped loader

def _store(tmp_path, n=37):
    from selfsup.data.image_source import ImageSet
    from selfsup.data.store import open_store

    rng = np.random.default_rng(0)
    out = tmp_path / "store"
    (out / "train").mkdir(parents=True)
    arr = rng.integers(0, 256, (n, 3, 6, 6), dtype=np.uint8)
    arr.tofile(out / "train" / "images.u8")
    (out / "train" / "files.txt").write_text("".join(f"{i}.png\n" for i in range(n)))
    meta = {"format": "selfsup-store", "version": 1, "size": 6, "channels": 3, "classes": [],
            "splits": {"train": {"images": n, "labelled": False}}}
    (out / "meta.json").write_text(json.dumps(meta))
    return ImageSet(torch.from_numpy(arr.copy()), None), open_store(out)


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("prefetch", [0, 3])
def test_mapped_loader_batches_equal_resident_ones(tmp_path, world, prefetch):
    memory, store = _store(tmp_path)
    assert store.mapped and not memory.mapped
    for rank in range(world):
        resident = ResidentLoader(memory.images, 8, seed=5, rank=rank, world=world)
        mapped = MappedLoader(store, 8, seed=5, rank=rank, world=world, prefetch=prefetch)
        assert mapped.steps_per_epoch == resident.steps_per_epoch == 4
        for step in range(4 * 4):  # four epochs, in order as the loop asks
            assert torch.equal(mapped.batch(step), resident.batch(step)), (rank, step)
        # out of order (a resume): read on demand, still the same batch
        assert torch.equal(mapped.batch(5), resident.batch(5))
        mapped.close()


def test_a_refused_mapped_loader_leaves_no_error_behind(tmp_path, monkeypatch):
    """A batch larger than the store is one ConfigError; the half-built loader's __del__
    once added an AttributeError traceback after it."""
    import gc
    import sys

    _, store = _store(tmp_path)
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    with pytest.raises(ConfigError, match="larger than the data set"):
        MappedLoader(store, 10_000)
    gc.collect()
    assert not seen


def test_make_loader_choice(tmp_path):
    memory, store = _store(tmp_path)
    cpu = torch.device("cpu")
    kw = dict(seed=0, rank=0, world=1, device=cpu)
    assert isinstance(make_loader(memory, 8, **kw), ResidentLoader)
    assert isinstance(make_loader(memory, 8, on_device=False, **kw), MappedLoader)
    # a memory map stays one on the CPU, whatever is asked: copying it needs the RAM it saves
    assert isinstance(make_loader(store, 8, **kw), MappedLoader)
    assert isinstance(make_loader(store, 8, on_device=True, **kw), MappedLoader)


def test_place_images_keeps_what_does_not_fit(monkeypatch):
    from selfsup.data import loader as loader_mod

    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    assert place_images(x, torch.device("cpu")) is x
    monkeypatch.setattr(loader_mod, "fits_on_device", lambda nbytes, device: False)
    assert place_images(x, torch.device("cpu"), "auto") is x
