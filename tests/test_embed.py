"""selfsup embed and load_backbone(...).preprocess: the same vectors as the exported model."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.data import load_dataset
from selfsup.embed import embed
from selfsup.errors import ConfigError, DataError
from selfsup.export import export_run, load_backbone, preprocess
from selfsup.train.pretrain import pretrain
from tests.conftest import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run = pretrain(load_config("quickstart", [*TINY, "--run.out_dir", str(out),
                                              "--optim.warmup_epochs", "0"]))
    export_run(run)
    return run


def _rows(path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_sample_round_trip_matches_the_export(run, tmp_path):
    out = tmp_path / "e" / "test.npy"
    assert main([
        "embed", str(run), "fashion-mnist-sample", "--split", "test", "--out", str(out),
        "--device", "cpu", "--batch-size", "64", "--no-progress"]) == 0
    test = load_dataset("fashion-mnist-sample", split="test")
    h = np.load(out)
    assert h.shape == (400, 64) and h.dtype == np.float32  # resnet18 w0.125: 512 / 8
    rows = _rows(tmp_path / "e" / "test.files.txt")
    assert [r[0] for r in rows] == [str(i) for i in range(400)]
    assert [r[1] for r in rows] == [test.classes[i] for i in test.labels.tolist()]
    backbone = load_backbone(run / "export")
    with torch.no_grad():
        ref = backbone(backbone.preprocess(test.images))
    np.testing.assert_allclose(h, ref.numpy(), atol=1e-5, rtol=0)
    # the export folder embeds the same
    embed(run / "export", "fashion-mnist-sample", tmp_path / "x.npy", split="test",
          progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), h, atol=1e-5, rtol=0)


def _folder(root, images) -> None:
    """Two class folders of the sample's 28 px gray images, one colour image and one larger,
    non-square image (packing squares and resizes both)."""
    for i, img in enumerate(images[:10]):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(root / "ab"[i % 2] / f"{i}.png")
    rgb = np.stack([images[10, 0].numpy(), images[11, 0].numpy(), images[12, 0].numpy()], -1)
    Image.fromarray(rgb).save(root / "a" / "colour.png")
    big = np.kron(images[13, 0].numpy(), np.ones((3, 2), np.uint8))  # 84 x 56
    Image.fromarray(big).save(root / "b" / "wide.png")


def test_folder_round_trip_matches_preprocess(run, tmp_path):
    test = load_dataset("fashion-mnist-sample", split="test")
    _folder(tmp_path / "photos", test.images)
    out = tmp_path / "photos.npy"
    written, n, dim = embed(run, str(tmp_path / "photos"), out, progress=False)
    assert n == 12 and dim == 64 and written == [out, tmp_path / "photos.files.txt"]
    rows = _rows(tmp_path / "photos.files.txt")
    names = sorted(f"{c}/{i}.png" for i in range(10) for c in "ab"[i % 2])
    assert sorted(r[0] for r in rows) == sorted([*names, "a/colour.png", "b/wide.png"])
    assert all(r[1] == r[0].split("/")[0] for r in rows)  # the class folder's name
    backbone = load_backbone(run / "export")
    pictures = [Image.open(tmp_path / "photos" / r[0]) for r in rows]
    with torch.no_grad():
        ref = backbone(backbone.preprocess(pictures))
    np.testing.assert_allclose(np.load(out), ref.numpy(), atol=1e-5, rtol=0)


def test_head_gives_z_of_the_head_dimension(run, tmp_path):
    out = tmp_path / "z.csv"
    _, n, dim = embed(run, "fashion-mnist-sample", out, head=True, split="test",
                      progress=False)
    with open(out) as f:
        table = list(csv.reader(f))
    header, body = table[0], table[1:]
    assert n == 400 and dim == 128 and len(body) == 400  # the quickstart head's out_dim
    assert header[:3] == ["file", "label", "z0"] and len(header) == 2 + 128
    assert body[0][1] in load_dataset("fashion-mnist-sample", split="test").classes
    with pytest.raises(ConfigError, match="needs a run folder"):
        embed(run / "export", "fashion-mnist-sample", tmp_path / "e.npy", head=True)


def test_clear_errors(run, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such run"):
        embed(tmp_path / "missing", "fashion-mnist-sample", tmp_path / "a.npy")
    with pytest.raises(DataError, match="known data set"):
        embed(run, "no-such-set", tmp_path / "a.npy")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot write the embeddings .*file is a file"):
        embed(run, "fashion-mnist-sample", tmp_path / "file" / "a.npy")
    with pytest.raises(ConfigError, match="--device must be auto, cpu"):
        embed(run, "fashion-mnist-sample", tmp_path / "a.npy", device="tpu")
    with pytest.raises(DataError, match="known data set"):  # the folder is made only to write
        embed(run, "no-such-set", tmp_path / "new" / "a.npy")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="must end in"):
        embed(run, "fashion-mnist-sample", tmp_path / "a.txt")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install pyarrow"):
        embed(run, "fashion-mnist-sample", tmp_path / "a.parquet")
    assert not list(tmp_path.glob("a.*"))


def test_an_existing_output_is_replaced_only_with_overwrite(run, tmp_path, capsys):
    """Issue 23: ``X.files.txt`` (maybe the user's own) was silently replaced."""
    mine = tmp_path / "e.files.txt"
    mine.write_text("the user's notes\n")
    with pytest.raises(ConfigError, match=r"e\.files\.txt: already exists; .*--overwrite"):
        embed(run, "fashion-mnist-sample", tmp_path / "e.npy", split="test", progress=False)
    assert mine.read_text() == "the user's notes\n" and not (tmp_path / "e.npy").exists()
    argv = ["embed", str(run), "fashion-mnist-sample", "--split", "test", "--out",
            str(tmp_path / "e.npy"), "--device", "cpu", "--no-progress"]
    assert main([*argv, "--overwrite"]) == 0
    assert len(_rows(mine)) == 400 and np.load(tmp_path / "e.npy").shape == (400, 64)
    capsys.readouterr()
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err  # ours, too
    assert len(_rows(mine)) == 400


@pytest.mark.parametrize("bad", ["a\tb.png", "two\nlines.png", "cr\r.png", "ls\u2028.png"])
def test_a_name_that_would_split_its_row_is_refused(run, tmp_path, monkeypatch, bad):
    import selfsup.embed as embed_module

    def names(images):
        files, labels = [f"{i}.png" for i in range(len(images))], None
        files[7] = bad
        return files, labels

    monkeypatch.setattr(embed_module, "row_names", names)
    with pytest.raises(DataError, match=r"e\.files\.txt: the name .* holds a tab or line "
                                        r"break .*write \.csv or \.parquet"):
        embed(run, "fashion-mnist-sample", tmp_path / "e.npy", split="test", progress=False)
    assert list(tmp_path.iterdir()) == []
    # CSV quotes the name: it reads back whole
    embed(run, "fashion-mnist-sample", tmp_path / "e.csv", split="test", progress=False)
    with open(tmp_path / "e.csv", newline="") as f:
        assert list(csv.reader(f))[8][0] == bad


def test_a_failed_write_leaves_nothing(run, tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "new" / "deeper" / "e.npy"
    with pytest.raises(DataError, match="e.npy: cannot write the embeddings \\(No space left"):
        embed(run, "fashion-mnist-sample", out, split="test", progress=False)
    assert list(tmp_path.iterdir()) == []  # no half file, no temporary, no folder we made


def test_preprocess_takes_tensors_arrays_and_pil_images(run):
    backbone = load_backbone(run / "export")
    x = load_dataset("fashion-mnist-sample", split="test").images[:4]  # uint8 4 x 1 x 28 x 28
    ref = preprocess(backbone, x)
    assert ref.shape == (4, 1, 28, 28) and ref.dtype == torch.float32
    hwc = x.permute(0, 2, 3, 1).numpy()
    for same in (backbone.preprocess(hwc), backbone.preprocess(list(x)),
                 backbone.preprocess([Image.fromarray(a[..., 0]) for a in hwc]),
                 preprocess(backbone.input_config, x)):
        torch.testing.assert_close(same, ref, atol=0, rtol=0)
    colour = preprocess(backbone, x.expand(-1, 3, -1, -1))  # a gray model takes the luma
    torch.testing.assert_close(colour, ref, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="uint8"):
        backbone.preprocess(x.float())
