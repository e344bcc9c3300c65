"""The NT-Xent pieces shared with NT-Xent + FT: the scores, the candidate columns, the loss."""

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import nt_xent
from selfsup.losses.ntxent import candidates, loss_from_scores, nt_xent_scores, pair_columns


def _nt_xent_before_the_shared_builder(z1, z2, tau, negatives=None):
    """nt_xent as written before it shared its logits builder (one process): the reference
    for bit-identity (the logits were divided by tau before the self column was masked)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    z = torch.cat([z1, z2])  # 2N x d
    logits = z @ z.T / tau  # 2N x 2N
    if negatives is not None:
        logits = torch.cat([logits, z @ negatives.to(z.dtype).T / tau], dim=1)
    local = torch.arange(n)
    self_idx, pos_idx = torch.cat([local, local + n]), torch.cat([local + n, local])
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[torch.arange(2 * n), self_idx] = True
    return F.cross_entropy(logits.masked_fill(mask, float("-inf")), pos_idx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, d, tau", [(2, 3, 0.1), (8, 16, 0.5), (33, 7, 0.2)])
@pytest.mark.parametrize("memory", [0, 5])
def test_bit_identical_to_the_former_nt_xent(dtype, n, d, tau, memory):
    g = torch.Generator().manual_seed(n + d)
    z1, z2 = (torch.randn(n, d, generator=g, dtype=dtype) for _ in range(2))
    neg = F.normalize(torch.randn(memory, d, generator=g, dtype=dtype), dim=1) if memory else None
    got = nt_xent(z1, z2, tau, negatives=neg)
    assert torch.equal(got, _nt_xent_before_the_shared_builder(z1, z2, tau, neg))


def test_scores_are_the_cosines_the_loss_used():
    z1, z2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    loss, scores, self_idx, pos_idx = nt_xent_scores(z1, z2, 0.3)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    torch.testing.assert_close(scores, z @ z.T, rtol=0, atol=1e-12)
    assert torch.equal(self_idx, torch.arange(12))
    assert torch.equal(pos_idx, torch.cat([torch.arange(6, 12), torch.arange(6)]))
    assert torch.equal(loss, loss_from_scores(scores, self_idx, pos_idx, 0.3))
    assert torch.equal(loss, nt_xent(z1, z2, 0.3))


def test_memory_columns_come_after_the_batch():
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    neg = F.normalize(torch.randn(5, 3), dim=1)
    _, scores, _, _ = nt_xent_scores(z1, z2, 0.5, negatives=neg)
    assert scores.shape == (8, 8 + 5)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    torch.testing.assert_close(scores[:, 8:], z @ neg.T)


def test_candidates_and_columns_on_one_process():
    z1, z2 = torch.randn(3, 2), torch.randn(3, 2)
    z_all, self_idx, pos_idx = candidates(z1, z2)
    assert torch.equal(z_all, torch.cat([z1, z2]))
    assert torch.equal(z_all[self_idx], torch.cat([z1, z2]))  # each anchor's own row
    assert torch.equal(z_all[pos_idx], torch.cat([z2, z1]))  # and its other view
    s, p = pair_columns(3, 12, torch.device("cpu"))  # as rank 0 of 4 ranks would see it
    assert s.tolist() == [0, 1, 2, 12, 13, 14] and p.tolist() == [12, 13, 14, 0, 1, 2]


def test_half_precision_scores_are_upcast_before_the_softmax():
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    loss = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(nt_xent(z1, z2, 0.1).item(), abs=0.1)
