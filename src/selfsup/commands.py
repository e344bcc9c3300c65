"""What each ``selfsup`` subcommand does once parsed: call one stage, print its result.

:mod:`selfsup.cli` holds the parsers and dispatches here through
:data:`HANDLERS`; every handler takes ``(args, extra)``, the parsed namespace
and the ``--section.key value`` overrides, and returns the exit status.
Imports are local, so ``selfsup --help`` loads no stage.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from selfsup.errors import SelfsupError
from selfsup.runs import RunFolder


def import_plugin(path: str) -> None:
    """Run a user's file of registrations (a method or backbone in one file, outside src/)."""
    import importlib.util

    file = Path(path).expanduser()
    if not file.is_file():
        raise SelfsupError(f"--plugin {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"selfsup_plugin_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except SelfsupError:
        raise
    except Exception as e:  # the user's code: its first line is the useful one
        raise SelfsupError(f"--plugin {path}: {type(e).__name__}: {e}") from None


def _recipe(args):
    from selfsup.train.supervised import SupervisedRecipe

    return SupervisedRecipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            weight_decay=args.weight_decay, seed=args.seed,
                            optimizer=getattr(args, "optimizer", "sgd"))


def _default_config(extra: list[str]):
    """The config of a run started without --config: the quickstart, except that a user's
    folder or store gets the folder preset (ImageNet stem, colour augmentation, its own run
    name), not the Fashion-MNIST quickstart's."""
    from selfsup.config import load_config

    cfg = load_config("quickstart", extra)  # the overrides, read by the config's own parser
    if cfg.data.dataset not in ("folder", "store"):
        return cfg
    print(f"selfsup: no --config given: using the simclr-folder preset for --data.dataset "
          f"{cfg.data.dataset} (see `selfsup presets`)", file=sys.stderr)
    return load_config("simclr-folder", extra)


def pretrain(args, extra: list[str]) -> int:
    from selfsup.config import load_config
    from selfsup.eval.protocols import describe
    from selfsup.runs import run_config
    from selfsup.train.pretrain import pretrain

    if args.resume:
        if args.config:
            raise SelfsupError("--resume takes the run's own config; drop --config")
        cfg = run_config(args.resume, extra)
        run_dir = pretrain(cfg, run_dir=args.resume, resume=True)
    else:
        cfg = load_config(args.config, extra) if args.config else _default_config(extra)
        run_dir = pretrain(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        # Under torchrun only rank 0 writes summary.json, and the process group is already
        # gone here, so the launcher's RANK is what tells the ranks apart.
        return 0
    summary = json.loads(RunFolder(Path(run_dir)).summary.read_text())
    print(f"run folder: {run_dir}")
    loss = summary.get("final_loss")  # None: no step was logged
    loss_s = "unknown" if loss is None else f"{loss:.4f}"
    print(f"trained {summary['epochs']:.2f} epochs ({summary['steps']} steps) in "
          f"{summary['train_s']:.0f} s, final loss {loss_s}")
    if "final_knn_top1" in summary:
        rec = {"protocol": {"name": "knn", "k": summary.get("final_knn_k", cfg.eval.knn_k),
                            "temperature": cfg.eval.knn_temperature},
               "dataset": cfg.data.dataset, "method": cfg.method.name,
               "backbone": f"{cfg.model.backbone} {cfg.model.stem} w{cfg.model.width:g}",
               "pretrain_epochs": summary["epochs"], "top1": summary["final_knn_top1"],
               "top5": summary["final_knn_top5"], "train_images": summary.get("train_images"),
               "test_images": summary.get("test_images"), "split": summary.get("split")}
        line = describe(rec)
        if "final_random_init_knn_top1" in summary:  # eval.knn_random_init: the floor beside it
            floor = 100 * summary["final_random_init_knn_top1"]
            gain = 100 * summary["final_knn_top1"] - floor
            line += f" (random init: top-1 {floor:.2f}%, pretraining {gain:+.2f} points)"
        print(line)
    return 0


def knn(args, extra: list[str]) -> int:
    from selfsup.eval.protocols import describe, evaluate_knn

    rec = evaluate_knn(args.run, k=args.k, temperature=args.temperature, overrides=extra,
                       checkpoint=args.checkpoint, device=args.device)
    print(describe(rec))
    return 0


def linear(args, extra: list[str]) -> int:
    from selfsup.eval.protocols import describe, evaluate_linear

    rec = evaluate_linear(args.run, _recipe(args), overrides=extra, checkpoint=args.checkpoint,
                          device=args.device)
    print(describe(rec))
    return 0


def stage(args, extra: list[str]) -> int:
    """``finetune`` and ``distill``."""
    from selfsup.semi import distill, finetune

    common = dict(recipe=_recipe(args), out_dir=args.out, device=args.device, overrides=extra,
                  progress=not args.no_progress)
    if args.command == "finetune":
        out = finetune(args.run, label_fraction=args.label_fraction, per_class=args.per_class,
                       subset_file=args.subset, subset_seed=args.subset_seed,
                       head_layer=args.from_head_layer, scratch=args.scratch, **common)
    else:
        out = distill(args.teacher, student=args.student, student_width=args.student_width,
                      temperature=args.temperature, alpha=args.alpha, **common)
    s = json.loads(RunFolder(Path(out)).summary.read_text())
    print(f"run folder: {out}")
    if "test_top1" in s:
        print(f"{args.command}: test top-1 {100 * s['test_top1']:.2f} %, top-5 "
              f"{100 * s['test_top5']:.2f} % ({s['epochs']} epochs, {s['train_s']:.0f} s)")
    return 0


def cluster(args, extra: list[str]) -> int:
    from selfsup.cluster.pseudo_labels import cluster

    out = cluster(args.teacher, args.k, layer=args.layer, data=args.data,
                  data_root=args.data_root, cluster_data=args.cluster_data,
                  cluster_root=args.cluster_root, spherical=args.spherical,
                  iters=args.iters, n_init=args.n_init, seed=args.seed, out_dir=args.out,
                  device=args.device, progress=not args.no_progress, overrides=extra)
    info = json.loads((Path(out) / "cluster.json").read_text())
    s = info["labelled_stats"]
    print(f"cluster run: {out}")
    quality = (f", NMI with the true classes {s['nmi']:.3f}, purity {s['purity']:.3f}"
               if "nmi" in s else "")
    print(f"k={info['k']} on {info['clustered']['images']} {info['clustered']['dataset']} "
          f"features ({info['layer']}, dim {info['feature_dim']}); "
          f"{info['labelled']['images']} {info['labelled']['dataset']} images labelled, "
          f"cluster sizes {s['sizes_min']}..{s['sizes_max']}{quality}")
    return 0


def transfer(args, extra: list[str]) -> int:
    from selfsup.cluster.transfer import transfer

    out = transfer(args.cluster_run, arch=args.arch, width=args.width, stem=args.stem,
                   recipe=_recipe(args), out_dir=args.out, device=args.device, overrides=extra,
                   progress=not args.no_progress)
    s = json.loads(RunFolder(Path(out)).summary.read_text())
    print(f"run folder: {out}")
    print(f"transfer: {args.arch} w{args.width:g} learned the {s['k']} clusters to "
          f"{100 * s['pseudo_label_train_top1']:.2f} % (train, un-augmented) in {s['epochs']} "
          f"epochs; evaluate with `selfsup knn {out}`")
    return 0


def export(args, extra: list[str]) -> int:
    from selfsup.export import export_run
    from selfsup.export_formats import FILES

    out = export_run(args.run, args.out, checkpoint=args.checkpoint, format=args.format)
    print(f"exported backbone to {out}/{FILES[args.format]} and {out}/config.json")
    return 0


def config(args, extra: list[str]) -> int:
    from selfsup.config import load_config
    from selfsup.config.describe import describe_config

    print(describe_config(load_config(args.config, extra)), end="")
    return 0


def presets(args, extra: list[str]) -> int:
    from selfsup.config import preset_names

    print("\n".join(preset_names()))
    return 0


def plot(args, extra: list[str]) -> int:
    from selfsup.outputs import check_out, write_error
    from selfsup.plots import plot_runs

    missing = [r for r in args.runs if not RunFolder(Path(r)).metrics.is_file()]
    if missing:
        raise SelfsupError(f"{missing[0]}: not a run folder (no metrics.jsonl)")
    out = check_out(args.out or RunFolder(Path(args.runs[0])).plots, "the plots")
    try:
        written = plot_runs(args.runs, out, args.epochs)
    except SelfsupError:
        raise
    except OSError as e:  # the disk filled up, or the folder turned read-only meanwhile
        raise write_error(out, "the plots", e) from None
    hint = "nothing to plot (no metrics, or no matplotlib: pip install 'selfsup[plot]')"
    print("\n".join(map(str, written)) if written else hint)
    return 0


def embed(args, extra: list[str]) -> int:
    from selfsup.embed import embed

    written, n, dim = embed(args.source, args.data, args.out, head=args.head,
                            data_root=args.data_root, split=args.split, device=args.device,
                            batch_size=args.batch_size, progress=not args.no_progress,
                            overwrite=args.overwrite)
    print(f"{n} embeddings of dimension {dim} ({'z, head' if args.head else 'h, backbone'}): "
          f"{' + '.join(map(str, written))}")
    return 0


def pictures(args, extra: list[str]) -> int:
    from selfsup.pictures import pictures

    written, notes = pictures(args.run, queries=args.queries, k=args.k, map=args.map,
                              map_points=args.map_points, per_cluster=args.per_cluster,
                              max_clusters=args.clusters, out_dir=args.out, device=args.device,
                              progress=not args.no_progress, overrides=extra)
    print("\n".join([*map(str, written), *notes]))
    return 0


def pack(args, extra: list[str]) -> int:
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


def cache(args, extra: list[str]) -> int:
    """``cache list`` and ``cache clean``: the store cache of packed image folders."""
    from selfsup.data.cache import clean, listing
    from selfsup.data.store import default_store_cache

    folder = Path(args.dir).expanduser() if args.dir else default_store_cache()
    if args.action == "list" and (args.all or args.older_than is not None):
        raise SelfsupError("selfsup cache list takes no --older-than or --all (clean does)")
    lines = (listing(folder) if args.action == "list"
             else clean(folder, older_than=args.older_than, everything=args.all))
    print("\n".join(lines))
    return 0


HANDLERS: dict[str, Callable[..., int]] = {
    "pretrain": pretrain, "knn": knn, "linear": linear, "finetune": stage, "distill": stage,
    "cluster": cluster, "transfer": transfer, "export": export, "presets": presets,
    "plot": plot, "pack": pack, "config": config, "embed": embed,
    "pictures": pictures, "cache": cache,
}
# subcommands that take no --section.key overrides: extra arguments are an error
NO_OVERRIDES = ("export", "presets", "plot", "pack", "embed", "cache")
