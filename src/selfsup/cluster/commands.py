"""``selfsup cluster`` and ``selfsup transfer``: the knowledge-transfer subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def add_commands(sub) -> None:
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
    tr.add_argument("--epochs", type=int, default=30)
    tr.add_argument("--lr", type=float, default=0.1)
    tr.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd")
    tr.add_argument("--batch-size", type=int, default=256)
    tr.add_argument("--weight-decay", type=float, default=5e-4)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default=None, help="output run folder")
    tr.add_argument("--device", default="auto", help="auto | cpu | cuda")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_command(args, extra: list[str]) -> int:
    if args.command == "cluster":
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
    from selfsup.cluster.transfer import transfer
    from selfsup.train.supervised import SupervisedRecipe

    recipe = SupervisedRecipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                              weight_decay=args.weight_decay, seed=args.seed,
                              optimizer=args.optimizer)
    out = transfer(args.cluster_run, arch=args.arch, width=args.width, stem=args.stem,
                   recipe=recipe, out_dir=args.out, device=args.device, overrides=extra,
                   progress=not args.no_progress)
    s = json.loads((Path(out) / "summary.json").read_text())
    print(f"run folder: {out}")
    print(f"transfer: {args.arch} w{args.width:g} learned the {s['k']} clusters to "
          f"{100 * s['pseudo_label_train_top1']:.2f} % (train, un-augmented) in {s['epochs']} "
          f"epochs; evaluate with `selfsup knn {out}`")
    return 0
