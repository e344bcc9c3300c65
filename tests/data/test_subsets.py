"""Class-balanced label subsets: balance, determinism, nesting and argument checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfsup.data import class_balanced_subset, load_dataset


def _labels(sizes: list[int], seed: int = 0) -> torch.Tensor:
    """Labels with ``sizes[c]`` samples of class c, in a shuffled order."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_fraction_keeps_the_same_share_of_every_class() -> None:
    labels = _labels([100, 50, 10, 3])
    index = class_balanced_subset(labels, fraction=0.1)
    assert index.dtype == torch.int64 and torch.equal(index, index.sort().values)
    assert torch.bincount(labels[index]).tolist() == [10, 5, 1, 1]  # at least one per class


def test_per_class_and_real_labels() -> None:
    labels = load_dataset("fashion-mnist-sample", split="train").labels
    assert labels is not None
    index = class_balanced_subset(labels, per_class=10, seed=3)
    assert len(index) == 100 and len(index.unique()) == 100
    assert torch.bincount(labels[index]).tolist() == [10] * 10
    tenth = class_balanced_subset(labels, fraction=0.1)
    counts = torch.bincount(labels, minlength=10)
    assert torch.equal(torch.bincount(labels[tenth]), (counts.double() * 0.1).round().long())


def test_deterministic_and_nested() -> None:
    labels = _labels([200, 300, 150])
    a = class_balanced_subset(labels, fraction=0.1, seed=7)
    assert torch.equal(a, class_balanced_subset(labels, fraction=0.1, seed=7))
    assert not torch.equal(a, class_balanced_subset(labels, fraction=0.1, seed=8))
    small = class_balanced_subset(labels, fraction=0.01, seed=7)
    assert set(small.tolist()) <= set(a.tolist())  # the 1% labels are among the 10% labels
    assert torch.equal(class_balanced_subset(labels, fraction=1.0), torch.arange(650))


def test_negative_labels_are_unlabeled() -> None:
    labels = torch.tensor([-1, 0, 0, -1, 1, 1])
    index = class_balanced_subset(labels, per_class=2)
    assert index.tolist() == [1, 2, 4, 5]


@pytest.mark.parametrize("kwargs", [{"fraction": 0.0}, {"fraction": 1.5}, {"fraction": -0.1},
                                    {}, {"fraction": 0.5, "per_class": 2}, {"per_class": 0},
                                    {"per_class": 4}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        class_balanced_subset(torch.tensor([0, 0, 0, 1, 1, 1]), **kwargs)
    with pytest.raises(ValueError, match="1-D integer"):
        class_balanced_subset(torch.zeros(4), fraction=0.5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.floats(0.01, 1.0),
       st.integers(0, 2**31))
def test_counts_property(sizes: list[int], fraction: float, seed: int) -> None:
    labels = _labels(sizes, seed)
    index = class_balanced_subset(labels, fraction=fraction, seed=seed)
    assert len(index.unique()) == len(index)
    expected = [max(1, int(fraction * n + 0.5)) for n in sizes]
    assert torch.bincount(labels[index], minlength=len(sizes)).tolist() == expected


def test_subset_files_round_trip_and_name_lists(tmp_path) -> None:
    from selfsup.data import load_subset, save_subset
    from selfsup.errors import ConfigError

    idx = class_balanced_subset(torch.arange(50) % 5, fraction=0.2, seed=3)
    assert torch.equal(load_subset(save_subset(idx, tmp_path / "s.txt"), 50), idx)
    names = [f"n0144_{i}.JPEG" for i in range(6)]
    (tmp_path / "1percent.txt").write_text("# ImageNet-style list\nn0144_4.JPEG\n\nn0144_1.JPEG\n")
    assert load_subset(tmp_path / "1percent.txt", 6, names).tolist() == [1, 4]
    for text, word in [("3\n99\n", "out of range"), ("2\n2\n", "more than once"),
                       ("\n", "no images"), ("n0144_9.JPEG\n", "not in the data set")]:
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(ConfigError, match=word):
            load_subset(tmp_path / "bad.txt", 50, names)
    (tmp_path / "bad.txt").write_text("a.png\n")
    with pytest.raises(ConfigError, match="no file names"):
        load_subset(tmp_path / "bad.txt", 50)
