"""A new method in one file, without touching src/: registered, pretrained and resumed from the CLI.

The toy method is BYOL's objective without its tricks (Grill et al., NeurIPS 2020, eq. 2):
the online network (backbone, head, predictor q) predicts the other view's embedding by a
momentum target network, loss = 2 − 2·cos(q(z1), z2'), symmetrised. It uses only the public
pieces: :class:`Method` (the loop's contract), :class:`MomentumEncoder` and
:func:`register_method`.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from selfsup.cli import main
from selfsup.config import Config, load_config
from selfsup.errors import ConfigError
from selfsup.methods import Method, MomentumEncoder, build_method, register_method
from selfsup.models import ProjectionHead
from selfsup.train.checkpoint import load_checkpoint
from tests.conftest import TINY


class CosineToTarget(Method):
    """Online f, g and predictor q against a momentum copy of (f, g); two views."""

    def __init__(self, backbone: nn.Module, head: nn.Module, out_dim: int, momentum: float,
                 schedule: str = "constant") -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.predictor = nn.Linear(out_dim, out_dim)
        self.target = MomentumEncoder(self.online, momentum, schedule)

    @property
    def online(self) -> nn.Module:
        return nn.Sequential(OrderedDict(backbone=self.backbone, head=self.head))

    def forward(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        n = views[0].shape[0]
        x = torch.cat(views)  # 2N x C x H x W
        p = F.normalize(self.predictor(self.online(x)), dim=1)  # 2N x d
        z = F.normalize(self.target(x), dim=1).roll(n, dims=0)  # 2N x d: the other view's
        loss = (2 - 2 * (p * z).sum(1)).mean()
        return loss, {"loss": loss.detach()}

    def after_step(self, step: int, total_steps: int) -> None:
        self.target.update(self.online, step, total_steps)


@register_method("test_cosine_target")
def build_cosine_target(cfg: Config, backbone: nn.Module) -> Method:
    m, mo = cfg.model, cfg.method.moco  # the momentum settings of MoCo's section
    d = backbone.feature_dim
    head = ProjectionHead(d, m.head_hidden or d, m.out_dim, num_layers=m.head_layers)
    return CosineToTarget(backbone, head, m.out_dim, mo.momentum, mo.momentum_schedule)


def _pretrain(*args: str) -> None:
    assert main(["pretrain", *args]) == 0


def test_custom_method_pretrains_and_resumes_from_the_cli(tmp_path):
    # constant lr and momentum: 2 steps + a resume to 4 must equal 4 steps in one go
    common = [*TINY, "--method.name", "test_cosine_target", "--method.moco.momentum", "0.9",
              "--optim.schedule", "constant", "--run.out_dir", str(tmp_path)]
    _pretrain("--config", "quickstart", *common, "--train.steps", "4", "--run.name", "straight")
    _pretrain("--config", "quickstart", *common, "--train.steps", "2", "--run.name", "halves")
    first = load_checkpoint(tmp_path / "halves" / "checkpoints" / "last.pt")
    _pretrain("--resume", str(tmp_path / "halves"), "--train.steps", "4")

    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "halves" / "checkpoints" / "last.pt")
    assert first["step"] == 2 and a["step"] == b["step"] == 4
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for k, s in a["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    # the loop called after_step: the target moved, and lags behind the online network
    key = "backbone.conv1.weight"
    target, online = b["model"][f"target.encoder.{key}"], b["model"][key]
    assert not torch.equal(target, first["model"][f"target.encoder.{key}"])
    assert not torch.equal(target, online)
    # the run folder's config names the method; its settings sections are all kept
    saved = yaml.safe_load((tmp_path / "halves" / "config.yaml").read_text())
    assert saved["method"]["name"] == "test_cosine_target"
    assert saved["method"]["moco"]["momentum"] == 0.9


def test_registry_refuses_a_taken_name_and_lists_the_known_ones():
    with pytest.raises(ConfigError, match="'simclr' is already registered"):
        register_method("simclr")(build_cosine_target)
    cfg = load_config("quickstart", ["--method.name", "nosuch"])
    with pytest.raises(ConfigError, match=r"unknown method.name 'nosuch'; known: .*jigsaw, "
                                          r"moco, simclr, test_cosine_target"):
        build_method(cfg, nn.Identity())


def test_the_installed_cli_takes_the_method_file_as_a_plugin(tmp_path):
    """``selfsup --plugin FILE`` imports a user's file of registrations: the same method,
    trained by the real command line in a new process (this file is the plugin)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "selfsup", "--plugin", __file__, "pretrain", "--config",
           "quickstart", *TINY, "--method.name", "test_cosine_target", "--train.steps", "2",
           "--run.out_dir", str(tmp_path), "--run.name", "plug", "--train.num_threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert load_checkpoint(tmp_path / "plug" / "checkpoints" / "last.pt")["step"] == 2
    bad = subprocess.run([sys.executable, "-m", "selfsup", "--plugin", str(tmp_path / "no.py"),
                          "presets"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: --plugin {tmp_path}/no.py: " \
        "no such file"
