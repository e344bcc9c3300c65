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
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from selfsup.cluster.teacher import Teacher, layer_features, load_teacher
from selfsup.data import DATASETS, ImageSet, load_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.experiment import resolve_device

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


def check_output(out: Path) -> None:
    """Refuse an output we could not write, before any image is read (one line)."""
    if out.suffix not in FORMATS:
        raise ConfigError(f"{out}: the output must end in {', '.join(FORMATS)}")
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(f"{out}: writing parquet needs pyarrow (pip install pyarrow); "
                              "or write .npy or .csv") from None
    if out.is_dir():
        raise DataError(f"{out}: is a folder; name the file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out.parent}: cannot create the output folder "
                        f"({e.strerror or e})") from None
    if not os.access(out.parent, os.W_OK):
        raise DataError(f"{out.parent}: not writable")


def row_names(images: ImageSet) -> tuple[list[str], list[str] | None]:
    """The source file (or index) and the label (class name when known) of every image."""
    files = images.files or [str(i) for i in range(len(images))]
    if images.labels is None:
        return files, None
    classes = images.classes
    return files, [classes[i] if i < len(classes) else str(i) for i in images.labels.tolist()]


def write_embeddings(out: Path, vectors: np.ndarray, files: list[str],
                     labels: list[str] | None, prefix: str = "h") -> list[Path]:
    """Write ``vectors`` (N x D float32) in the format named by ``out``'s suffix."""
    tmp = out.with_name(f".{out.name}.tmp")
    written = [out]
    try:
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors)
            rows = files if labels is None else [f"{f}\t{la}" for f, la in zip(files, labels)]
            side = out.with_name(out.name.removesuffix(".npy") + ".files.txt")
            side.write_text("".join(f"{r}\n" for r in rows))
            written.append(side)
        elif out.suffix == ".csv":
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["file", "label", *(f"{prefix}{j}" for j in range(vectors.shape[1]))])
                for i, v in enumerate(vectors):
                    w.writerow([files[i], "" if labels is None else labels[i],
                                *(f"{x:.8g}" for x in v)])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                    vectors.shape[1])
            pq.write_table(pa.table({"file": files, "label": labels or [None] * len(files),
                                     "embedding": emb}), tmp)
        tmp.replace(out)
    except OSError as e:
        raise DataError(f"{out}: cannot write the embeddings ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return written


def embed(source: str | Path, data: str, out: str | Path, *, head: bool = False,
          data_root: str | None = None, split: str = "train", device: str = "auto",
          batch_size: int = 256, progress: bool = True) -> tuple[list[Path], int, int]:
    """Embed every image of ``data`` with the run or export ``source``; returns the files
    written, the number of images and the dimension."""
    source, out = Path(source), Path(out).expanduser()
    if not source.exists():
        raise DataError(f"{source}: no such run or export folder")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    check_output(out)  # before the model and the images
    teacher = load_teacher(source)
    if head:
        teacher = head_teacher(teacher, source)
    images = open_images(data, teacher.size, root=data_root, split=split, teacher=teacher,
                         progress=progress)
    if len(images) == 0:
        raise DataError(f"{data}: no images in the {split} split")
    vectors = layer_features(teacher, images.images, device=resolve_device(device),
                             batch_size=batch_size, progress=progress)
    files, labels = row_names(images)
    vectors_np = vectors.cpu().numpy().astype(np.float32, copy=False)
    written = write_embeddings(out, vectors_np, files, labels, "z" if head else "h")
    return written, len(images), vectors_np.shape[1]
