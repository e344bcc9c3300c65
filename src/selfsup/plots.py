"""Plots of a run (needs matplotlib: ``pip install 'selfsup[plot]'``)."""

from __future__ import annotations

from pathlib import Path

from selfsup.train.logging import read_jsonl


def plot_run(run_dir: str | Path) -> Path | None:
    """``plots/training.png``: loss, lr, positive/negative scores and k-NN accuracy by epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    knn = [r for r in records if "knn_top1" in r]
    if not train:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = [r["epoch"] for r in train]
    axes[0].plot(ep, [r["loss"] for r in train])
    axes[0].set(title="loss", xlabel="epoch")
    ax_lr = axes[0].twinx()
    ax_lr.plot(ep, [r["lr"] for r in train], color="grey", alpha=0.4, lw=1)
    ax_lr.set_ylabel("lr", color="grey")
    if "pos_sim" in train[0]:
        axes[1].plot(ep, [r["pos_sim"] for r in train], label="positive")
        axes[1].plot(ep, [r["neg_sim"] for r in train], label="negative")
        axes[1].legend()
    axes[1].set(title="mean cosine score", xlabel="epoch")
    if knn:
        axes[2].plot([r["epoch"] for r in knn], [100 * r["knn_top1"] for r in knn], marker="o")
    axes[2].set(title=f"k-NN top-1 % (k={knn[0]['knn_k'] if knn else 200})", xlabel="epoch")
    fig.tight_layout()
    out = run_dir / "plots" / "training.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
