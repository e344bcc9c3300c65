"""Plots of one or several runs (needs matplotlib: ``pip install 'selfsup[plot]'``).

``training.png``: loss, lr and k-NN accuracy; ``scores.png``: the three score
curves of Zhu et al. (ICCV 2021) — mean positive score, mean and variance of
the negative scores; ``histograms.png``: positive and negative score
distributions at chosen epochs. Several runs are overlaid (e.g. m = 0.9 vs
0.99, or with and without Feature Transformation).
"""

from __future__ import annotations

from pathlib import Path

from selfsup.runs import RunFolder
from selfsup.train.logging import read_jsonl


def _records(run: Path) -> tuple[list[dict], list[dict], list[dict]]:
    records = read_jsonl(RunFolder(Path(run)).metrics)
    train = _last_per_step([r for r in records if "loss" in r])
    knn = _last_per_step([r for r in records if "knn_top1" in r])
    return train, knn, _last_per_step(read_jsonl(RunFolder(run).scores))


def _last_per_step(records: list[dict]) -> list[dict]:
    """The last record of each step, by step: a step logged again after a resume counts once."""
    by_step = {r["step"]: r for r in records if "step" in r}
    return [by_step[s] for s in sorted(by_step)]


def _nearest(records: list[dict], epoch: float) -> dict | None:
    return min(records, key=lambda r: abs(r["epoch"] - epoch)) if records else None


def histogram_panels(with_hist: dict[str, list[dict]], epochs: list[float]
                     ) -> list[tuple[str, list[tuple[str, dict]]]]:
    """One (title, [(run, record)]) per asked epoch: each run's record nearest to it.

    The title names the epoch of the records drawn, not the one asked for (a short run's
    only record may be far from it); runs drawn at different epochs are each named. A
    panel that would draw the same records as the one before it is left out.
    """
    panels: list[tuple[str, list[tuple[str, dict]]]] = []
    seen: list[list[int]] = []
    for epoch in epochs:
        drawn = [(name, _nearest(s, epoch)) for name, s in with_hist.items()]
        ids = [id(rec) for _, rec in drawn]
        if ids in seen:
            continue
        seen.append(ids)
        at = [f"{round(rec['epoch'], 2):g}" for _, rec in drawn]
        title = (f"scores at epoch {at[0]}" if len(set(at)) == 1 else "scores at epochs "
                 + ", ".join(f"{e} ({name})" for e, (name, _) in zip(at, drawn)))
        panels.append((title, drawn))
    return panels


def plot_runs(runs: list[str | Path], out_dir: str | Path | None = None,
              hist_epochs: list[float] | None = None) -> list[Path]:
    """Write the PNGs into ``out_dir`` (default: the first run's ``plots/``); return them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    runs = [Path(r) for r in runs]
    data = {r.name if r.name not in [x.name for x in runs if x is not r] else str(r):
            _records(r) for r in runs}
    if not any(train for train, _, _ in data.values()):
        return []
    out = Path(out_dir) if out_dir is not None else RunFolder(runs[0]).plots
    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, (train, knn, _) in data.items():
        ep = [r["epoch"] for r in train]
        axes[0].plot(ep, [r["loss"] for r in train], label=name)
        axes[1].plot(ep, [r["lr"] for r in train], label=name)
        if knn:
            axes[2].plot([r["epoch"] for r in knn], [100 * r["knn_top1"] for r in knn],
                         marker="o", label=name)
    for ax, title in zip(axes, ("loss", "learning rate", "k-NN top-1 % (k=200, T=0.1)")):
        ax.set(title=title, xlabel="epoch")
    axes[0].legend(fontsize=7)
    written.append(_save(fig, out / "training.png", plt))

    if any("pos_sim" in (train[0] if train else {}) for train, _, _ in data.values()):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for name, (train, _, _) in data.items():
            for ax, key in zip(axes, ("pos_sim", "neg_sim", "neg_var")):
                rows = [r for r in train if key in r]
                ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], label=name)
        for ax, title in zip(axes, ("mean positive score", "mean negative score",
                                    "variance of negative scores")):
            ax.set(title=title, xlabel="epoch")
        axes[0].legend(fontsize=7)
        written.append(_save(fig, out / "scores.png", plt))

    with_hist = {n: s for n, (_, _, s) in data.items() if s}
    if with_hist:
        last = max(s[-1]["epoch"] for s in with_hist.values())
        epochs = hist_epochs or [round(last * f, 2) for f in (0.1, 0.5, 1.0)]
        written.append(_histograms(plt, histogram_panels(with_hist, epochs),
                                   out / "histograms.png"))
    return written


def _histograms(plt, panels: list[tuple[str, list[tuple[str, dict]]]], path: Path) -> Path:
    """Positive (solid) and negative (dotted) score distributions, one panel per epoch."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.4), squeeze=False)
    for ax, (title, drawn) in zip(axes[0], panels):
        for i, (name, rec) in enumerate(drawn):
            n = len(rec["pos_hist"])
            centers = [-1 + (2 * j + 1) / n for j in range(n)]
            for key, style in (("pos_hist", "-"), ("neg_hist", ":")):
                total = sum(rec[key]) or 1
                ax.plot(centers, [c / total for c in rec[key]], style, color=f"C{i}",
                        label=f"{name} {key[:3]}")
        ax.set(title=title, xlabel="cosine score", ylabel="fraction")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path) -> Path | None:
    """The plots of one run in ``RUN/plots``; returns ``training.png`` (None without matplotlib)."""
    written = plot_runs([run_dir])
    return written[0] if written else None
