"""MoCo: queue FIFO with wrap-around, momentum update, buffers, errors, a tiny ResNet step."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.losses import info_nce
from selfsup.methods import MoCo, build_method
from selfsup.models import ProjectionHead, resnet
from selfsup.train.logging import read_jsonl
from selfsup.train.pretrain import pretrain
from tests.methods.tiny_moco import tiny_moco, views


def params(*modules: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_queue_is_fifo_and_wraps_around():
    model = tiny_moco(queue_size=10)
    q0 = model.queue.clone()
    k1, k2, k3 = (torch.arange(12.0).view(4, 3) + 100 * i for i in (1, 2, 3))  # 4 x 3 each
    model.dictionary.enqueue(k1)
    assert model.queue_ptr.item() == 4
    torch.testing.assert_close(model.queue, torch.cat([k1, q0[4:]]), rtol=0, atol=0)
    model.dictionary.enqueue(k2)
    assert model.queue_ptr.item() == 8
    model.dictionary.enqueue(k3)
    assert model.queue_ptr.item() == 2  # 12 mod 10
    expected = torch.cat([k3[2:], k1[2:], k2, k3[:2]])  # rows 0..9
    torch.testing.assert_close(model.queue, expected, rtol=0, atol=0)


def test_forward_enqueues_normalised_keys_and_pointer_moves_by_batch_mod_k():
    model = tiny_moco(queue_size=10).train()
    for step, want_ptr in enumerate([4, 8, 2, 6]):
        v = views(seed=step)
        with torch.no_grad():
            k = F.normalize(model.head_k(model.backbone_k(v[1])), dim=1)
        model(v)
        assert model.queue_ptr.item() == want_ptr
        rows = [(want_ptr - 4 + i) % 10 for i in range(4)]
        torch.testing.assert_close(model.queue[rows], k)


def test_loss_and_metrics_match_explicit_computation():
    model = tiny_moco(queue_size=16).train()
    queue = model.queue.clone()
    v = views(seed=3)
    loss, metrics = model(v)
    with torch.no_grad():
        q = F.normalize(model.head(model.backbone(v[0])), dim=1)
        k = F.normalize(model.head_k(model.backbone_k(v[1])), dim=1)
    torch.testing.assert_close(loss, info_nce(q, k, queue, 0.2))
    scores = q @ queue.T  # N x K
    torch.testing.assert_close(metrics["loss"], loss.detach())
    torch.testing.assert_close(metrics["pos_sim"], (q * k).sum(1).mean())
    torch.testing.assert_close(metrics["neg_sim"], scores.mean())
    torch.testing.assert_close(metrics["neg_var"], scores.var(dim=1).mean())  # per query
    assert all(isinstance(t, torch.Tensor) and not t.requires_grad for t in metrics.values())


def test_symmetric_enqueues_both_key_batches():
    model = tiny_moco(queue_size=10, symmetric=True).train()
    loss, metrics = model(views())
    assert model.queue_ptr.item() == 8 and torch.isfinite(loss)
    with pytest.raises(ConfigError, match=r"queue_size K=6 .*2 x the global batch 4"):
        tiny_moco(queue_size=6, symmetric=True)(views())


def test_eval_mode_does_not_touch_the_queue():
    model = tiny_moco().eval()
    queue, ptr = model.queue.clone(), model.queue_ptr.clone()
    loss, _ = model(views())
    assert torch.isfinite(loss)
    assert torch.equal(model.queue, queue) and torch.equal(model.queue_ptr, ptr)


def test_key_encoder_starts_as_exact_copy_without_gradient():
    model = tiny_moco()
    for a, b in zip(params(model.backbone, model.head), params(model.backbone_k, model.head_k)):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in model.encoder_k.parameters())
    loss, _ = model.train()(views())
    loss.backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert all(p.grad is not None for p in model.encoder_q.parameters())


def _perturb_query(model: MoCo) -> None:
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(torch.randn_like(p))


def test_momentum_zero_copies_one_freezes():
    model = tiny_moco(momentum=0.0)
    _perturb_query(model)
    model.after_step(0, 10)
    for a, b in zip(params(model.encoder_q), params(model.encoder_k)):
        assert torch.equal(a, b)
    model = tiny_moco(momentum=1.0)
    before = params(model.encoder_k)
    _perturb_query(model)
    model.after_step(0, 10)
    for a, b in zip(before, params(model.encoder_k)):
        assert torch.equal(a, b)


def test_ema_matches_formula():
    model = tiny_moco(momentum=0.7)
    _perturb_query(model)
    k_old, q = params(model.encoder_k), params(model.encoder_q)
    model.after_step(3, 10)
    for new, ko, qq in zip(params(model.encoder_k), k_old, q):
        torch.testing.assert_close(new, 0.7 * ko + 0.3 * qq, rtol=1e-6, atol=1e-7)


def test_cosine_momentum_schedule():
    model = tiny_moco(momentum=0.9, momentum_schedule="cosine")
    assert model.momentum_at(0, 100) == pytest.approx(0.9)
    assert model.momentum_at(50, 100) == pytest.approx(0.95)
    assert model.momentum_at(100, 100) == pytest.approx(1.0)
    assert tiny_moco(momentum=0.9).momentum_at(50, 100) == 0.9


def test_queue_and_pointer_are_buffers():
    model = tiny_moco()
    state = model.state_dict()
    assert state["dictionary.queue"].shape == (10, 3)
    assert state["dictionary.ptr"].dtype == torch.long
    assert "queue" not in dict(model.named_parameters())
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(10))
    model.train()(views())
    other = tiny_moco()
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.queue, model.queue) and other.queue_ptr.item() == 4
    model.to(torch.float64)
    assert model.queue.dtype == torch.float64 and model.queue_ptr.dtype == torch.long
    model.to("meta")
    assert model.queue.device.type == "meta" and model.queue_ptr.device.type == "meta"


@pytest.mark.parametrize("kw,match", [
    (dict(momentum=-0.1), "momentum"), (dict(momentum=1.5), "momentum"),
    (dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(queue_size=0), "queue_size"), (dict(shuffle_bn="sync"), "shuffle_bn"),
    (dict(momentum_schedule="linear"), "momentum_schedule"), (dict(bn_groups=0), "bn_groups"),
])
def test_bad_settings_raise_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        tiny_moco(**kw)


def test_queue_smaller_than_batch_names_both():
    with pytest.raises(ConfigError, match=r"queue_size K=3 .*global batch 4"):
        tiny_moco(queue_size=3).train()(views(4))


def test_ddp_shuffle_needs_a_process_group():
    with pytest.raises(ConfigError, match="process group"):
        tiny_moco(shuffle_bn="ddp").train()(views())


def test_check_dataset_size_warns_when_queue_exceeds_data():
    with pytest.warns(UserWarning, match="queue_size K=10 exceeds the 8 training images"):
        tiny_moco().check_dataset_size(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_moco().check_dataset_size(10)


@pytest.mark.parametrize("symmetric", [False, True])
def test_tiny_resnet_step_is_finite(symmetric):
    torch.manual_seed(0)
    backbone = resnet(18, 0.125, "cifar", in_channels=1)
    d = backbone.feature_dim
    head = ProjectionHead(d, d, 16, 2, hidden_bn=False)
    model = MoCo(backbone, head, temperature=0.2, momentum=0.99, queue_size=32,
                 symmetric=symmetric, bn_groups=4).train()
    x = [torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)]
    loss, metrics = model(x)
    loss.backward()
    assert torch.isfinite(loss) and set(metrics) == {"loss", "pos_sim", "neg_sim", "neg_var",
                                                     "pos_hist", "neg_hist"}
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert backbone.conv1.weight.grad is not None
    model.after_step(0, 10)


@pytest.mark.parametrize("preset,layers", [("moco-v1-fashion-mnist", 1),
                                           ("moco-v2-fashion-mnist", 2), ("moco-v2-cifar10", 2)])
def test_presets_build_moco_heads(preset, layers):
    cfg = load_config(preset)
    model = build_method(cfg, resnet(18, 0.125, "cifar", in_channels=1))
    assert isinstance(model, MoCo) and model.K == cfg.method.moco.queue_size == 4096
    assert model.m == 0.99 and model.T == cfg.method.temperature
    assert len(model.head.layers) == layers and model.queue.shape == (4096, 128)
    kinds = [type(m) for m in model.head.modules() if isinstance(m, (nn.Linear, nn.ReLU,
                                                                      nn.BatchNorm1d))]
    # MoCo v1: a linear fc; v2: Linear-ReLU-Linear, no BN
    assert kinds == ([nn.Linear] if layers == 1 else [nn.Linear, nn.ReLU, nn.Linear])


def test_pretrain_loop_runs_moco(tiny_args):
    # the simclr recipe: the loop's contract (after_step, metrics, dataset check) is under test
    cfg = load_config("quickstart", [*tiny_args, "--method.name", "moco",
                                     "--method.moco.queue_size", "64", "--train.epochs", "1"])
    run = pretrain(cfg)
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert len(records) == 4 and all(r["neg_var"] >= 0 for r in records)
