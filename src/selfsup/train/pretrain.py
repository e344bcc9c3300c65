"""The one pretraining loop, for every method.

A method is a module mapping a list of views to ``(loss, metrics)`` (with an
optional ``after_step(step, total_steps)`` hook for momentum encoders and
queues); the loop owns data, augmentation, optimisation, schedules, logging,
checkpoints and the k-NN monitor. Read it top to bottom.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import torch
from tqdm.auto import tqdm

from selfsup import __version__
from selfsup.config import Config, base_lr_for, save_config
from selfsup.data.loader import MappedLoader, ResidentLoader, make_loader
from selfsup.distributed import (
    all_reduce_mean,
    broadcast_object,
    init_distributed,
    is_distributed,
    is_main_process,
    rank,
    world_size,
)
from selfsup.errors import ConfigError, DataError, TrainingError
from selfsup.experiment import (
    eval_augmentation,
    input_spec,
    load_data,
    make_backbone,
    resolve_device,
    train_augmentation,
)
from selfsup.methods import build_method
from selfsup.methods.score_stats import collapsed
from selfsup.train.checkpoint import (
    atomic_save,
    atomic_write_text,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
)
from selfsup.train.faults import inject_fault
from selfsup.train.logging import MetricsLogger, keep_records, read_jsonl
from selfsup.train.monitor import knn_monitor
from selfsup.train.optim import build_optimizer
from selfsup.train.resume import (
    auto_resume_dir,
    check_resume_changes,
    config_changes,
    elastic_restart,
    record_resume,
)
from selfsup.train.schedule import step_decay, warmup_cosine


def lr_at(cfg: Config, step: int, total: int, steps_per_epoch: int) -> float:
    base = base_lr_for(cfg)
    o = cfg.optim
    if o.schedule == "warmup_cosine":
        warmup = int(o.warmup_epochs * steps_per_epoch)
        return warmup_cosine(step, total, min(warmup, total), base, o.final_lr)
    if o.schedule == "step":
        return step_decay(step, total, base)
    return base


def check_run_name(name: str | None) -> None:
    """``run.name`` must be one plain path component: the run stays inside ``run.out_dir``."""
    if not name:
        return  # the default name, <method>-<dataset>-<time>
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"run.name {name!r} is not a plain folder name (no '/', '\\', "
                          f"'.' or '..'); the run folder is always run.out_dir/run.name")


def new_run_dir(cfg: Config) -> Path:
    """Create and return ``out_dir/name``; a name already taken gets a suffix (quickstart-2, ...).

    The folder is created with an exclusive ``mkdir``, so two runs started at once with the
    same name cannot share a folder: the second gets the next suffix.
    """
    name = cfg.run.name or (
        f"{cfg.method.name}-{cfg.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    out_dir = Path(cfg.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, n = out_dir / name, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = out_dir / f"{name}-{n}"


def precision_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    p = cfg.train.precision
    if p == "auto":
        p = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if p == "bf16" else None


def build_training(cfg: Config, device: torch.device):
    """Data, augmentations, loader, method and optimiser of ``cfg`` (shared with benchmarks)."""
    t = cfg.train
    data = load_data(cfg, need_test=cfg.eval.knn_every >= 0)
    augment, eval_tf = train_augmentation(cfg, data), eval_augmentation(data)
    loader = make_loader(data.train, t.batch_size, seed=t.seed, rank=rank(), world=world_size(),
                         device=device, on_device=cfg.data.on_device)
    model = build_method(cfg, make_backbone(cfg, data.channels)).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim.optimizer, model, base_lr_for(cfg),
                                cfg.optim.weight_decay, cfg.optim.momentum)
    return data, augment, eval_tf, loader, model, optimizer


def make_views(loader: ResidentLoader | MappedLoader, augment, gen: torch.Generator, step: int,
               seed: int, n_views: int = 2, channels_last: bool = False) -> list[torch.Tensor]:
    """This rank's batch of ``step``, augmented ``n_views`` times on the device."""
    x = loader.batch(step)  # B/world x C x H x W uint8 on the device
    # augmentation randomness is a pure function of (seed, rank, step): exact resume
    gen.manual_seed((seed * 1_000_003 + step) * 64 + rank())
    views = [augment(x, gen) for _ in range(n_views)]
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return views


def optimisation_step(step_fn, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
                      lr: float, autocast_dtype: torch.dtype | None, device: torch.device):
    """Forward (under autocast), backward and update; returns the method's metrics."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        loss, metrics = step_fn(views)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return metrics


def pretrain(cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Pretrain ``cfg``'s method; returns the run folder. ``resume`` continues ``run_dir``."""
    t, r = cfg.train, cfg.run
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    how, anew = "--resume", False
    if run_dir is None:
        check_run_name(r.name)
        run_dir = auto_resume_dir(cfg)  # the named run, after an elastic restart
        if run_dir is not None:
            resume = (run_dir / "checkpoints" / "last.pt").is_file()
            anew = not resume  # restarted before its first checkpoint: start over in place
            how = "elastic restart" if elastic_restart() else "run.resume"
    changes = config_changes(Path(run_dir), cfg) if resume else {}
    check_resume_changes(changes)  # before any data is read
    launched = not is_distributed()
    # no-op outside torchrun
    device = init_distributed(resolve_device(t.device), t.timeout_s)
    torch.manual_seed(t.seed)  # same initial weights on every rank
    if t.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel)")
    if t.batch_size % world_size():
        raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by the world size "
                          f"{world_size()}")

    data, augment, eval_tf, loader, model, optimizer = build_training(cfg, device)

    if hasattr(model, "check_dataset_size"):
        model.check_dataset_size(len(data.train))
    # rank 0 names the run folder; the others must use the same one
    if run_dir is None and is_main_process():
        run_dir = new_run_dir(cfg)  # rank 0 creates the run folder; the others take its name
    run_dir = Path(broadcast_object(None if run_dir is None else str(run_dir)))
    start_step, last, collapsed_at, train_s_before = 0, {}, None, 0.0
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=device)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:  # another architecture than this config builds
            detail = next((x.strip() for x in str(e).splitlines() if "size mismatch" in x
                           or "Missing key" in x or "Unexpected key" in x), str(e))
            raise DataError(f"{run_dir}: its checkpoint does not fit the model of this "
                            f"config ({detail[:200]})") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        start_step = int(ckpt["step"])
        # the metrics of the last sync: a resumed run that is already at its end keeps its
        # final loss (checkpoints of older versions lack them: metrics.jsonl has them)
        last = ckpt.get("metrics") or _logged_metrics(run_dir, start_step)
        collapsed_at, train_s_before = ckpt.get("collapse_step"), ckpt.get("train_s", 0.0)
        if is_main_process():
            record_resume(run_dir, start_step, changes, how)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)  # a run_dir given by the caller
        for folder in (run_dir, run_dir / "checkpoints"):  # left by a run killed mid-write
            remove_stale_temporaries(folder)
        save_config(cfg, run_dir / "config.yaml")
    logger = MetricsLogger(run_dir, tensorboard=r.tensorboard)
    scores = MetricsLogger(run_dir, filename="scores.jsonl", writer=logger.writer)

    spe = loader.steps_per_epoch
    total = t.steps if t.steps is not None else t.epochs * spe
    warmup = int(cfg.optim.warmup_epochs * spe)
    if cfg.optim.schedule == "warmup_cosine" and warmup >= total and is_main_process():
        warnings.warn(f"the warm-up ({cfg.optim.warmup_epochs:g} epochs = {warmup} steps) is not "
                      f"shorter than the run ({total} steps): the learning rate never leaves "
                      f"warm-up; lower optim.warmup_epochs", stacklevel=2)
    # resuming a run that has written its summary at its last step: nothing left to do
    complete = bool(broadcast_object(
        resume and start_step >= total and is_main_process()
        and _summary_steps(run_dir) == start_step))
    if is_main_process() and resume and not complete:
        # the steps after the checkpoint are trained again: drop what was logged of them, and
        # the final k-NN of a run killed after its last checkpoint, which is done again too
        def keep(rec: dict) -> bool:
            s = rec.get("step", 0)
            return s < start_step or (s == start_step and not (
                start_step >= total and "knn_top1" in rec))

        keep_records(logger.path, keep)
        keep_records(scores.path, keep)
    elif is_main_process() and anew:
        keep_records(logger.path, lambda rec: False)
        keep_records(scores.path, lambda rec: False)
    step_fn = model
    if is_distributed():
        if t.sync_bn:  # keeps the Parameter objects: the optimiser (and resumed state) stays
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        step_fn = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    if t.compile:
        step_fn = torch.compile(step_fn)
    autocast_dtype = precision_dtype(cfg, device)
    gen = torch.Generator(device=device)

    def save(step: int, tag: str | None = None) -> None:
        if not is_main_process():
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "epoch": step / spe, "config": cfg.to_dict(), "rng": rng_state(),
                 "in_channels": data.channels, "input": input_spec(data),
                 "metrics": last, "collapse_step": collapsed_at,
                 "train_s": train_s_before + time.perf_counter() - t_start,
                 "selfsup_version": __version__}
        if tag:  # first: a run killed between the two writes still has its epoch file
            atomic_save(state, run_dir / "checkpoints" / f"{tag}.pt")
        atomic_save(state, run_dir / "checkpoints" / "last.pt")

    def monitor(step: int) -> dict:
        if data.test is None or data.memory is None or data.memory.labels is None:
            return {}
        res = knn_monitor(model.backbone, data, eval_tf, cfg, device)
        logger.log({"step": step, "epoch": step / spe, **res})
        return res

    if is_main_process() and not resume:
        logger.log({"event": "start", "step": 0, "steps_per_epoch": spe, "total_steps": total,
                    "lr": base_lr_for(cfg), "images": len(data.train), "device": str(device)})
    bar = tqdm(total=total, initial=start_step, desc=f"{cfg.method.name} pretrain",
               disable=not (r.progress and is_main_process()), dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)  # keep CI logs short
    sums: dict[str, torch.Tensor] = {}
    count, t_log, t_start = 0, time.perf_counter(), time.perf_counter()
    step = start_step
    model.train()
    if hasattr(model, "generator"):
        model.generator = gen  # FT draws continue the step's seeded stream: exact resume
    while step < total:
        if hasattr(model, "epoch"):
            model.epoch = step / spe  # FT's start epoch
        views = make_views(loader, augment, gen, step, t.seed, getattr(model, "n_views", 2),
                           t.channels_last)  # n_views: Jigsaw takes 1
        lr = lr_at(cfg, step, total, spe)
        metrics = optimisation_step(step_fn, optimizer, views, lr, autocast_dtype, device)
        if hasattr(model, "after_step"):
            model.after_step(step, total)
        for k, v in metrics.items():  # device tensors: no host sync here
            sums[k] = sums[k] + v.float() if k in sums else v.float()
        count += 1
        step += 1
        bar.update(1)

        end_of_epoch = step % spe == 0
        mid_save = bool(r.checkpoint_steps) and step % r.checkpoint_steps == 0
        out_of_time = False
        over = t.max_time_s is not None and time.perf_counter() - t_start > t.max_time_s
        # a single process stops on the step its budget runs out; ranks agree at sync points
        sync = step % r.log_every == 0 or end_of_epoch or step == total or mid_save
        # every checkpoint is preceded by this finite check, so none can hold a NaN model
        inject_fault(step)  # tests of failure handling only (SELFSUP_FAULT)
        if sync or (over and world_size() == 1):
            names = sorted(k for k, v in sums.items() if v.ndim == 0)
            hists = sorted(k for k, v in sums.items() if v.ndim == 1)  # score histograms
            # one all-reduce for metrics, histograms and rank 0's clock: ranks stop together
            clock = (torch.tensor(float(over) * world_size(), device=device)
                     if is_main_process() else torch.zeros((), device=device))
            packed = torch.cat([torch.stack([sums[k] / count for k in names] + [clock]),
                                *[sums[k] for k in hists]])
            try:
                packed = all_reduce_mean(packed).tolist()  # the one host sync
            except RuntimeError as exc:  # gloo/NCCL timeout: a peer stopped or died
                bar.close()
                raise TrainingError(
                    f"rank {rank()}: the other ranks did not answer at step {step} within "
                    f"train.timeout_s = {t.timeout_s:g} s ({str(exc).splitlines()[0][:120]}); "
                    f"stopped, last checkpoint kept in {run_dir / 'checkpoints'}") from None
            last = dict(zip(names, packed[: len(names)]))
            out_of_time = packed[len(names)] > 0.5
            hist_values, i = {}, len(names) + 1
            for k in hists:  # back to counts summed over ranks
                n_bins = sums[k].numel()
                hist_values[k] = [round(v * world_size()) for v in packed[i : i + n_bins]]
                i += n_bins
            if not all(math.isfinite(v) for v in last.values()):
                bar.close()
                raise TrainingError(
                    f"loss became {last.get('loss')} by step {step} (epoch {step / spe:.2f}); "
                    f"stopped, last good checkpoint kept in {run_dir / 'checkpoints'}; "
                    f"try a lower optim.lr (now {lr:.3g})"
                )
            if collapsed_at is None and collapsed(last):
                collapsed_at = step
                if is_main_process():
                    warnings.warn(
                        f"representation collapse at step {step} (epoch {step / spe:.2f}): "
                        f"mean positive score {last['pos_sim']:.4f}, mean negative score "
                        f"{last['neg_sim']:.4f}, negative variance {last['neg_var']:.2g}; every "
                        f"embedding is nearly the same vector (try a lower optim.lr or a later "
                        f"method.ft_start_epoch)", stacklevel=2)
            now = time.perf_counter()
            ips = count * t.batch_size / max(now - t_log, 1e-9)
            logger.log({"step": step, "epoch": round(step / spe, 4), "lr": lr, **last,
                        "images_per_s": round(ips, 1)})
            if hist_values:
                scores.log({"step": step, "epoch": round(step / spe, 4),
                            **{k: last[k] for k in ("pos_sim", "neg_sim", "neg_var") if k in last},
                            "bins": [-1.0, 1.0], **hist_values})
            bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{lr:.3g}")
            sums, count, t_log = {}, 0, now
        if end_of_epoch or out_of_time or step == total:
            epoch = step // spe
            ck_every = r.checkpoint_every
            save(step, f"epoch_{epoch:04d}" if end_of_epoch and ck_every and
                 epoch % ck_every == 0 else None)
            if (end_of_epoch and cfg.eval.knn_every > 0 and epoch % cfg.eval.knn_every == 0
                    and step < total):
                monitor(step)
        elif mid_save:
            save(step)
        if out_of_time:
            break
    bar.close()
    if isinstance(loader, MappedLoader):
        loader.close()

    final = monitor(step) if cfg.eval.knn_every >= 0 and not complete else {}
    if is_main_process() and complete:
        print(f"{run_dir} is complete ({step} of {total} steps); nothing left to do")
    elif is_main_process():
        summary = {"train_images": len(data.train),
                   "test_images": len(data.test) if data.test is not None else 0,
                   "steps": step, "epochs": round(step / spe, 4),
                   "images_seen": step * t.batch_size,
                   "train_s": round(train_s_before + time.perf_counter() - t_start, 2),
                   "final_loss": last.get("loss"), "collapse_step": collapsed_at,
                   **{f"final_{k}": v for k, v in final.items()}}
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        _plot(run_dir)
    logger.close()
    scores.close()
    if is_distributed() and launched:
        torch.distributed.destroy_process_group()
    return run_dir


def _logged_metrics(run_dir: Path, step: int) -> dict:
    """The method's metrics in the last training record of ``metrics.jsonl`` up to ``step``."""
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl")
            if "loss" in r and r.get("step", 0) <= step]
    skip = ("time", "step", "epoch", "lr", "images_per_s")
    return {k: v for k, v in rows[-1].items() if k not in skip} if rows else {}


def _summary_steps(run_dir: Path) -> int | None:
    """The steps of the run's ``summary.json``; None without a readable one."""
    try:
        return int(json.loads((run_dir / "summary.json").read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _plot(run_dir: Path) -> None:
    try:
        from selfsup.plots import plot_run
    except ImportError:
        return
    plot_run(run_dir)
