"""Embeddings of every image of a folder, a packed store or a named data set, to a file.

"we use h ... not z" (SimCLR §2.1): the backbone's features h by default, the projection
head's z on request. Each image goes through the network's own eval transform (resize to
the trained side, the training normalisation; channels matched as every stage matches
them), the same as :func:`selfsup.export.preprocess`, so an embedding written here equals
``backbone(backbone.preprocess(image))`` of the exported model. Written as

* ``FILE.npy`` (float32, N x D) + ``FILE.files.txt``: one row per image, the source file
  (folders, stores) or the index (named data sets), then a tab and the label when known;
* ``FILE.csv``: a header ``file,label,h0..h{D-1}`` (``z0..`` with the head), one row each;
* ``FILE.parquet`` (needs pyarrow): columns ``file``, ``label``, ``embedding`` (list of D).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from selfsup.cluster.teacher import Teacher, layer_features, load_teacher
from selfsup.data import DATASETS, ImageSet, load_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.experiment import check_device, resolve_device
from selfsup.outputs import check_out, make_folder, remove_made

FORMATS = (".npy", ".csv", ".parquet")


class _WithHead(nn.Module):
    """z = g(f(x)): the backbone, then the projection head of a pretraining method."""

    def __init__(self, backbone: nn.Module, head: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone, self.head, self.feature_dim = backbone, head, dim

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))  # N x d


def head_teacher(teacher: Teacher, run: Path) -> Teacher:
    """The teacher with its network replaced by head(backbone): a pretraining run only."""
    from selfsup.stages import Encoder, pretrained_model

    if teacher.cfg is None:
        raise ConfigError(f"{run}: --head needs a run folder (an export holds the backbone "
                          "alone)")
    model, _, _ = pretrained_model(run)
    head = getattr(model, "head", None)
    if isinstance(model, Encoder) or head is None or not hasattr(head, "dims"):
        what = "a later stage's run" if isinstance(model, Encoder) else model.__class__.__name__
        raise ConfigError(f"{run}: --head: {what} has no projection head to embed with")
    return replace(teacher, backbone=_WithHead(model.backbone, head, head.dims[-1]).eval())


def open_images(data: str, size: int, *, root: str | None = None, split: str = "train",
                teacher: Teacher | None = None, progress: bool = True) -> ImageSet:
    """``data``: a packed store (a folder with meta.json), an image folder (packed through the
    store cache at ``size`` px, like ``data.dataset: folder``) or a data set's name."""
    path = Path(data).expanduser()
    if path.is_dir():
        kind = "store" if (path / "meta.json").is_file() else "folder"
        return load_dataset(kind, path, split=split, size=size if kind == "folder" else None,
                            progress=progress)
    if data in DATASETS and data not in ("folder", "store"):
        own = teacher.cfg.data if teacher is not None and teacher.cfg is not None else None
        if root is None and own is not None and own.dataset == data:
            root = own.root  # the run's own data set: where the run read it
        return load_dataset(data, root, split=split)
    known = ", ".join(n for n in sorted(DATASETS) if n not in ("folder", "store"))
    raise DataError(f"{data}: neither an image folder, a packed store (meta.json) nor a known "
                    f"data set ({known})")


def side_file(out: Path) -> Path:
    """``X.files.txt``: the rows of ``X.npy``."""
    return out.with_name(out.name.removesuffix(".npy") + ".files.txt")


def outputs(out: Path) -> list[Path]:
    """Every file writing ``out`` makes: ``X.npy`` comes with ``X.files.txt``."""
    return [out, side_file(out)] if out.suffix == ".npy" else [out]


def _refuse_existing(out: Path) -> None:
    for path in outputs(out):
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path}: already exists; selfsup replaces a file only with "
                              "--overwrite (it may be yours)")


def check_output(out: Path, overwrite: bool = False) -> None:
    """Refuse an output we could not or must not write, before any image is read and
    creating nothing (one line): a wrong suffix, a folder or a file below a regular file, a
    read-only place, or (without ``overwrite``) a file that exists already: issue 23 found
    ``X.files.txt`` silently replaced."""
    if out.suffix not in FORMATS:
        raise ConfigError(f"{out}: the output must end in {', '.join(FORMATS)}")
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(f"{out}: writing parquet needs pyarrow (pip install pyarrow); "
                              "or write .npy or .csv") from None
    for path in outputs(out):
        check_out(path, "the embeddings", folder=False)
    if not overwrite:
        _refuse_existing(out)


# what splits a line of X.files.txt: its tab, and every line break str.splitlines knows
_BREAKS = re.compile("[\t\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


def check_rows(out: Path, files: list[str], labels: list[str] | None) -> None:
    """A file or class name with a tab or line break would make ``X.files.txt`` ambiguous
    (one row per line, a tab before the label): refused before the features are computed.
    CSV and parquet quote such names, so they are the way out."""
    if out.suffix != ".npy":
        return
    for names in (files, labels or []):
        if _BREAKS.search("\0".join(names)):  # one pass over a million names; then which
            bad = next(n for n in names if _BREAKS.search(n))
            raise DataError(f"{side_file(out)}: the name {bad[:80]!r} holds a tab or line break "
                            "and would split its row; write .csv or .parquet instead")


def row_names(images: ImageSet) -> tuple[list[str], list[str] | None]:
    """The source file (or index) and the label (class name when known) of every image."""
    files = images.files or [str(i) for i in range(len(images))]
    if images.labels is None:
        return files, None
    classes = images.classes
    return files, [classes[i] if i < len(classes) else str(i) for i in images.labels.tolist()]


def _write_npy(tmp: Path, side_tmp: Path, vectors: np.ndarray, files: list[str],
               labels: list[str] | None) -> None:
    with open(tmp, "wb") as f:
        np.save(f, vectors)
    rows = files if labels is None else [f"{f}\t{la}" for f, la in zip(files, labels)]
    side_tmp.write_text("".join(f"{r}\n" for r in rows))


def _write_csv(tmp: Path, vectors: np.ndarray, files: list[str], labels: list[str] | None,
               prefix: str) -> None:
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", *(f"{prefix}{j}" for j in range(vectors.shape[1]))])
        for i, v in enumerate(vectors):
            w.writerow([files[i], "" if labels is None else labels[i], *(f"{x:.8g}" for x in v)])


def _write_parquet(tmp: Path, vectors: np.ndarray, files: list[str],
                   labels: list[str] | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table({"file": files, "label": labels or [None] * len(files),
                             "embedding": emb}), tmp)


def write_embeddings(out: Path, vectors: np.ndarray, files: list[str],
                     labels: list[str] | None, prefix: str = "h", *,
                     overwrite: bool = False) -> list[Path]:
    """Write ``vectors`` (N x D float32) in the format named by ``out``'s suffix.

    Every file goes to a temporary beside it first and is renamed only when all are written,
    so a failure leaves neither half a file nor a folder this call created."""
    written = outputs(out)
    tmps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in written]
    made = make_folder(out.parent, "the embeddings")
    try:
        if out.suffix == ".npy":
            _write_npy(tmps[0], tmps[1], vectors, files, labels)
        elif out.suffix == ".csv":
            _write_csv(tmps[0], vectors, files, labels, prefix)
        else:
            _write_parquet(tmps[0], vectors, files, labels)
        if not overwrite:
            _refuse_existing(out)  # again: the features took a while, someone may have
        for tmp, path in zip(tmps[::-1], written[::-1]):  # X.npy last: it names a whole pair
            tmp.replace(path)
    except OSError as e:
        raise DataError(f"{out}: cannot write the embeddings ({e.strerror or e})") from None
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        if not all(p.exists() for p in written):
            remove_made(made)
    return written


def embed(source: str | Path, data: str, out: str | Path, *, head: bool = False,
          data_root: str | None = None, split: str = "train", device: str = "auto",
          batch_size: int = 256, progress: bool = True, overwrite: bool = False
          ) -> tuple[list[Path], int, int]:
    """Embed every image of ``data`` with the run or export ``source``; returns the files
    written, the number of images and the dimension. An existing output is replaced only
    with ``overwrite``."""
    source, out = Path(source), Path(out).expanduser()
    if not source.exists():
        raise DataError(f"{source}: no such run or export folder")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    check_device(device)
    check_output(out, overwrite)  # before the model and the images
    teacher = load_teacher(source)
    if head:
        teacher = head_teacher(teacher, source)
    images = open_images(data, teacher.size, root=data_root, split=split, teacher=teacher,
                         progress=progress)
    if len(images) == 0:
        raise DataError(f"{data}: no images in the {split} split")
    files, labels = row_names(images)
    check_rows(out, files, labels)
    vectors = layer_features(teacher, images.images, device=resolve_device(device),
                             batch_size=batch_size, progress=progress)
    vectors_np = vectors.cpu().numpy().astype(np.float32, copy=False)
    written = write_embeddings(out, vectors_np, files, labels, "z" if head else "h",
                               overwrite=overwrite)
    return written, len(images), vectors_np.shape[1]
