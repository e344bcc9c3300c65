"""The ``selfsup`` command line: the parsers of the pipeline's subcommands (the tools',
pack, embed, pictures and cache, are in :mod:`selfsup.cli_tools`), and the dispatch.

Every subcommand parses, then its handler in :mod:`selfsup.commands` builds
a config, calls one stage and prints a result; a
:class:`~selfsup.errors.SelfsupError` is printed as one line (``error: ...``)
with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys

from selfsup.cli_tools import add_tool_parsers
from selfsup.commands import HANDLERS, NO_OVERRIDES, import_plugin
from selfsup.errors import SelfsupError
from selfsup.runs import LAST

EPILOG = """Any config key can be overridden as --section.key value, e.g.
  selfsup pretrain --config simclr-fashion-mnist --train.epochs 20 --data.root data/fashion-mnist
Sections: data, augment, model, method, optim, train, eval, run."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``error:`` line (exit 2), like every other error."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="selfsup", description="Self-supervised contrastive "
                "representation learning: pretrain, evaluate, export.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="import this Python file first (its register_method / "
                        "register_backbone calls add methods and backbones); repeatable")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    pre = sub.add_parser("pretrain", help="pretrain an encoder (SimCLR, ...)", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         allow_abbrev=False)
    pre.add_argument("--config", default=None,
                     help="a preset name (see `selfsup presets`) or a YAML file")
    pre.add_argument("--resume", metavar="RUN", default=None,
                     help="continue the run in folder RUN from its last checkpoint")

    for name, helptext in (("knn", "weighted k-NN accuracy of a run's frozen backbone"),
                           ("linear", "linear probe on a run's frozen features")):
        e = sub.add_parser(name, help=helptext, allow_abbrev=False,
                           epilog="Extra --section.key value pairs override the run's config "
                           "(e.g. --data.root DIR).")
        e.add_argument("run", metavar="RUN", help="run folder")
        e.add_argument("--checkpoint", default=LAST, help="file in RUN/checkpoints")
        e.add_argument("--device", default=None, help="cpu | cuda (default: the run's)")
        if name == "knn":
            e.add_argument("--k", type=int, default=200, help="neighbours (default 200)")
            e.add_argument("--temperature", type=float, default=0.1,
                           help="vote temperature T, weight exp(sim/T) (default 0.1)")
        else:
            e.add_argument("--epochs", type=int, default=100)
            e.add_argument("--lr", type=float, default=0.1)
            e.add_argument("--batch-size", type=int, default=256)
            e.add_argument("--weight-decay", type=float, default=0.0)
            e.add_argument("--seed", type=int, default=0)

    ft = sub.add_parser("finetune", help="fine-tune a run on a class-balanced label subset "
                        "(SimCLR v2)", allow_abbrev=False, epilog=STAGE_EPILOG)
    ft.add_argument("run", metavar="RUN", help="pretraining run folder")
    which = ft.add_mutually_exclusive_group(required=True)
    which.add_argument("--label-fraction", type=float, help="share of each class, e.g. 0.01")
    which.add_argument("--per-class", type=int, help="labelled images per class")
    which.add_argument("--subset", metavar="FILE",
                       help="indices (one per line) or file names (ImageNet 1%%/10%% lists)")
    ft.add_argument("--subset-seed", type=int, default=0, help="seed of the drawn subset")
    ft.add_argument("--from-head-layer", type=int, default=1,
                    help="keep the first k projection-head layers (0: SimCLR v1; default 1)")
    ft.add_argument("--scratch", action="store_true",
                    help="the same network from random init: the supervised baseline")
    _stage_args(ft, epochs=60)

    di = sub.add_parser("distill", help="distil a fine-tuned teacher into a student on "
                        "unlabeled data (SimCLR v2)", allow_abbrev=False, epilog=STAGE_EPILOG)
    di.add_argument("--teacher", required=True, metavar="RUN", help="a `selfsup finetune` run")
    di.add_argument("--student", default="resnet18", help="architecture (default resnet18)")
    di.add_argument("--student-width", type=float, default=1.0, help="width multiplier")
    di.add_argument("--temperature", type=float, default=1.0, help="tau of both softmaxes")
    di.add_argument("--alpha", type=float, default=1.0,
                    help="weight of the distillation term; < 1 adds label CE on the subset")
    _stage_args(di, epochs=30)

    ex = sub.add_parser("export", help="write RUN/export/model.safetensors (or .pth, .onnx) "
                        "+ config.json")
    ex.add_argument("run", metavar="RUN", help="run folder")
    ex.add_argument("--out", default=None, help="output folder (default RUN/export)")
    ex.add_argument("--checkpoint", default=LAST, help="file in RUN/checkpoints")
    ex.add_argument("--format", default="safetensors",
                    choices=["safetensors", "torchvision", "onnx"],
                    help="safetensors (default; selfsup.load_backbone reads it), torchvision "
                    "(model.pth: a torchvision ResNet's names, no fc) or onnx (model.onnx, "
                    "dynamic batch axis, checked with onnxruntime)")

    cl = sub.add_parser("cluster", help="k-means on a teacher's features -> pseudo-labels "
                        "(Noroozi et al. 2018)", allow_abbrev=False, epilog=CLUSTER_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    cl.add_argument("teacher", metavar="RUN", help="any run folder, or an export folder")
    cl.add_argument("--k", type=int, required=True, help="number of clusters")
    cl.add_argument("--layer", default=None,
                    help="backbone module to take features from, e.g. layer3 (default: output)")
    cl.add_argument("--data", default=None,
                    help="data set to pseudo-label (default: the teacher's own)")
    cl.add_argument("--data-root", default=None, help="folder of --data's files")
    cl.add_argument("--cluster-data", default=None,
                    help="data set whose features are clustered (default: the teacher's own)")
    cl.add_argument("--cluster-root", default=None, help="folder of --cluster-data's files")
    cl.add_argument("--spherical", action="store_true", help="cosine k-means")
    cl.add_argument("--iters", type=int, default=50, help="Lloyd iterations (default 50)")
    cl.add_argument("--n-init", type=int, default=1, help="restarts, best inertia kept")
    cl.add_argument("--seed", type=int, default=0)
    cl.add_argument("--out", default=None, help="output folder (default beside RUN)")
    cl.add_argument("--device", default="auto", help="auto | cpu | cuda")
    cl.add_argument("--no-progress", action="store_true", help="no progress bar")

    tr = sub.add_parser("transfer", help="train a target architecture on a cluster run's "
                        "pseudo-labels", allow_abbrev=False, epilog=TRANSFER_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("cluster_run", metavar="CLUSTER_RUN", help="a `selfsup cluster` folder")
    tr.add_argument("--arch", default="resnet18", help="target architecture (default resnet18)")
    tr.add_argument("--width", type=float, default=1.0, help="width multiplier")
    tr.add_argument("--stem", default=None, help="cifar | imagenet (default: the teacher's)")
    _stage_args(tr, epochs=30, weight_decay=5e-4)

    add_tool_parsers(sub)  # pack, embed, pictures, cache

    sub.add_parser("presets", help="list the YAML presets shipped with selfsup")
    cf = sub.add_parser("config", help="every config key with its value and meaning",
                        allow_abbrev=False, epilog="Example: selfsup config show --config "
                        "simclr-folder --data.root DIR")
    cf.add_argument("action", choices=["show"], help="show: the resolved config as "
                    "commented YAML (a preset's, or the defaults)")
    cf.add_argument("--config", default=None, help="a preset name or a YAML file")
    pl = sub.add_parser("plot", help="training, score-curve and histogram PNGs of runs, "
                        "overlaid (into the first RUN's plots/)")
    pl.add_argument("runs", metavar="RUN", nargs="+", help="run folders")
    pl.add_argument("--epochs", type=float, nargs="+", default=None,
                    help="epochs at which to draw score histograms (default 10%%, 50%%, 100%%)")
    pl.add_argument("--out", default=None, help="output folder (default FIRST_RUN/plots)")
    return p

CLUSTER_EPILOG = """Examples:
  selfsup cluster runs/simclr-big --k 100
  selfsup cluster runs/simclr-big --k 100 --data mnist --data-root data/mnist   # label MNIST
  selfsup cluster runs/moco/export --k 50 --data fashion-mnist --layer layer3
Writes a cluster run folder (pseudo_labels.pt, centroids.pt, cluster.json,
plots/cluster_sizes.png) that `selfsup transfer` takes. Extra --section.key value
pairs override the teacher run's config (e.g. --data.root DIR for moved data)."""

TRANSFER_EPILOG = """Example:
  selfsup transfer runs/cluster-simclr-big-fashion-mnist-k100-s0 --arch resnet18 --width 0.25
Trains the target from scratch on the cluster ids with the pretraining
augmentation of the cluster run's config; the new run folder takes
`selfsup knn`, `linear`, `export` and `finetune --from-head-layer 0`.
Extra --section.key value pairs override the cluster run's config
(e.g. --augment.recipe moco_v2, --data.root DIR)."""


STAGE_EPILOG = ("Writes a new run folder (default beside the input run) that `selfsup knn`, "
                "`linear` and `export` take. Extra --section.key value pairs override the "
                "input run's config (e.g. --data.root DIR).")


def _stage_args(p: argparse.ArgumentParser, epochs: int, weight_decay: float = 0.0) -> None:
    """The supervised loop's settings (and output, device) of finetune, distill and transfer."""
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--weight-decay", type=float, default=weight_decay,
                   help=None if weight_decay else "(default 0, as the paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output run folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# the subcommands that compute with torch after pretraining (threads as pretrain's default)
TORCH_STAGES = ("knn", "linear", "finetune", "distill", "cluster", "transfer", "embed",
                "pictures", "export")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:  # --help, or a bad argument (already printed as one line)
        return int(e.code or 0)
    if args.version:
        from selfsup import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        for path in args.plugin:
            import_plugin(path)
        if args.command in TORCH_STAGES:  # pretrain sets train.num_threads itself
            import torch

            from selfsup.train.threads import default_threads

            torch.set_num_threads(default_threads())
        if extra and args.command in NO_OVERRIDES:
            raise SelfsupError(f"selfsup {args.command}: unrecognized arguments: {' '.join(extra)}")
        return HANDLERS[args.command](args, extra)
    except SelfsupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with: selfsup pretrain --resume RUN", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
