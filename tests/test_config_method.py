"""``method.*``: grouped sections, the flat keys of earlier versions, per-method config.yaml."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import yaml
from torch import nn

from selfsup.config import FLAT_KEYS, Config, MethodConfig, load_config, save_config
from selfsup.errors import ConfigError
from selfsup.methods import build_method
from selfsup.models import resnet


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees every deprecation note again (they are given once per key and process)."""
    monkeypatch.setattr("selfsup.config.method._warned", set())


def test_grouped_overrides_and_did_you_mean():
    cfg = load_config("moco-v2-fashion-mnist", ["--method.moco.queue_size", "1024",
                                                "--method.moco.symmetric=true"])
    assert cfg.method.moco.queue_size == 1024 and cfg.method.moco.symmetric
    with pytest.raises(ConfigError, match=r"unknown config key method\.moco\.queue_sise "
                                          r"\(did you mean method\.moco\.queue_size\?\)"):
        load_config("moco-v2-fashion-mnist", ["--method.moco.queue_sise", "1"])


@pytest.mark.parametrize("flat,new", sorted(FLAT_KEYS.items()))
def test_every_flat_key_is_an_alias_with_one_note(flat, new):
    section, key = new.split(".")
    value = dataclasses.asdict(MethodConfig())[section][key]
    with pytest.warns(FutureWarning, match=rf"^method\.{flat} is deprecated; use method\.{new}$"):
        cfg = load_config(None, {"method": {"name": "moco" if section != "jigsaw" else "jigsaw",
                                            flat: value}})
    assert getattr(getattr(cfg.method, section), key) == value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per key
        load_config(None, [f"--method.{flat}", yaml.safe_dump(value).split("\n")[0]])


def test_flat_keys_in_yaml_overrides_and_attributes(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("method:\n  name: moco\n  queue_size: 128\n  ft_extrapolate: true\n"
                   "  momentum_schedule: cosine\n")
    with pytest.warns(FutureWarning):
        cfg = load_config(old)
    assert cfg == load_config(None, ["--method.name", "moco", "--method.moco.queue_size", "128",
                                     "--method.ft.extrapolate", "true",
                                     "--method.moco.momentum_schedule", "cosine"])
    # a later layer's flat key overrides an earlier layer's grouped one, and the other way
    assert load_config("moco-v2-fashion-mnist",
                       ["--method.queue_size", "64"]).method.moco.queue_size == 64
    assert load_config(old, ["--method.moco.queue_size", "32"]).method.moco.queue_size == 32
    with pytest.warns(FutureWarning, match=r"method\.momentum is deprecated"):
        assert cfg.method.momentum == 0.99  # read-only attribute alias
    with pytest.raises(AttributeError):
        _ = cfg.method.no_such_key


def test_one_setting_given_twice_differently_in_one_layer():
    with pytest.raises(ConfigError, match=r"method\.queue_size \(64\) and "
                                          r"method\.moco\.queue_size \(128\) are the same"):
        load_config(None, {"method": {"queue_size": 64, "moco": {"queue_size": 128}}})


@pytest.mark.parametrize("args,sections", [
    (["--config", "jigsaw-fashion-mnist"], {"jigsaw"}),
    (["--config", "quickstart"], {"ft", "memory"}),
    (["--config", "simclr-v2-fashion-mnist", "--method.memory", "true"], {"moco", "ft", "memory"}),
    (["--config", "moco-v2-fashion-mnist"], {"moco", "ft"}),
])
def test_config_yaml_carries_only_its_methods_settings(tmp_path, args, sections):
    # every run gets another method's settings too: they are dropped, and the file loads back
    extra = ["--method.moco.queue_size", "64", "--method.jigsaw.hidden", "32",
             "--method.ft.alpha_neg", "1.0"]
    cfg = load_config(args[1], [*args[2:], *extra])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["method"]
    assert set(saved) - {"name", "temperature"} == sections
    assert load_config(tmp_path / "config.yaml") == cfg
    if "moco" in sections:
        assert saved["moco"]["queue_size"] == 64


def test_a_method_registered_elsewhere_keeps_every_section():
    cfg = load_config(None, ["--method.name", "mine", "--method.moco.momentum", "0.5"])
    assert {"moco", "ft", "jigsaw", "memory"} <= set(cfg.to_dict()["method"])
    assert cfg.method.moco.momentum == 0.5


@pytest.mark.parametrize("name,temperature", [("simclr", 0.5), ("moco", 0.2)])
def test_no_temperature_is_the_methods_own(name, temperature):
    cfg = Config()
    cfg.method.name = name
    assert cfg.method.temperature is None
    model = build_method(cfg, resnet(18, 0.125, "cifar", in_channels=1))
    assert getattr(model, "T", getattr(model, "temperature", None)) == temperature
    memory = load_config(None, ["--method.memory", "true"])
    assert build_method(memory, resnet(18, 0.125, "cifar")).temperature == 0.5


def test_method_checks_are_shared_by_config_and_constructors():
    from selfsup.methods import MoCo
    from selfsup.methods.feature_transform import FeatureTransform

    msg = r"method\.moco\.momentum must be in \[0, 1\], got 1\.5"
    with pytest.raises(ConfigError, match=msg):
        load_config(None, ["--method.moco.momentum", "1.5"])
    with pytest.raises(ConfigError, match=msg):
        MoCo(nn.Identity(), nn.Identity(), momentum=1.5, queue_size=8, out_dim=4)
    msg = r"method\.ft\.granularity must be batch, sample or dim, got 'pixel'"
    with pytest.raises(ConfigError, match=msg):
        load_config(None, ["--method.ft.granularity", "pixel"])
    with pytest.raises(ConfigError, match=msg):
        FeatureTransform(granularity="pixel")
