"""A resume trains on the same images wherever they now live; a config changed in Python is
checked; a resume with nothing to do records nothing; every file a run writes gets the user's
umask (issue 23 items 2 to 4)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.data import load_dataset
from selfsup.data.pack import pack_folder
from selfsup.errors import ConfigError
from selfsup.export import export_run
from selfsup.train.checkpoint import atomic_save, load_checkpoint
from selfsup.train.logging import read_jsonl
from selfsup.train.pretrain import pretrain
from selfsup.train.resume import data_identity
from tests.conftest import error_line


def _photos(root: Path, seed: int) -> Path:
    """train/ + test/, two classes of 8 + 2 gray 16 px PNGs."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", 8), ("test", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16), np.uint8)).save(
                    root / split / cls / f"{i}.png")
    return root


def _folder_run(tmp_path: Path, root: Path) -> Path:
    assert main(["pretrain", "--config", "quickstart", "--model.width", "0.125",
                 "--train.batch_size", "8", "--train.epochs", "1", "--eval.knn_every", "-1",
                 "--run.progress", "false", "--train.num_threads", "1", "--data.dataset",
                 "folder", "--data.root", str(root), "--data.cache_dir",
                 str(tmp_path / "cache"), "--run.out_dir", str(tmp_path / "runs"),
                 "--run.name", "r"]) == 0
    return tmp_path / "runs" / "r"


def test_resume_on_other_images_is_refused_naming_both(tmp_path, capsys):
    ours, other = _photos(tmp_path / "ours", 0), _photos(tmp_path / "other", 1)
    run = _folder_run(tmp_path, ours)
    capsys.readouterr()
    err = error_line(capsys, ["pretrain", "--resume", str(run), "--data.root", str(other),
                              "--train.epochs", "2"])
    ours, other = ours.resolve(), other.resolve()
    assert f"trained on 16 images in {ours}; data.root now holds 16 images in {other}" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2  # untouched
    assert not (run / "resumes.jsonl").exists()


def test_moved_data_resumes(tmp_path):
    ours = _photos(tmp_path / "ours", 0)
    run = _folder_run(tmp_path, ours)
    moved = tmp_path / "elsewhere" / "photos"
    shutil.copytree(ours, moved, copy_function=shutil.copyfile)  # new paths, new mtimes
    shutil.rmtree(ours)
    assert main(["pretrain", "--resume", str(run), "--data.root", str(moved),
                 "--train.epochs", "2"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert read_jsonl(run / "resumes.jsonl")[-1]["changes"]["data.root"]["now"] == str(moved)


def test_a_checkpoint_without_the_record_resumes_unchecked(tmp_path):
    ours, other = _photos(tmp_path / "ours", 0), _photos(tmp_path / "other", 1)
    run = _folder_run(tmp_path, ours)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    del ckpt["data"]  # as written by earlier versions
    atomic_save(ckpt, run / "checkpoints" / "last.pt")
    assert main(["pretrain", "--resume", str(run), "--data.root", str(other),
                 "--train.epochs", "2"]) == 0


def test_identity_of_a_moved_store_and_of_built_in_sets(tmp_path):
    store = pack_folder(_photos(tmp_path / "photos", 0), tmp_path / "store", 16, workers=1,
                        progress=False)
    moved = shutil.copytree(store, tmp_path / "moved")
    cfgs = [load_config("quickstart", ["--data.dataset", "store", "--data.root", str(p)])
            for p in (store, moved)]
    ids = [data_identity(c, load_dataset("store", c.data.root)) for c in cfgs]
    assert ids[0]["root"] != ids[1]["root"] and ids[0]["sha256"] == ids[1]["sha256"]

    cfg = load_config("quickstart")
    sample = load_dataset("fashion-mnist-sample")
    assert data_identity(cfg, sample)["kind"] == "official files"
    cfg.data.verify = False  # nothing verified: the pixels themselves
    plain = data_identity(cfg, sample)
    sample.images[7, 0, 3, 3] ^= 1
    changed = data_identity(cfg, sample)
    assert plain["kind"] == "pixels" and plain["sha256"] != changed["sha256"]
    assert data_identity(cfg, sample.head(100))["images"] == 100


def test_pretrain_validates_a_config_changed_in_python(tiny_args, tmp_path):
    cfg = load_config("quickstart", tiny_args)
    cfg.train.epochs = -1
    with pytest.raises(ConfigError, match="train.epochs must be >= 1, got -1"):
        pretrain(cfg)
    assert not (tmp_path / "runs").exists()


def test_resuming_a_finished_run_appends_no_record(tiny_args, tmp_path):
    assert main(["pretrain", *tiny_args, "--run.name", "done"]) == 0
    run = tmp_path / "runs" / "done"
    for _ in range(2):
        assert main(["pretrain", "--resume", str(run)]) == 0
    assert not (run / "resumes.jsonl").exists()
    assert main(["pretrain", "--resume", str(run), "--train.epochs", "3"]) == 0
    assert [r["step"] for r in read_jsonl(run / "resumes.jsonl")] == [8]
    assert main(["pretrain", "--resume", str(run), "--train.epochs", "3"]) == 0
    assert len(read_jsonl(run / "resumes.jsonl")) == 1


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_every_file_gets_the_umask(tiny_args, umask, mode):
    old = os.umask(umask)
    try:
        cfg = load_config("quickstart", [*tiny_args, "--eval.knn_every", "0",
                                         "--run.checkpoint_every", "1"])
        run = pretrain(cfg)
        # back to the end of epoch 1: the resume rewrites metrics.jsonl and scores.jsonl
        shutil.copyfile(run / "checkpoints" / "epoch_0001.pt", run / "checkpoints" / "last.pt")
        pretrain(cfg, run_dir=run, resume=True)
        assert read_jsonl(run / "resumes.jsonl")[-1]["step"] == 4
        export_run(run)
        modes = _modes(run)
    finally:
        os.umask(old)
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "scores.jsonl",
                 "resumes.jsonl", "checkpoints/last.pt", "checkpoints/epoch_0002.pt",
                 "export/model.safetensors", "export/config.json"):
        assert name in modes, sorted(modes)
    assert {name: m for name, m in modes.items() if m != mode} == {}
