"""Knowledge transfer by clustering (Noroozi et al., CVPR 2018) on Fashion-MNIST and MNIST.

Teachers (ResNet-18 CIFAR stem, width ``--teacher-width``, SimCLR preset
``simclr-fashion-mnist``, batch 256, full Fashion-MNIST train split, labels
unused): "strong" (``--teacher-steps`` steps), "weak" (``--weak-steps``) and
"random" (random init, no training). Each is clustered (k-means, Euclidean,
k-means++ init, 50 iterations, seed 0, on the backbone output h of the 60k
train images); a narrow target (ResNet-18 width ``--target-width``) is trained
from scratch on the cluster ids (SGD lr 0.1 nesterov, wd 5e-4, cosine, batch
256, the SimCLR augmentation, ``--epochs`` epochs, seed 0) and evaluated by
``knn-200`` (k=200, T=0.1, backbone features, train split memory, test split
queries) on the labelled data set.

Conditions:
- k sweep with the strong teacher: k in ``--ks`` (Fashion-MNIST);
- teacher strength at k = ``--k``: strong vs weak vs random teacher;
- across data sets at k = ``--k``: clusters computed on Fashion-MNIST label
  MNIST (vs MNIST's own clusters, same teacher), and the reverse;
- baselines: the same target pretrained directly by SimCLR for the same
  wall-clock time as its transfer training, and the target at random init.

Every run folder is kept in ``--work``; a rerun skips what is finished.

    python benchmarks/knowledge_transfer.py            # ~40 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, print_table, write_results  # noqa: E402
from ft_ablation import shared  # noqa: E402

from selfsup.cluster.pseudo_labels import cluster  # noqa: E402
from selfsup.cluster.transfer import transfer  # noqa: E402
from selfsup.config import load_config, save_config  # noqa: E402
from selfsup.eval.protocols import evaluate_knn  # noqa: E402
from selfsup.experiment import make_backbone  # noqa: E402
from selfsup.methods import build_method  # noqa: E402
from selfsup.train.checkpoint import atomic_save  # noqa: E402
from selfsup.train.pretrain import pretrain  # noqa: E402
from selfsup.train.supervised import SupervisedRecipe  # noqa: E402

ROOTS = {"fashion-mnist": str(shared("fashion-mnist")), "mnist": str(shared("mnist"))}


def simclr_run(work: Path, name: str, width: float, steps: int | None,
               max_time_s: float | None = None, dataset: str = "fashion-mnist") -> Path:
    run = work / name
    if (run / "summary.json").exists():
        return run
    shutil.rmtree(run, ignore_errors=True)  # an interrupted run starts over under its name
    over = ["--data.dataset", dataset, "--data.root", ROOTS[dataset], "--model.width", str(width),
            "--train.seed", "0", "--eval.knn_every", "-1", "--run.progress", "false",
            "--run.out_dir", str(work), "--run.name", name]
    if steps is not None:
        over += ["--train.steps", str(steps),
                 "--optim.warmup_epochs", f"{0.1 * steps * 256 / 60000:.4f}"]
    else:  # a wall-clock budget: the schedule is laid out for 2 epochs and cut by the clock
        over += ["--train.epochs", "2", "--train.max_time_s", f"{max_time_s:.1f}",
                 "--optim.warmup_epochs", "0.2"]
    return pretrain(load_config("simclr-fashion-mnist", over))


def random_run(work: Path, name: str, width: float, dataset: str = "fashion-mnist") -> Path:
    """A run folder holding a randomly initialised SimCLR model (seed 0): the random floor."""
    run = work / name
    if (run / "checkpoints" / "last.pt").exists():
        return run
    cfg = load_config("simclr-fashion-mnist", ["--data.dataset", dataset, "--data.root",
                                               ROOTS[dataset], "--model.width", str(width)])
    import torch

    torch.manual_seed(0)
    model = build_method(cfg, make_backbone(cfg, 1))
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    atomic_save({"model": model.state_dict(), "in_channels": 1, "step": 0, "epoch": 0.0},
                run / "checkpoints" / "last.pt")
    return run


def knn(run: Path) -> float:
    path = run / "eval" / "knn-200.json"
    if not path.exists():
        evaluate_knn(run, device="cpu", progress=False)
    return json.loads(path.read_text())["top1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--teacher-steps", type=int, default=600)
    p.add_argument("--weak-steps", type=int, default=60)
    p.add_argument("--teacher-width", type=float, default=0.25)
    p.add_argument("--target-width", type=float, default=0.125)
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50, 250])
    p.add_argument("--k", type=int, default=50, help="k of the teacher and data-set comparisons")
    p.add_argument("--epochs", type=int, default=2, help="transfer training epochs")
    p.add_argument("--work", default="/tmp/selfsup-kt")
    args = p.parse_args()
    work = Path(args.work)
    started_at = commit()
    teachers = {"strong": simclr_run(work, "teacher-strong", args.teacher_width,
                                     args.teacher_steps),
                "weak": simclr_run(work, "teacher-weak", args.teacher_width, args.weak_steps),
                "random": random_run(work, "teacher-random", args.teacher_width)}
    recipe = SupervisedRecipe(epochs=args.epochs, batch_size=256, lr=0.1, weight_decay=5e-4)
    rows, table = [], []

    def add(condition: str, system: str, dataset: str, run: Path, **extra) -> None:
        acc = knn(run)
        rows.append({"system": "selfsup", "method": system, "dataset": dataset,
                     "condition": condition, "protocol": "knn-200", "metric": "top1",
                     "value": acc, "seeds": [0], "run": run.name, **extra})
        table.append({"condition": condition, "system": system, "evaluated_on": dataset,
                      "knn200_top1_pct": round(100 * acc, 2),
                      **{k: v for k, v in extra.items() if k in ("k", "nmi", "train_s")}})
        print(f"{condition:14s} {system:48s} {dataset:13s} {100 * acc:6.2f} %", flush=True)

    for name, run in teachers.items():
        add("teacher", f"{name} teacher (resnet18 w{args.teacher_width:g})", "fashion-mnist",
            run)

    def transferred(teacher: str, k: int, data: str = "fashion-mnist",
                    cluster_data: str = "fashion-mnist") -> tuple[Path, dict]:
        tag = f"{teacher}-k{k}-{cluster_data}-to-{data}"
        c = work / f"cluster-{tag}"
        if not (c / "cluster.json").exists():
            cluster(teachers[teacher], k, data=data, data_root=ROOTS[data],
                    cluster_data=cluster_data, cluster_root=ROOTS[cluster_data], iters=50,
                    out_dir=c, device="cpu", progress=False)
        t = work / f"transfer-{tag}"
        if not (t / "summary.json").exists():
            transfer(c, arch="resnet18", width=args.target_width, recipe=recipe, out_dir=t,
                     device="cpu", progress=False)
        info = json.loads((c / "cluster.json").read_text())
        s = json.loads((t / "summary.json").read_text())
        return t, {"k": k, "nmi": round(info["labelled_stats"]["nmi"], 3),
                   "train_s": s["train_s"], "pseudo_label_train_top1": s["pseudo_label_train_top1"]}

    target = f"target resnet18 w{args.target_width:g}"
    for k in args.ks:
        t, extra = transferred("strong", k)
        add("k sweep", f"{target} <- strong teacher, k={k}", "fashion-mnist", t, **extra)
    for teacher in ("weak", "random"):
        t, extra = transferred(teacher, args.k)
        add("teacher", f"{target} <- {teacher} teacher, k={args.k}", "fashion-mnist", t, **extra)
    for data, other in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        for source in (data, other):
            if source == data == "fashion-mnist" and args.k in args.ks:
                t, extra = transferred("strong", args.k)
            else:
                t, extra = transferred("strong", args.k, data=data, cluster_data=source)
            add("across sets", f"{target} <- clusters of {source}", data, t, **extra)
    budget = json.loads((work / f"transfer-strong-k{args.k}-fashion-mnist-to-fashion-mnist"
                         / "summary.json").read_text())["train_s"]
    ssl = simclr_run(work, "target-simclr", args.target_width, None, max_time_s=budget)
    add("baseline", f"{target} SimCLR, same wall-clock ({budget:.0f} s)", "fashion-mnist", ssl)
    for data in ("fashion-mnist", "mnist"):
        add("baseline", f"{target} random init", data,
            random_run(work, f"target-random-{data}", args.target_width, data))
    print_table(table, ["condition", "system", "evaluated_on", "knn200_top1_pct", "k", "nmi",
                        "train_s"])
    path = write_results("knowledge_transfer", rows, "cpu", {
        "commit": started_at, "table": table,
        "protocol": "knn-200 (k=200, T=0.1), see the script's docstring",
        "settings": vars(args)})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
