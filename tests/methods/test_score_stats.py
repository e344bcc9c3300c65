"""Score statistics against a float64 recomputation (Zhu et al. ICCV 2021 §3)."""

import torch

from selfsup.methods.score_stats import bin_edges, score_stats


def test_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    l_pos = torch.rand(64, generator=g) * 2 - 1
    l_neg = torch.rand(64, 300, generator=g) * 2 - 1
    s = score_stats(l_pos, l_neg, bins=20)
    pos, neg = l_pos.double(), l_neg.double().reshape(-1)
    assert torch.allclose(s["pos_sim"].double(), pos.mean(), atol=1e-6)
    assert torch.allclose(s["neg_sim"].double(), neg.mean(), atol=1e-6)
    rows = l_neg.double()  # 64 x 300: each query's negatives
    row_var = ((rows - rows.mean(1, keepdim=True)) ** 2).sum(1) / (300 - 1)  # unbiased, per row
    assert torch.allclose(s["neg_var"].double(), row_var.mean(), atol=1e-6)
    edges = bin_edges(20)
    want = [((neg >= lo) & ((neg < hi) if i < 19 else (neg <= hi))).sum().item()
            for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]
    assert s["neg_hist"].tolist() == want and sum(want) == neg.numel()
    assert s["pos_hist"].sum().item() == 64


def test_neg_var_is_per_anchor_not_pooled():
    # FT authors' code: torch.var(neg, axis=1) per query, mean over the batch. Rows with
    # different means and no spread of their own: no per-anchor variance, although the
    # pooled N*K scores vary (1/4 here), which the old single variance reported.
    l_neg = torch.tensor([[0.5] * 6, [-0.5] * 6], dtype=torch.float64)
    assert score_stats(torch.ones(2), l_neg)["neg_var"].item() == 0.0
    # closed form: row r = (a_r, -a_r): unbiased variance 2 a_r^2, mean over rows
    a = torch.tensor([0.1, 0.2, 0.3])
    got = score_stats(torch.ones(3), torch.stack([a, -a], 1))["neg_var"].double()
    torch.testing.assert_close(got, (2 * a.double() ** 2).mean())
    # one negative per anchor: no spread, not NaN
    assert score_stats(torch.ones(2), torch.rand(2, 1))["neg_var"].item() == 0.0


def test_bfloat16_scores_and_rounding_outside_range():
    s = score_stats(torch.tensor([1.0000001, -1.0000001]).bfloat16(), torch.zeros(2, 3), bins=4)
    assert s["pos_hist"].tolist() == [1, 0, 0, 1] and s["neg_hist"].sum().item() == 6


def test_drop_two_columns_equals_boolean_mask():
    from selfsup.methods.score_stats import drop_two_columns

    g = torch.Generator().manual_seed(1)
    s = torch.randn(7, 9, generator=g)
    a = torch.randint(0, 9, (7,), generator=g)
    b = (a + torch.randint(1, 9, (7,), generator=g)) % 9  # never equal to a
    mask = torch.ones_like(s, dtype=torch.bool)
    mask[torch.arange(7), a] = False
    mask[torch.arange(7), b] = False
    assert torch.equal(drop_two_columns(s, a, b), s[mask].view(7, 7))


def test_collapsed_flags_only_the_trivial_solution():
    from selfsup.methods.score_stats import collapsed

    assert collapsed({"pos_sim": 0.999, "neg_sim": 0.998, "neg_var": 1e-6})
    assert not collapsed({"pos_sim": 0.999, "neg_sim": 0.5, "neg_var": 0.1})  # aligned, spread
    assert not collapsed({"pos_sim": 0.7, "neg_sim": 0.2, "neg_var": 0.05})
    assert not collapsed({"loss": 1.0})  # methods without scores
