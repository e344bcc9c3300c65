"""The metric accumulator: means over steps, histogram counts, the flag, one window per sync."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.train.metrics import MetricAccumulator


def test_means_histograms_and_windows():
    acc = MetricAccumulator(torch.device("cpu"))
    acc.add({"loss": torch.tensor(1.0), "hist": torch.tensor([1, 0, 2])})
    acc.add({"loss": torch.tensor(3.0), "hist": torch.tensor([0, 1, 1])})
    out = acc.sync(flag=True)
    assert out.means == {"loss": 2.0} and out.histograms == {"hist": [1, 1, 3]}
    assert out.flag is True and out.steps == 2 and out.seconds >= 0
    acc.add({"loss": torch.tensor(5.0, dtype=torch.float64)})
    out = acc.sync()  # a new window: nothing of the first one remains
    assert out.means == {"loss": 5.0} and out.histograms == {} and out.flag is False
    assert out.steps == 1


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    acc = MetricAccumulator(torch.device("cpu"))
    for v in (1.0, 2.0):
        acc.add({"loss": torch.tensor(v + 10 * rank), "hist": torch.tensor([rank, 1])})
    res = acc.sync(flag=rank == 0)  # rank 0's clock decides for everyone
    out[rank] = (res.means, res.histograms, res.flag)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_agree(one_thread):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(port, out), nprocs=2)
    for rank in (0, 1):
        means, hists, flag = out[rank]
        assert means == {"loss": pytest.approx((1.5 + 11.5) / 2)}
        assert hists == {"hist": [2, 4]} and flag is True
