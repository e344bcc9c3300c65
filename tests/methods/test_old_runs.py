"""Run folders of earlier versions resume: flat ``method.*`` keys in their config.yaml and the
key encoder / queue under their old state-dict names (``backbone_k.``, ``queue``, ...)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import yaml

from selfsup.cli import main
from selfsup.config import FLAT_KEYS, load_config
from selfsup.methods import MoCo, SimCLRMemory
from selfsup.models import ProjectionHead, resnet
from selfsup.train.checkpoint import load_checkpoint
from tests.conftest import TINY

OLD_NAMES = {"encoder_k.encoder.backbone.": "backbone_k.", "encoder_k.encoder.head.": "head_k.",
             "dictionary.queue": "queue", "dictionary.ptr": "queue_ptr"}


def _old_key(key: str) -> str:
    for new, old in OLD_NAMES.items():
        if key == new or (new.endswith(".") and key.startswith(new)):
            return old + key[len(new):]
    return key


def _make_old(run) -> None:
    """Rewrite a run folder as an earlier version wrote it: flat keys, every setting."""
    cfg = load_config(run / "config.yaml")
    data = cfg.to_dict()
    full = dataclasses.asdict(cfg.method)
    data["method"] = {"name": full["name"], "temperature": full["temperature"],
                      "memory": full["memory"],
                      **{flat: full[new.split(".")[0]][new.split(".")[1]]
                         for flat, new in FLAT_KEYS.items()}}
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    path = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    ckpt["model"] = {_old_key(k): v for k, v in ckpt["model"].items()}
    torch.save(ckpt, path)


@pytest.mark.parametrize("method", [["--method.name", "moco"], ["--method.memory", "true"]])
def test_an_old_run_folder_resumes_bit_identically(tmp_path, method, monkeypatch):
    monkeypatch.setattr("selfsup.config.method._warned", set())
    common = [*TINY, *method, "--method.moco.queue_size", "64", "--optim.schedule", "constant",
              "--run.out_dir", str(tmp_path)]
    assert main(["pretrain", *common, "--train.steps", "4", "--run.name", "straight"]) == 0
    assert main(["pretrain", *common, "--train.steps", "2", "--run.name", "old"]) == 0
    _make_old(tmp_path / "old")
    assert "backbone_k.conv1.weight" in load_checkpoint(
        tmp_path / "old" / "checkpoints" / "last.pt")["model"]
    with pytest.warns(FutureWarning, match=r"method\.queue_size is deprecated; use "
                                           r"method\.moco\.queue_size"):
        assert main(["pretrain", "--resume", str(tmp_path / "old"), "--train.steps", "4"]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "old" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the resume wrote the run's config in the grouped form
    saved = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())["method"]
    assert saved["moco"]["queue_size"] == 64 and "queue_size" not in saved


@pytest.mark.parametrize("cls", [MoCo, SimCLRMemory])
def test_old_state_dict_names_load_into_the_composed_modules(cls):
    def build() -> torch.nn.Module:
        backbone = resnet(18, 0.125, "cifar", in_channels=1)
        head = ProjectionHead(backbone.feature_dim, 16, 8, num_layers=2)
        return cls(backbone, head, momentum=0.9, queue_size=16, out_dim=8)

    torch.manual_seed(0)
    model = build()
    model.after_step(0, 1)
    old = {_old_key(k): v for k, v in model.state_dict().items()}
    assert "queue_ptr" in old and "head_k.layers.0.0.weight" in old
    torch.manual_seed(1)
    other = build()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other.load_state_dict(old)  # strict: every old name has its new place
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in model.state_dict().items())
