"""The resident loader: deterministic order from (seed, epoch), disjoint shards, clear errors."""

import pytest
import torch

from selfsup.data.loader import ResidentLoader
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
