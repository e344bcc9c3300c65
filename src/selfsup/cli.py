"""The ``selfsup`` command line: thin argparse subcommands over the Python API.

Every subcommand parses, builds a config, calls one stage and prints a
result; a :class:`~selfsup.errors.SelfsupError` is printed as one line
(``error: ...``) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from selfsup.errors import SelfsupError

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
        e.add_argument("--checkpoint", default="last.pt", help="file in RUN/checkpoints")
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

    ex = sub.add_parser("export", help="write RUN/export/model.safetensors + config.json")
    ex.add_argument("run", metavar="RUN", help="run folder")
    ex.add_argument("--out", default=None, help="output folder (default RUN/export)")
    ex.add_argument("--checkpoint", default="last.pt", help="file in RUN/checkpoints")

    from selfsup.cluster.commands import add_commands

    add_commands(sub)

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
    pk.add_argument("--workers", type=int, default=None,
                    help="decoding processes (default: the CPUs available)")
    pk.add_argument("--channels", default="auto", choices=["auto", "1", "3"],
                    help="1 (gray), 3, or auto: 1 when every image is gray")
    pk.add_argument("--decoder", default="pil", choices=["pil", "simplejpeg"],
                    help="JPEG decoder (simplejpeg: pip install 'selfsup[fast-jpeg]')")
    pk.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("presets", help="list the YAML presets shipped with selfsup")
    pl = sub.add_parser("plot", help="training, score-curve and histogram PNGs of runs, "
                        "overlaid (into the first RUN's plots/)")
    pl.add_argument("runs", metavar="RUN", nargs="+", help="run folders")
    pl.add_argument("--epochs", type=float, nargs="+", default=None,
                    help="epochs at which to draw score histograms (default 10%%, 50%%, 100%%)")
    pl.add_argument("--out", default=None, help="output folder (default FIRST_RUN/plots)")
    return p


PACK_EPILOG = """Example:
  selfsup pack ~/photos data/photos-256 --size 256
  selfsup pretrain --config simclr-folder --data.dataset store --data.root data/photos-256
OUT holds meta.json (written last: the store is complete only with it), and per split
images.u8 (uint8 N x C x S x S), labels.npy, files.txt and skipped.jsonl (files left out,
with the reason). A folder given as --data.dataset folder is packed like this on first use."""

STAGE_EPILOG = ("Writes a new run folder (default beside the input run) that `selfsup knn`, "
                "`linear` and `export` take. Extra --section.key value pairs override the "
                "input run's config (e.g. --data.root DIR).")


def _stage_args(p: argparse.ArgumentParser, epochs: int) -> None:
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--weight-decay", type=float, default=0.0, help="(default 0, as the paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output run folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _stage(args, extra: list[str]) -> int:
    from selfsup.semi import distill, finetune
    from selfsup.train.supervised import SupervisedRecipe

    recipe = SupervisedRecipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                              weight_decay=args.weight_decay, seed=args.seed,
                              optimizer=args.optimizer)
    common = dict(recipe=recipe, out_dir=args.out, device=args.device, overrides=extra,
                  progress=not args.no_progress)
    if args.command == "finetune":
        out = finetune(args.run, label_fraction=args.label_fraction, per_class=args.per_class,
                       subset_file=args.subset, subset_seed=args.subset_seed,
                       head_layer=args.from_head_layer, scratch=args.scratch, **common)
    else:
        out = distill(args.teacher, student=args.student, student_width=args.student_width,
                      temperature=args.temperature, alpha=args.alpha, **common)
    s = json.loads((out / "summary.json").read_text())
    print(f"run folder: {out}")
    if "test_top1" in s:
        print(f"{args.command}: test top-1 {100 * s['test_top1']:.2f} %, top-5 "
              f"{100 * s['test_top5']:.2f} % ({s['epochs']} epochs, {s['train_s']:.0f} s)")
    return 0


def _pretrain(args, extra: list[str]) -> int:
    from selfsup.config import load_config
    from selfsup.eval.protocols import describe
    from selfsup.experiment import run_config
    from selfsup.train.pretrain import pretrain

    if args.resume:
        if args.config:
            raise SelfsupError("--resume takes the run's own config; drop --config")
        cfg = run_config(args.resume, extra)
        run_dir = pretrain(cfg, run_dir=args.resume, resume=True)
    else:
        cfg = load_config(args.config or "quickstart", extra)
        run_dir = pretrain(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        # Under torchrun only rank 0 writes summary.json, and the process group is already
        # gone here, so the launcher's RANK is what tells the ranks apart.
        return 0
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    print(f"run folder: {run_dir}")
    loss = summary.get("final_loss")  # None: no step was logged
    loss_s = "unknown" if loss is None else f"{loss:.4f}"
    print(f"trained {summary['epochs']:.2f} epochs ({summary['steps']} steps) in "
          f"{summary['train_s']:.0f} s, final loss {loss_s}")
    if "final_knn_top1" in summary:
        rec = {"protocol": {"name": "knn", "k": cfg.eval.knn_k,
                            "temperature": cfg.eval.knn_temperature},
               "dataset": cfg.data.dataset, "method": cfg.method.name,
               "backbone": f"{cfg.model.backbone} {cfg.model.stem} w{cfg.model.width:g}",
               "pretrain_epochs": summary["epochs"], "top1": summary["final_knn_top1"],
               "top5": summary["final_knn_top5"], "train_images": summary.get("train_images"),
               "test_images": summary.get("test_images")}
        print(describe(rec))
    return 0


def _pack(args) -> int:
    from selfsup.data.pack import pack_folder
    from selfsup.data.store import read_meta

    channels = args.channels if args.channels == "auto" else int(args.channels)
    out = pack_folder(args.src, args.out, args.size, workers=args.workers, channels=channels,
                      decoder=args.decoder, progress=not args.no_progress)
    meta = read_meta(out)
    parts = [f"{v['images']} {k}" for k, v in meta["splits"].items()]
    print(f"packed {' + '.join(parts)} images at {meta['size']} px, {meta['channels']} "
          f"channel{'s' if meta['channels'] > 1 else ''}, {len(meta['classes'])} classes "
          f"into {out}")
    for k, v in meta["splits"].items():
        if v["skipped"]:
            print(f"{k}: {v['skipped']} files left out, with reasons: {out / k / 'skipped.jsonl'}")
    return 0


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
        if args.command == "pretrain":
            return _pretrain(args, extra)
        if args.command in ("finetune", "distill"):
            return _stage(args, extra)
        if extra and args.command in ("export", "presets", "plot", "pack"):
            raise SelfsupError(f"selfsup {args.command}: unrecognized arguments: {' '.join(extra)}")
        if args.command in ("cluster", "transfer"):
            from selfsup.cluster.commands import run_command

            return run_command(args, extra)
        if args.command == "pack":
            return _pack(args)
        if args.command == "knn":
            from selfsup.eval.protocols import describe, evaluate_knn

            rec = evaluate_knn(args.run, k=args.k, temperature=args.temperature, overrides=extra,
                               checkpoint=args.checkpoint, device=args.device)
            print(describe(rec))
        elif args.command == "linear":
            from selfsup.eval.protocols import describe, evaluate_linear
            from selfsup.train.supervised import SupervisedRecipe

            recipe = SupervisedRecipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                      weight_decay=args.weight_decay, seed=args.seed)
            rec = evaluate_linear(args.run, recipe, overrides=extra, checkpoint=args.checkpoint,
                                  device=args.device)
            print(describe(rec))
        elif args.command == "export":
            from selfsup.export import export_run

            out = export_run(args.run, args.out, checkpoint=args.checkpoint)
            print(f"exported backbone to {out}/model.safetensors and {out}/config.json")
        elif args.command == "presets":
            from selfsup.config import preset_names

            print("\n".join(preset_names()))
        elif args.command == "plot":
            from selfsup.plots import plot_runs

            missing = [r for r in args.runs if not (Path(r) / "metrics.jsonl").is_file()]
            if missing:
                raise SelfsupError(f"{missing[0]}: not a run folder (no metrics.jsonl)")
            written = plot_runs(args.runs, args.out, args.epochs)
            hint = "nothing to plot (no metrics, or no matplotlib: pip install 'selfsup[plot]')"
            print("\n".join(map(str, written)) if written else hint)
    except SelfsupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with: selfsup pretrain --resume RUN", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
