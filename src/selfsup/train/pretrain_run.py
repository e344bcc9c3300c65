"""What one pretraining run keeps between steps, and what it does at its sync points:
restore from a checkpoint, prepare its folder, check and log synced metrics, save checkpoints,
run the k-NN monitor, and write the summary at the end. The loop itself is
:func:`selfsup.train.pretrain.pretrain`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from selfsup import __version__
from selfsup.config import Config, base_lr_for, save_config
from selfsup.distributed import broadcast_object, is_main_process
from selfsup.errors import DataError, TrainingError
from selfsup.experiment import input_spec
from selfsup.methods.score_stats import collapsed
from selfsup.runs import RunFolder, check_checkpoint_method
from selfsup.train.checkpoint import (
    atomic_save,
    atomic_write_text,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
)
from selfsup.train.faults import slow_phase
from selfsup.train.logging import MetricsLogger, keep_records, read_jsonl
from selfsup.train.metrics import Synced
from selfsup.train.monitor import knn_monitor
from selfsup.train.precision import NumericsChoice
from selfsup.train.resume import check_same_data, data_identity, record_resume


@dataclass
class PretrainRun:
    """What one pretraining run keeps between steps, and what it does at its sync points."""

    cfg: Config
    folder: RunFolder
    data: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    eval_tf: object
    device: torch.device
    spe: int
    total: int
    start: int = 0
    last: dict = field(default_factory=dict)  # the metrics of the last sync
    collapsed_at: int | None = None
    train_s_before: float = 0.0  # training time of earlier sessions of a resumed run
    t_start: float = field(default_factory=time.perf_counter)
    numerics: NumericsChoice | None = None  # precision and layout chosen, and why
    resumed: tuple[str, dict] | None = None  # how and with what changes, for resumes.jsonl

    def __post_init__(self) -> None:
        self.logger = MetricsLogger(self.folder.path, tensorboard=self.cfg.run.tensorboard)
        self.scores = MetricsLogger(self.folder.path, filename=self.folder.scores.name,
                                    writer=self.logger.writer)

    @cached_property
    def data_identity(self) -> dict:
        """What it trains on, wherever that lives (recorded in each checkpoint)."""
        return data_identity(self.cfg, self.data.train)

    def restore(self, how: str, changes: dict) -> None:
        """Weights, optimiser, RNG and progress from ``last.pt``; refused on other data."""
        ckpt = load_checkpoint(self.folder.checkpoint(), map_location=self.device)
        check_checkpoint_method(ckpt, self.cfg, self.folder.checkpoint())
        check_same_data(self.folder.path, ckpt.get("data"), self.data_identity)
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:  # another architecture than this config builds
            detail = next((x.strip() for x in str(e).splitlines() if "size mismatch" in x
                           or "Missing key" in x or "Unexpected key" in x), str(e))
            raise DataError(f"{self.folder.path}: its checkpoint does not fit the model of "
                            f"this config ({detail[:200]})") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        self.start = int(ckpt["step"])
        # the metrics of the last sync: a resumed run that is already at its end keeps its
        # final loss (checkpoints of older versions lack them: metrics.jsonl has them)
        self.last = ckpt.get("metrics") or _logged_metrics(self.folder.metrics, self.start)
        self.collapsed_at = ckpt.get("collapse_step")
        self.train_s_before = ckpt.get("train_s", 0.0)
        self.resumed = (how, changes)

    def prepare_folder(self, resume: bool, anew: bool) -> bool:
        """Clean the folder, write config.yaml, trim the logs; True if the run is complete."""
        folder, start, total = self.folder, self.start, self.total
        if is_main_process():
            folder.path.mkdir(parents=True, exist_ok=True)  # a run_dir given by the caller
            for f in (folder.path, folder.checkpoints):  # left by a run killed mid-write
                remove_stale_temporaries(f)
            save_config(self.cfg, folder.config)
        # resuming a run that has written its summary at its last step: nothing left to do
        complete = bool(broadcast_object(resume and start >= total and is_main_process()
                                         and folder.summary_steps() == start))
        if is_main_process() and self.resumed and not complete:  # a finished run: no record
            record_resume(folder.path, start, self.resumed[1], self.resumed[0])
        if is_main_process() and resume and not complete:
            # the steps after the checkpoint are trained again: drop what was logged of them,
            # and the final k-NN of a run killed after its last checkpoint, done again too
            def keep(rec: dict) -> bool:
                s = rec.get("step", 0)
                return s < start or (s == start and not (start >= total and "knn_top1" in rec))

            keep_records(folder.metrics, keep)
            keep_records(folder.scores, keep)
        elif is_main_process() and anew:  # restarted before its first checkpoint
            keep_records(folder.metrics, lambda rec: False)
            keep_records(folder.scores, lambda rec: False)
        if is_main_process() and not resume:
            self.logger.log({"event": "start", "step": 0, "steps_per_epoch": self.spe,
                             "total_steps": total, "lr": base_lr_for(self.cfg),
                             "images": len(self.data.train), "device": str(self.device)})
        return complete

    def log(self, synced: Synced, step: int, lr: float, bar) -> bool:
        """Check and log one sync's metrics; returns whether the time budget is spent."""
        self.last, spe = synced.means, self.spe
        if not all(math.isfinite(v) for v in self.last.values()):
            bar.close()
            raise TrainingError(
                f"loss became {self.last.get('loss')} by step {step} (epoch {step / spe:.2f}); "
                f"stopped, last good checkpoint kept in {self.folder.checkpoints}; "
                f"try a lower optim.lr (now {lr:.3g})")
        if self.collapsed_at is None and collapsed(self.last):
            self.collapsed_at = step
            if is_main_process():
                warnings.warn(
                    f"representation collapse at step {step} (epoch {step / spe:.2f}): "
                    f"mean positive score {self.last['pos_sim']:.4f}, mean negative score "
                    f"{self.last['neg_sim']:.4f}, negative variance {self.last['neg_var']:.2g}; "
                    f"every embedding is nearly the same vector (try a lower optim.lr or a later "
                    f"method.ft.start_epoch)", stacklevel=2)
        ips = synced.steps * self.cfg.train.batch_size / max(synced.seconds, 1e-9)
        self.logger.log({"step": step, "epoch": round(step / spe, 4), "lr": lr, **self.last,
                         "images_per_s": round(ips, 1)})
        if synced.histograms:
            stats = {k: self.last[k] for k in ("pos_sim", "neg_sim", "neg_var") if k in self.last}
            self.scores.log({"step": step, "epoch": round(step / spe, 4), **stats,
                             "bins": [-1.0, 1.0], **synced.histograms})
        bar.set_postfix(loss=f"{self.last['loss']:.4f}", lr=f"{lr:.3g}")
        return synced.flag

    def save(self, step: int, epoch_file: int | None = None) -> None:
        """``last.pt`` (and ``epoch_NNNN.pt`` for ``epoch_file``), rank 0 only."""
        if not is_main_process():
            return
        slow_phase("save")  # tests only (SELFSUP_FAULT)
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": step, "epoch": step / self.spe, "config": self.cfg.to_dict(),
                 "rng": rng_state(), "in_channels": self.data.channels,
                 "input": input_spec(self.data), "metrics": self.last,
                 "collapse_step": self.collapsed_at, "train_s": self.train_s(),
                 "data": self.data_identity, "selfsup_version": __version__}
        if epoch_file is not None:  # first: a run killed between the writes keeps it
            atomic_save(state, self.folder.epoch_checkpoint(epoch_file))
        atomic_save(state, self.folder.checkpoint())

    def end_of_epoch(self, step: int, end_of_epoch: bool) -> None:
        """The checkpoint at an epoch's end (or the run's), and the periodic k-NN monitor."""
        epoch, every, knn = step // self.spe, self.cfg.run.checkpoint_every, self.cfg.eval.knn_every
        self.save(step, epoch if end_of_epoch and every and epoch % every == 0 else None)
        if end_of_epoch and knn > 0 and epoch % knn == 0 and step < self.total:
            self.monitor(step)

    def monitor(self, step: int) -> dict:
        data = self.data
        if data.test is None or data.memory is None or data.memory.labels is None:
            return {}
        slow_phase("knn")  # tests only (SELFSUP_FAULT)
        res = knn_monitor(self.model.backbone, data, self.eval_tf, self.cfg, self.device)
        self.logger.log({"step": step, "epoch": step / self.spe, **res})
        return res

    def random_init_knn(self) -> dict:
        """k-NN of the same network at the weights it started from (the run's seed)."""
        from selfsup.experiment import make_backbone

        with torch.random.fork_rng(devices=[]):  # the run's own RNG state stays as it was
            torch.manual_seed(self.cfg.train.seed)  # as before build_training: same weights
            backbone = make_backbone(self.cfg, self.data.channels).to(self.device)
        return knn_monitor(backbone, self.data, self.eval_tf, self.cfg, self.device)

    def train_s(self) -> float:
        return self.train_s_before + time.perf_counter() - self.t_start

    def finish(self, step: int, complete: bool) -> None:
        """The final k-NN, summary.json and plots (nothing for a run resumed complete)."""
        final = self.monitor(step) if self.cfg.eval.knn_every >= 0 and not complete else {}
        if final and self.cfg.eval.knn_random_init:  # what pretraining bought, same protocol
            floor = self.random_init_knn()
            final.update({f"random_init_{k}": floor[k] for k in ("knn_top1", "knn_top5")})
        if is_main_process() and complete:
            print(f"{self.folder.path} is complete ({step} of {self.total} steps); "
                  "nothing left to do")
        elif is_main_process():
            slow_phase("summary")  # tests only (SELFSUP_FAULT)
            data, t = self.data, self.cfg.train
            summary = {"train_images": len(data.train),
                       "test_images": len(data.test) if data.test is not None else 0,
                       "split": data.split,
                       "steps": step, "epochs": round(step / self.spe, 4),
                       "images_seen": step * t.batch_size, "train_s": round(self.train_s(), 2),
                       "final_loss": self.last.get("loss"), "collapse_step": self.collapsed_at,
                       "numerics": self.numerics.describe() if self.numerics else None,
                       **{f"final_{k}": v for k, v in final.items()}}
            atomic_write_text(self.folder.summary, json.dumps(summary, indent=2))
            _plot(self.folder.path)
        self.logger.close()
        self.scores.close()


def _logged_metrics(path: Path, step: int) -> dict:
    """The method's metrics in the last training record of ``metrics.jsonl`` up to ``step``."""
    rows = [r for r in read_jsonl(path) if "loss" in r and r.get("step", 0) <= step]
    skip = ("time", "step", "epoch", "lr", "images_per_s")
    return {k: v for k, v in rows[-1].items() if k not in skip} if rows else {}


def _plot(run_dir: Path) -> None:
    try:
        from selfsup.plots import plot_run
    except ImportError:
        return
    plot_run(run_dir)
