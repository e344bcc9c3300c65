"""Config: presets, overrides, and one-line errors naming the bad key or value."""

import pytest
import torch

from selfsup.config import Config, load_config, parse_overrides, preset_names, save_config
from selfsup.errors import ConfigError


def test_presets_load():
    names = preset_names()
    for want in ("quickstart", "simclr-fashion-mnist", "simclr-v2-fashion-mnist", "simclr-mnist",
                 "simclr-cifar10",
                 "simclr-stl10"):
        assert want in names
    for n in names:
        assert isinstance(load_config(n), Config)


def test_overrides_are_typed():
    cfg = load_config("quickstart", ["--train.epochs", "3", "--optim.lr=0.5",
                                     "--augment.crop_scale", "[0.2, 1.0]", "--data.root", "x"])
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.5
    assert cfg.augment.crop_scale == (0.2, 1.0) and cfg.data.root == "x"
    assert parse_overrides(["--a.b.c", "true"]) == {"a": {"b": {"c": True}}}


def test_round_trip(tmp_path):
    cfg = load_config("simclr-cifar10", ["--train.batch_size", "64"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("args,match", [
    (["--train.bacth_size", "3"], r"unknown config key train\.bacth_size \(did you mean "
                                  r"train\.batch_size\?\)"),
    (["--nosuch.key", "1"], "unknown config key nosuch"),
    (["--train.batch_size", "big"], "train.batch_size expects int, got 'big'"),
    (["--train.epochs", "2.5"], "train.epochs expects int"),
    (["--optim.lr", "-0.1"], r"optim.lr must be > 0, got -0.1"),
    (["--train.batch_size", "1"], "train.batch_size must be >= 2"),
    (["--method.temperature", "0"], "method.temperature must be > 0"),
    (["--optim.optimizer", "adam"], "optim.optimizer must be lars, sgd or adamw"),
    (["--augment.crop_scale", "0.5"], "augment.crop_scale expects a list of 2"),
    (["--train.epochs"], "missing value for --train.epochs"),
    (["--augment.size", "4"], "augment.size must be >= 8, got 4"),
])
def test_bad_values_give_one_line_errors(args, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config("quickstart", args)
    assert "\n" not in str(e.value)


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown config 'nopreset'"):
        load_config("nopreset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


@pytest.mark.parametrize("args,match", [
    (["--method.ft.alpha_pos", "0"], "method.ft.alpha_pos must be > 0"),
    (["--method.ft.alpha_neg", "-1"], "method.ft.alpha_neg must be > 0"),
    (["--method.ft.lambda_pos", "0.5"], "method.ft.lambda_pos must be >= 1"),
    (["--method.ft.extrapolate", "true", "--method.ft.start_epoch", "40"],
     "ft.start_epoch 40.0 is not before the end of the run"),
    (["--method.ft.granularity", "pixel"], "method.ft.granularity must be batch, sample or dim"),
])
def test_feature_transformation_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        load_config("quickstart", args)


def test_an_empty_section_means_no_keys_and_a_scalar_one_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  # epochs: 5\nmethod:\n  moco:\n")  # both null in YAML
    assert load_config(path, ["--train.epochs", "3"]).train.epochs == 3
    path.write_text("train: 5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: config section train must be a mapping"):
        load_config(path, ["--train.epochs", "3"])  # once silently replaced by the override


@pytest.mark.parametrize("optimizer,lr", [("sgd", 50.0), ("lars", 100.0), ("adamw", 1.0)])
def test_learning_rates_up_to_the_bound_load(optimizer, lr):
    """The bound refuses only what no recipe uses: lr 50 (which trains, see checks.MAX_LR)
    and the bound itself load."""
    cfg = load_config("quickstart", ["--optim.optimizer", optimizer, "--optim.lr", str(lr)])
    assert cfg.optim.lr == lr


def test_every_preset_is_within_the_learning_rate_bound():
    from selfsup.config import base_lr_for
    from selfsup.config.checks import MAX_LR

    for name in preset_names():
        cfg = load_config(name)
        assert base_lr_for(cfg) <= MAX_LR[cfg.optim.optimizer][0] / 10, name


def test_exponent_without_a_dot_is_a_float():
    # YAML 1.1 reads "1e-6" as a string; a float key still takes it
    assert load_config(None, ["--optim.lr", "1e-6"]).optim.lr == 1e-6


def test_config_show_documents_every_key(capsys):
    import yaml

    from selfsup.cli import main
    from selfsup.config import load_config

    assert main(["config", "show", "--config", "simclr-folder", "--train.epochs", "7"]) == 0
    text = capsys.readouterr().out
    lines = [x for x in text.splitlines() if x.startswith("    ") or
             (x.startswith("  ") and not x.rstrip().endswith(":"))]
    assert all("  # " in x for x in lines if not x.strip().endswith(":")), \
        [x for x in lines if "  # " not in x]
    data = yaml.safe_load(text)  # valid YAML, and the values of the resolved config
    assert data["train"]["epochs"] == 7 and data["data"]["dataset"] == "folder"
    cfg = load_config("simclr-folder", ["--train.epochs", "7"])
    assert data["method"]["moco"]["queue_size"] == cfg.method.moco.queue_size


def test_zero_init_residual_reaches_the_backbone():
    from selfsup.experiment import make_backbone

    cfg = load_config("quickstart", ["--model.zero_init_residual", "true"])
    model = make_backbone(cfg, 1)
    assert all(b.bn2.weight.eq(0).all() for b in model.layer1)  # basic blocks' last BN
    assert model.bn1.weight.eq(1).all()


def test_augment_size_sets_only_the_training_views(tmp_path):
    from selfsup.experiment import eval_augmentation, load_data, train_augmentation

    cfg = load_config("quickstart", ["--augment.size", "20"])
    data = load_data(cfg)
    x = data.train.images[:4]
    g = torch.Generator().manual_seed(0)
    assert train_augmentation(cfg, data)(x, g).shape[-2:] == (20, 20)
    assert eval_augmentation(data)(x, g).shape[-2:] == (data.size, data.size) != (20, 20)
