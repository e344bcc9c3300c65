"""SimCLR v2's memory: NT-Xent with queue negatives, against a float64 reference; queue and EMA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.losses import nt_xent
from selfsup.methods.simclr_memory import SimCLRMemory
from selfsup.models import ProjectionHead, resnet
from selfsup.train.pretrain import pretrain
from tests.conftest import TINY


def reference(z1, z2, queue, tau):
    """eq. (1) of SimCLR with the queue's K keys added to every denominator, float64."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    q = queue.double()
    n2, total = len(z), 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        denom += sum(math.exp(z[i] @ q[k] / tau) for k in range(len(q)))
        total -= math.log(math.exp(z[i] @ z[j] / tau) / denom)
    return total / n2


def test_nt_xent_with_negatives_matches_reference_and_empty_is_plain():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    queue = F.normalize(torch.randn(7, 8, generator=g), dim=1)
    got = nt_xent(z1, z2, 0.3, negatives=queue).item()
    assert got == pytest.approx(reference(z1, z2, queue, 0.3), rel=1e-5)
    assert torch.equal(nt_xent(z1, z2, 0.3, negatives=queue[:0]), nt_xent(z1, z2, 0.3))
    with pytest.raises(ValueError, match="negatives must be"):
        nt_xent(z1, z2, negatives=torch.zeros(3, 4))


def _model(K=16, m=0.9):
    torch.manual_seed(0)
    backbone = resnet(18, width=0.125, stem="cifar", in_channels=1)
    head = ProjectionHead(backbone.feature_dim, 32, 8, num_layers=3)
    return SimCLRMemory(backbone, head, temperature=0.2, momentum=m, queue_size=K)


def test_forward_uses_the_queue_then_enqueues_both_views_keys():
    model = _model()
    views = [torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)]
    before = model.queue.clone()
    loss, metrics = model(views)
    z = F.normalize(model.head(model.backbone(torch.cat(views))), dim=1)
    assert loss.item() == pytest.approx(
        nt_xent(z[:4], z[4:], 0.2, negatives=before).item(), rel=1e-4)
    assert int(model.queue_ptr) == 8  # 2N keys per step
    assert torch.equal(model.queue[8:], before[8:])
    assert torch.allclose(model.queue[:8].norm(dim=1), torch.ones(8), atol=1e-5)
    assert {"pos_sim", "neg_sim", "neg_var"} <= set(metrics)
    loss.backward()
    assert all(p.grad is None for p in model.backbone_k.parameters())


def test_ema_and_queue_size_check():
    model = _model(K=6)
    with pytest.raises(ConfigError, match="queue_size"):
        model([torch.randn(4, 1, 16, 16)] * 2)  # 8 keys per step > K = 6
    model = _model(m=0.0)
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1.0)
    model.after_step(0, 10)  # m = 0 copies the online encoder
    assert all(torch.equal(a, b) for a, b in
               zip(model.backbone.parameters(), model.backbone_k.parameters()))


def test_pretrains_end_to_end_and_rejects_bad_combinations(tmp_path):
    cfg = load_config("quickstart", [*TINY, "--method.memory", "true",
                                     "--method.moco.queue_size", "128",
                                     "--run.out_dir", str(tmp_path)])
    run = pretrain(cfg)
    assert (run / "checkpoints" / "last.pt").is_file()
    for extra, word in [(["--method.name", "moco"], "SimCLR v2's option"),
                        (["--method.ft.interpolate", "true", "--train.steps", "2"],
                         "not supported")]:
        with pytest.raises(ConfigError, match=word):
            load_config("quickstart", [*TINY, "--method.memory", "true", *extra])
