"""Build the Fashion-MNIST quickstart sample that ships inside the package.

    python tools/make_sample.py [--source DIR] [--train 1600] [--test 400]

Reads the official Fashion-MNIST files (default: ``$SELFSUP_SHARED_DATA/fashion-mnist``, else the
``shared/data/fashion-mnist`` folder found above this repository) and writes the first ``--train``
training and ``--test`` test images and labels to ``src/selfsup/data/sample/fashion-mnist/``, in
the official gzip IDX format and file names, plus the LICENSE. gzip runs at level 9 with
mtime 0, so a rerun with the same zlib reproduces the bytes. Fails when the folder exceeds 1 MB,
and prints the ``FileInfo`` lines that ``selfsup/data/registry.py`` records for the sample.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import struct
import sys
from pathlib import Path

import numpy as np

from selfsup.data.sources import read_idx

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "selfsup" / "data" / "sample" / "fashion-mnist"
LIMIT_BYTES = 1_000_000  # decimal megabyte: the stricter reading of "at most 1 MB"

LICENSE = """\
Fashion-MNIST quickstart sample
===============================

This folder holds a subset of Fashion-MNIST, in the official gzip IDX format:
the first {train} images and labels of the official training set
(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz) and the first {test}
images and labels of the official test set (t10k-images-idx3-ubyte.gz,
t10k-labels-idx1-ubyte.gz). Pixels and labels are unchanged; only the image
count in the IDX header differs. Built by tools/make_sample.py.

Fashion-MNIST: Zalando Research, https://github.com/zalandoresearch/fashion-mnist
Han Xiao, Kashif Rasul, Roland Vollgraf. "Fashion-MNIST: a Novel Image Dataset
for Benchmarking Machine Learning Algorithms". arXiv:1708.07747, 2017.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def default_source() -> Path:
    """``$SELFSUP_SHARED_DATA/fashion-mnist``, else ``shared/data/fashion-mnist`` above REPO."""
    if os.environ.get("SELFSUP_SHARED_DATA"):
        return Path(os.environ["SELFSUP_SHARED_DATA"]) / "fashion-mnist"
    for parent in REPO.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data" / "fashion-mnist"
    return REPO.parent / "shared" / "data" / "fashion-mnist"


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip IDX file: magic 00 00 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw,
                                                compresslevel=9, mtime=0) as gz:
        gz.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=default_source())
    parser.add_argument("--train", type=int, default=1600)
    parser.add_argument("--test", type=int, default=400)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", args.train), ("t10k", args.test)):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte.gz"
            write_idx_gz(OUT / name, read_idx(args.source / name)[:count])
    (OUT / "LICENSE").write_text(LICENSE.format(train=args.train, test=args.test))
    total = 0
    for path in sorted(OUT.iterdir()):
        data = path.read_bytes()
        total += len(data)
        if path.suffix == ".gz":
            sha = hashlib.sha256(data).hexdigest()
            print(f'    FileInfo("{path.name}", {len(data)}, sha256="{sha}"),')
    print(f"{OUT}: {total} bytes in all (limit {LIMIT_BYTES})")
    if total > LIMIT_BYTES:
        print("error: the sample is over the limit; rerun with fewer images", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
