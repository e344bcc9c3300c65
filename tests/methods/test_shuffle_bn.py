"""Shuffle BN: per-group statistics on one device, and the cross-rank shuffle on 2 gloo ranks."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.errors import ConfigError
from selfsup.methods import MoCo
from selfsup.methods.shuffle_bn import (
    batch_shuffle_ddp,
    batch_unshuffle_ddp,
    ddp_key_forward,
    grouped_key_forward,
    num_groups,
)


@pytest.mark.parametrize("batch,groups,want", [(256, 8, 8), (8, 8, 4), (10, 4, 4), (3, 8, 1),
                                               (1, 8, 1), (30, 1, 1)])
def test_num_groups_keeps_two_samples_per_group(batch, groups, want):
    assert num_groups(batch, groups) == want


@pytest.mark.parametrize("n,groups", [(12, 4), (10, 4)])
def test_each_group_is_normalised_with_its_own_statistics(n, groups):
    bn = nn.BatchNorm1d(3, affine=False).train()
    x = torch.randn(n, 3) * torch.tensor([1.0, 5.0, 2.0]) + 7.0
    out = grouped_key_forward(bn, x, groups, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    for idx in torch.tensor_split(perm, groups):
        torch.testing.assert_close(out[idx].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
        # each group's output is BN of that group alone, row for row
        torch.testing.assert_close(out[idx], nn.BatchNorm1d(3, affine=False)(x[idx]))
    plain = nn.BatchNorm1d(3, affine=False)(x)
    assert not torch.allclose(out, plain, atol=1e-3)  # differs from whole-batch BN


def test_rows_come_back_in_order_and_without_gradient():
    lin = nn.Linear(5, 2)
    x = torch.randn(9, 5)
    out = grouped_key_forward(lin, x, 3)
    torch.testing.assert_close(out, lin(x).detach())
    assert not out.requires_grad


def test_single_process_ddp_helpers_are_identity_up_to_permutation():
    x = torch.arange(12.0).view(6, 2)
    shuffled, idx_unshuffle = batch_shuffle_ddp(x)
    assert sorted(shuffled[:, 0].tolist()) == x[:, 0].tolist()
    assert torch.equal(batch_unshuffle_ddp(shuffled, idx_unshuffle), x)


def _worker(rank: int, world: int, init: str) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        n = 4
        x = torch.arange(world * n * 2, dtype=torch.float32).view(world * n, 2)  # global batch
        local = x[rank * n:(rank + 1) * n]
        torch.manual_seed(100 + rank)  # only rank 0's permutation may matter
        shuffled, idx_unshuffle = batch_shuffle_ddp(local)
        assert shuffled.shape == local.shape
        everything = [torch.empty_like(shuffled) for _ in range(world)]
        dist.all_gather(everything, shuffled)
        rows = torch.cat(everything)
        assert sorted(rows[:, 0].tolist()) == x[:, 0].tolist()  # a permutation of the batch
        assert not torch.equal(rows, x)  # P(identity) = 1/8! for this seed: it is shuffled
        assert torch.equal(batch_unshuffle_ddp(shuffled, idx_unshuffle), local)  # exact
        lin = nn.Linear(2, 3)
        torch.manual_seed(0)
        lin.reset_parameters()  # same weights on both ranks
        torch.testing.assert_close(ddp_key_forward(lin, local), lin(local).detach())

        # MoCo under DDP: "auto" shuffles across ranks; the queue takes the global batch
        torch.manual_seed(0)
        backbone = nn.Sequential(nn.Linear(2, 6), nn.BatchNorm1d(6), nn.ReLU())
        model = MoCo(backbone, nn.Linear(6, 3), temperature=0.2, momentum=0.9, queue_size=10,
                     out_dim=3).train()
        loss, _ = model([local + 0.5, local])
        assert torch.isfinite(loss) and model.queue_ptr.item() == world * n
        queues = [torch.empty_like(model.queue) for _ in range(world)]
        dist.all_gather(queues, model.queue)
        assert torch.equal(queues[0], queues[1])
        small = MoCo(nn.Linear(2, 3), nn.Identity(), temperature=0.2, momentum=0.9,
                     queue_size=6, out_dim=3).train()
        try:
            small([local, local])
            raise AssertionError("queue_size 6 < global batch 8 was accepted")
        except ConfigError as e:
            assert "global batch 8" in str(e)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~5 s: two processes import torch
def test_ddp_shuffle_unshuffle_two_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'init'}"), nprocs=2)
