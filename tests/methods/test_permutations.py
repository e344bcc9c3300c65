"""Jigsaw permutation sets: valid, distinct, deterministic, with the measured Hamming distances."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from selfsup.config import JIGSAW_MAX_PERMUTATIONS
from selfsup.methods.permutations import (
    MAX_PERMUTATIONS,
    all_permutations,
    hamming_distances,
    inverse,
    min_hamming_distance,
    permutation_set,
)


def naive_min_distance(perms: torch.Tensor) -> int:
    rows = perms.tolist()
    return min(sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(rows, 2))


def test_all_permutations_in_lexicographic_order():
    every = all_permutations()
    assert every.shape == (math.factorial(9), 9) and every.dtype == torch.uint8
    assert every[0].tolist() == list(range(9)) and every[-1].tolist() == list(range(8, -1, -1))
    assert torch.equal(every[1], torch.tensor([0, 1, 2, 3, 4, 5, 6, 8, 7], dtype=torch.uint8))


# measured with seed 0 (the module docstring); Jigsaw++ (CVPR 2018) asks for >= 3 at 701
@pytest.mark.parametrize("n,at_least", [(2, 9), (10, 8), (100, 6), (701, 5)])  # 701: >= 3
def test_size_validity_and_minimum_hamming_distance(n, at_least):
    perms = permutation_set(n)
    assert perms.shape == (n, 9) and perms.dtype == torch.long
    assert torch.equal(perms.sort(1).values, torch.arange(9).expand(n, 9))  # each a permutation
    assert len({tuple(r) for r in perms.tolist()}) == n  # all distinct
    assert min_hamming_distance(perms) >= at_least
    if n <= 100:
        assert min_hamming_distance(perms) == naive_min_distance(perms)


def test_greedy_is_max_min():
    # no permutation outside the first k chosen is farther from them than the (k+1)-th choice
    perms = permutation_set(12)
    every = all_permutations().long()
    for k in (1, 5, 11):
        d = (every[:, None, :] != perms[None, :k, :]).sum(-1).min(1).values  # 9!: to the first k
        chosen = (perms[k] != perms[:k]).sum(-1).min()
        assert chosen == d.max()


def test_deterministic_for_a_seed_and_a_prefix_of_larger_sets():
    a, b = permutation_set(20, seed=3), permutation_set(20, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, permutation_set(20, seed=4))
    assert torch.equal(permutation_set(10, seed=3), a[:10])
    a[0] = 0  # callers get a copy: the cached set is untouched
    assert torch.equal(permutation_set(20, seed=3), b)


def test_hamming_distances_and_inverse():
    perms = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 0, 2, 3, 4, 5, 6, 7, 8],
                          [8, 7, 6, 5, 4, 3, 2, 1, 0]])
    d = hamming_distances(perms)
    assert d.tolist() == [[0, 2, 8], [2, 0, 8], [8, 8, 0]]
    assert min_hamming_distance(perms) == 2
    p = permutation_set(50)
    inv = inverse(p)
    rows = torch.arange(50)[:, None]
    assert torch.equal(p[rows, inv], torch.arange(9).expand(50, 9))
    assert torch.equal(inv[rows, p], torch.arange(9).expand(50, 9))


@pytest.mark.parametrize("n", [0, 1, MAX_PERMUTATIONS + 1])
def test_bad_sizes_raise(n):
    with pytest.raises(ValueError, match=f"got {n}"):
        permutation_set(n)


def test_config_bound_is_the_module_bound():
    assert JIGSAW_MAX_PERMUTATIONS == MAX_PERMUTATIONS
    with pytest.raises(ValueError, match="at least 2"):
        min_hamming_distance(torch.arange(9)[None])
