"""The command line: each bad input is one line naming the value or file, exit status 2."""

from __future__ import annotations

import shutil

import pytest

from selfsup.cli import main
from tests.conftest import error_line


@pytest.mark.parametrize("extra,needle", [
    (["--train.bacth_size", "3"], "unknown config key train.bacth_size"),
    (["--train.batch_size", "x"], "train.batch_size expects int, got 'x'"),
    (["--optim.lr", "-1"], "optim.lr must be > 0, got -1.0"),
    (["--train.batch_size", "1"], "train.batch_size must be >= 2"),
    (["--model.backbone", "resnet19"], "resnet19"),
    (["--data.dataset", "imagenet7"], "imagenet7"),
])
def test_config_errors(capsys, tiny_args, extra, needle):
    assert needle in error_line(capsys, ["pretrain", *tiny_args, *extra])


def test_missing_data_root(capsys, tiny_args, tmp_path):
    err = error_line(capsys, ["pretrain", *tiny_args, "--data.dataset", "fashion-mnist",
                               "--data.root", str(tmp_path / "nowhere")])
    assert str(tmp_path / "nowhere") in err


def _copy_fashion(shared_data, dst):
    dst.mkdir()
    for f in (shared_data / "fashion-mnist").glob("*.gz"):
        shutil.copy(f, dst / f.name)
    return dst


def test_truncated_data_file(capsys, tiny_args, tmp_path, shared_data):
    root = _copy_fashion(shared_data, tmp_path / "fm")
    f = root / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:100_000])
    err = error_line(capsys, ["pretrain", *tiny_args, "--data.dataset", "fashion-mnist",
                               "--data.root", str(root)])
    assert "train-images-idx3-ubyte.gz" in err


def test_checksum_mismatch(capsys, tiny_args, tmp_path, shared_data):
    root = _copy_fashion(shared_data, tmp_path / "fm")
    f = root / "train-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    raw[-20] ^= 0xFF  # same size as the official file, different bytes
    f.write_bytes(bytes(raw))
    err = error_line(capsys, ["pretrain", *tiny_args, "--data.dataset", "fashion-mnist",
                               "--data.root", str(root)])
    assert "train-labels-idx1-ubyte.gz" in err and "checksum" in err.lower()


def test_image_folder_with_unreadable_file(capsys, tiny_args, tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (i * 40, 10, 10)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "b" / "broken.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match=r"1 file could not be read and left out; the list "
                      r"with reasons is .*skipped.jsonl"):
        assert main(["pretrain", *tiny_args, "--data.dataset", "folder", "--data.root",
                     str(tmp_path / "imgs"), "--data.limit", "6", "--train.batch_size", "4",
                     "--run.name", "imgs", "--data.cache_dir", str(tmp_path / "cache")]) == 0
    store = next(p for p in (tmp_path / "cache").glob("imgs-*") if p.is_dir())
    skipped = (store / "train" / "skipped.jsonl").read_text()
    assert "broken.png" in skipped and "not an image" in skipped


def test_nan_loss_is_one_line(capsys, tiny_args, nan_backbone):
    err = error_line(capsys, ["pretrain", *tiny_args, "--model.backbone", nan_backbone,
                               "--train.epochs", "4"])
    assert "loss became nan" in err


def test_resume_of_a_non_run(capsys, tmp_path):
    assert "not a selfsup run folder" in error_line(capsys, ["pretrain", "--resume",
                                                              str(tmp_path)])


def test_pretrain_knn_linear_export_round_trip(capsys, tiny_args, tmp_path):
    import torch

    from selfsup import load_backbone
    from selfsup.experiment import load_run_backbone

    assert main(["pretrain", "--config", "quickstart", *tiny_args, "--run.name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    out = capsys.readouterr().out
    assert "run folder" in out
    assert main(["knn", str(run), "--k", "20"]) == 0
    assert "k-NN k=20 T=0.1 on fashion-mnist-sample" in capsys.readouterr().out
    assert main(["linear", str(run), "--epochs", "3"]) == 0
    assert "linear probe" in capsys.readouterr().out
    assert (run / "eval" / "knn-20.json").is_file()
    assert (run / "eval" / "linear-feat.json").is_file()
    assert main(["export", str(run)]) == 0
    backbone = load_backbone(run / "export")
    ref, _, _ = load_run_backbone(run)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(backbone(x), ref(x))
    assert all(not k.startswith(("backbone.", "module.")) for k in backbone.state_dict())
    assert backbone.input_config["channels"] == 1


def test_help_and_presets(capsys):
    for sub in ("pretrain", "knn", "linear", "export", "pack"):
        assert main([sub, "--help"]) == 0
        assert f"usage: selfsup {sub}" in capsys.readouterr().out
    assert main(["presets"]) == 0
    assert "quickstart" in capsys.readouterr().out


def test_files_of_another_data_set_are_refused(capsys, tiny_args, shared_data):
    """--data.dataset mnist pointed at the Fashion-MNIST files: an error, not a warning."""
    err = error_line(capsys, ["pretrain", *tiny_args, "--data.dataset", "mnist",
                               "--data.root", str(shared_data / "fashion-mnist")])
    assert "not the official mnist file" in err and "--data.verify warn" in err


def test_unpacked_files_of_another_data_set_are_refused(capsys, tiny_args, shared_data,
                                                        tmp_path):
    """Decompressed Fashion-MNIST files have MNIST's sizes: only their hash tells them apart."""
    import gzip
    import shutil

    folder = tmp_path / "unpacked"
    folder.mkdir()
    for gz in (shared_data / "fashion-mnist").glob("*.gz"):
        with gzip.open(gz) as src, open(folder / gz.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    err = error_line(capsys, ["pretrain", *tiny_args, "--data.dataset", "mnist",
                               "--data.root", str(folder)])
    assert "sha256 checksum mismatch" in err and "--data.verify warn" in err
    from selfsup.data import load_dataset

    assert len(load_dataset("fashion-mnist", folder, split="test")) == 10_000  # its own name
