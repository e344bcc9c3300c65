"""The parsers of the tool subcommands (pack, embed, pictures, cache) and their epilogs.

:mod:`selfsup.cli` holds the pipeline's stages (pretrain to transfer) and the dispatch; these
are the tools around it, kept apart so that each file stays readable (the project's 300
lines). Plain argparse only: ``selfsup --help`` must load no torch (tests/test_cli_startup).
"""

from __future__ import annotations

import argparse

PACK_EPILOG = """Example:
  selfsup pack ~/photos data/photos-256 --size 256
  selfsup pretrain --config simclr-folder --data.dataset store --data.root data/photos-256
OUT holds meta.json (written last: the store is complete only with it), and per split
images.u8 (uint8 N x C x S x S), labels.npy, files.txt and skipped.jsonl (files left out,
with the reason). A folder given as --data.dataset folder is packed like this on first use."""

EMBED_EPILOG = """Examples:
  selfsup embed runs/quickstart fashion-mnist-sample --split test --out test.npy
  selfsup embed runs/photos/export ~/photos --out photos.csv
Each image gets the run's own eval preprocessing (resized to the trained side, normalised;
gray <-> colour matched); an image folder is packed through the store cache first.
FILE.files.txt holds one row per image: its file (or index), a tab and its label when known
(a name with a tab or line break is refused there: write .csv or .parquet). An existing
FILE is replaced only with --overwrite."""

PICTURES_EPILOG = """Examples:
  selfsup pictures runs/quickstart            # plots/neighbours.png, plots/map.png
  selfsup pictures runs/cluster-quickstart-fashion-mnist-sample-k10-s0   # plots/clusters.png
Neighbours: test queries (train when there is no test split) and their nearest train images
by cosine of the backbone features h, with class names. Extra --section.key value pairs
override the run's config (e.g. --data.root DIR)."""

CACHE_EPILOG = """Examples:
  selfsup cache list
  selfsup cache clean --older-than 30
clean removes only stores selfsup wrote (a folder with its meta.json or state.json) and
their .lock/.failed markers, never anything else there; with neither --older-than nor
--all it removes only the markers of stores that are gone. A store being packed is kept."""


def _non_negative(text: str) -> int:
    """argparse type: an integer >= 0 (``pack --workers -1`` was taken as 0)."""
    value = int(text)  # a ValueError is argparse's "invalid value" line
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _days(text: str) -> float:
    """argparse type: a finite number of days >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_tool_parsers(sub) -> None:
    """Add ``pack``, ``embed``, ``pictures`` and ``cache`` to the subparsers ``sub``."""
    pk = sub.add_parser("pack", help="decode an image folder once into a memory-mapped store",
                        allow_abbrev=False, epilog=PACK_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pk.add_argument("src", metavar="SRC", help="image folder: class sub-folders, flat, or "
                    "train/ + test/ (or val/)")
    pk.add_argument("out", metavar="OUT", help="store folder to write (new or empty; an "
                    "interrupted pack into OUT resumes)")
    pk.add_argument("--size", type=int, required=True,
                    help="stored side: shorter side resized to it, centre crop (e.g. 256 to "
                    "train at 224)")
    pk.add_argument("--workers", type=_non_negative, default=None,
                    help="decoding processes (default: the CPUs available)")
    pk.add_argument("--channels", default="auto", choices=["auto", "1", "3"],
                    help="1 (gray), 3, or auto: 1 when every image is gray")
    pk.add_argument("--decoder", default="pil", choices=["pil", "simplejpeg"],
                    help="JPEG decoder (simplejpeg: pip install 'selfsup[fast-jpeg]')")
    pk.add_argument("--no-progress", action="store_true", help="no progress bar")

    em = sub.add_parser("embed", help="embeddings of every image of a folder, store or data "
                        "set, to .npy/.csv/.parquet", allow_abbrev=False, epilog=EMBED_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    em.add_argument("source", metavar="RUN_OR_EXPORT", help="a run folder or an export folder")
    em.add_argument("data", metavar="DATA", help="an image folder, a packed store (meta.json) "
                    "or a data set name (e.g. fashion-mnist-sample)")
    em.add_argument("--out", required=True, metavar="FILE", help="FILE.npy (+ FILE.files.txt), "
                    "FILE.csv or FILE.parquet (needs pyarrow)")
    em.add_argument("--overwrite", action="store_true", help="replace FILE (and "
                    "FILE.files.txt) if it exists; without it an existing file is refused")
    em.add_argument("--head", action="store_true", help="the projection head's z instead of "
                    "the backbone's h (run folders)")
    em.add_argument("--data-root", default=None, help="folder of a named data set's files")
    em.add_argument("--split", default="train", help="train (default), test, val, ...")
    em.add_argument("--batch-size", type=int, default=256)
    em.add_argument("--device", default="auto", help="auto | cpu | cuda")
    em.add_argument("--no-progress", action="store_true", help="no progress bar")

    pi = sub.add_parser("pictures", help="nearest-neighbour grid and 2-D map of a run; images "
                        "per cluster of a cluster run (PNGs into RUN/plots)", allow_abbrev=False,
                        epilog=PICTURES_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pi.add_argument("run", metavar="RUN", help="a run folder, or a `selfsup cluster` folder")
    pi.add_argument("--queries", type=int, default=8, help="test images to query (default 8)")
    pi.add_argument("--k", type=int, default=8, help="neighbours shown per query (default 8)")
    pi.add_argument("--map", default="auto", choices=["auto", "umap", "tsne", "none"],
                    help="2-D map: UMAP if installed, else t-SNE (scikit-learn)")
    pi.add_argument("--map-points", type=int, default=2000, help="images on the map (2000)")
    pi.add_argument("--per-cluster", type=int, default=10, help="images per cluster row (10)")
    pi.add_argument("--clusters", type=int, default=20, help="largest clusters shown (20)")
    pi.add_argument("--out", default=None, help="output folder (default RUN/plots)")
    pi.add_argument("--device", default="auto", help="auto | cpu | cuda")
    pi.add_argument("--no-progress", action="store_true", help="no progress bar")

    ca = sub.add_parser("cache", help="list or clean the store cache (image folders packed "
                        "on first use)", allow_abbrev=False, epilog=CACHE_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ca.add_argument("action", choices=["list", "clean"])
    ca.add_argument("--older-than", type=_days, metavar="DAYS", default=None,
                    help="clean: the stores last used more than DAYS days ago")
    ca.add_argument("--all", action="store_true", help="clean: every store")
    ca.add_argument("--dir", default=None, help="the cache folder (default $SELFSUP_STORES, "
                    "else <data cache>/stores)")
