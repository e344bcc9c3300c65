"""The one pretraining loop, for every method.

A method is a module mapping a list of views to ``(loss, metrics)`` (with an
optional ``after_step(step, total_steps)`` hook for momentum encoders and
queues); the loop owns data, augmentation, optimisation, schedules, logging,
checkpoints and the k-NN monitor. Read :func:`pretrain` top to bottom: which run,
setup, the loop, the end; :class:`PretrainRun` holds what a run keeps between steps.
"""

from __future__ import annotations

import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from selfsup.config import Config, validate
from selfsup.data.loader import MappedLoader
from selfsup.distributed import (
    CollectiveTimeouts,
    barrier,
    broadcast_object,
    init_distributed,
    is_distributed,
    is_main_process,
    leave_broken_group,
    rank,
    world_size,
)
from selfsup.errors import ConfigError, SelfsupError, TrainingError
from selfsup.experiment import resolve_device
from selfsup.runs import RunFolder, check_run_target, new_run_dir
from selfsup.train.faults import inject_fault, slow_phase
from selfsup.train.metrics import MetricAccumulator, Synced
from selfsup.train.precision import resolve_numerics
from selfsup.train.pretrain_run import PretrainRun
from selfsup.train.resume import (
    auto_resume_dir,
    check_resume_changes,
    config_changes,
    elastic_restart,
)
from selfsup.train.step import (  # noqa: F401  (re-exported: benchmarks time these pieces)
    build_training,
    lr_at,
    make_views,
    optimisation_step,
    precision_dtype,
)
from selfsup.train.threads import set_threads

__all__ = ["build_training", "make_views", "new_run_dir", "optimisation_step", "pretrain",
           "precision_dtype"]


def pretrain(cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Pretrain ``cfg``'s method; returns the run folder. ``resume`` continues ``run_dir``."""
    validate(cfg)  # a config changed in Python after load_config: one line, not a deep crash
    t = cfg.train
    set_threads(t.num_threads)  # default: the CPUs this process may use, shared by local ranks
    run_dir, resume, how, anew = _which_run(cfg, run_dir, resume)
    changes = config_changes(Path(run_dir), cfg) if resume else {}
    check_resume_changes(changes)  # before any data is read
    launched = not is_distributed()
    timeouts = CollectiveTimeouts(t.timeout_s)
    device = _setup(cfg, timeouts)
    data, augment, eval_tf, loader, model, optimizer = build_training(cfg, device)
    model.check_dataset_size(len(data.train))
    if run_dir is None and is_main_process():
        run_dir = new_run_dir(cfg)  # rank 0 creates the run folder; the others take its name
    folder = RunFolder(Path(broadcast_object(None if run_dir is None else str(run_dir))))
    spe = loader.steps_per_epoch
    total = t.steps if t.steps is not None else t.epochs * spe
    _warn_short_warm_up(cfg, spe, total)
    run = PretrainRun(cfg, folder, data, model, optimizer, eval_tf, device, spe, total,
                      numerics=resolve_numerics(cfg, device))
    if resume:
        run.restore(how, changes)
    complete = run.prepare_folder(resume, anew)
    _announce(run, complete)
    step = run.start
    if not complete:
        step = _loop(run, loader, augment, _wrap(model, cfg, device), timeouts)
    if isinstance(loader, MappedLoader):
        loader.close()
    run.finish(step, complete)
    if is_distributed() and launched:
        # leave together: rank 0 may still be writing the summary and plots, and a peer that
        # tore its group down first aborted in gloo ("terminate called without an active
        # exception", 3 of 15 elastic restarts, torch 2.13), failing a finished run
        barrier()
        torch.distributed.destroy_process_group()
    return folder.path


def _which_run(cfg: Config, run_dir, resume: bool) -> tuple[Path | None, bool, str, bool]:
    """The folder this launch continues (given, or the named run after an elastic restart),
    whether it resumes, how (for resumes.jsonl), and whether it starts over in place."""
    if run_dir is not None:
        return Path(run_dir), resume, "--resume", False
    check_run_target(cfg)  # name length, out_dir writable: before any data is read
    found = auto_resume_dir(cfg)
    if found is None:
        return None, False, "", False
    has_checkpoint = RunFolder(found).checkpoint().is_file()
    how = "elastic restart" if elastic_restart() else "run.resume"
    return found, has_checkpoint, how, not has_checkpoint  # no checkpoint: start over in place


def _setup(cfg: Config, timeouts: CollectiveTimeouts) -> torch.device:
    """Join the process group (under torchrun), seed, and check what needs the world size."""
    t = cfg.train
    device = init_distributed(resolve_device(t.device), timeouts.initial_s)  # no-op w/o torchrun
    torch.manual_seed(t.seed)  # same initial weights on every rank
    if t.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel)")
    if t.batch_size % world_size():
        raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by the world size "
                          f"{world_size()}")
    return device


def _announce(run: PretrainRun, complete: bool) -> None:
    """The start line: what trains on what, in which numerics and why, into which folder."""
    if complete or not is_main_process() or not run.cfg.run.progress:  # quiet runs stay quiet
        return
    c, n = run.cfg, len(run.data.train)
    print(f"selfsup: {c.method.name} on {c.data.dataset} ({n} images), {c.model.backbone} "
          f"w{c.model.width:g} on {run.device}, steps {run.start}->{run.total}, "
          f"{run.numerics.describe()} -> {run.folder.path}", file=sys.stderr, flush=True)


def _warn_short_warm_up(cfg: Config, spe: int, total: int) -> None:
    warmup = int(cfg.optim.warmup_epochs * spe)
    if cfg.optim.schedule == "warmup_cosine" and warmup >= total and is_main_process():
        warnings.warn(f"the warm-up ({cfg.optim.warmup_epochs:g} epochs = {warmup} steps) is not "
                      f"shorter than the run ({total} steps): the learning rate never leaves "
                      f"warm-up; lower optim.warmup_epochs", stacklevel=3)


def _wrap(model: torch.nn.Module, cfg: Config, device: torch.device):
    """The module the step calls: DDP (and SyncBN) under torchrun, compiled when asked."""
    step_fn = model
    if is_distributed():
        if cfg.train.sync_bn:  # keeps the Parameter objects: the optimiser (and resumed state)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # stays attached
        step_fn = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    return torch.compile(step_fn) if cfg.train.compile else step_fn


def _loop(run: PretrainRun, loader, augment, step_fn, timeouts: CollectiveTimeouts) -> int:
    """Steps from ``run.start`` to the end (or the time budget); returns the last step.

    The steps' collectives wait ``train.timeout_s`` for a stopped peer; the first step and the
    checkpoints (with the k-NN monitor) are uneven phases, bounded by the patient timeout."""
    cfg, model = run.cfg, run.model
    t, r, spe, total = cfg.train, cfg.run, run.spe, run.total
    numerics = run.numerics
    gen = torch.Generator(device=run.device)
    acc = MetricAccumulator(run.device)
    bar = tqdm(total=total, initial=run.start, desc=f"{cfg.method.name} pretrain",
               disable=not (r.progress and is_main_process()), dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)  # keep CI logs short
    run.t_start, step = time.perf_counter(), run.start
    model.train()
    model.generator = gen  # FT draws continue the step's seeded stream: exact resume
    with timeouts.steps():
        while step < total:  # the Method contract: selfsup.methods.base
            model.set_epoch(step / spe)  # FT's start epoch
            views = make_views(loader, augment, gen, step, t.seed, model.n_views,
                               numerics.channels_last)  # n_views: Jigsaw takes 1
            lr = lr_at(cfg, step, total, spe)
            first = step == run.start  # compiles, warms caches: ranks may end it far apart
            # DDP's all-reduce of the gradients waits on the peers
            with _peers_answer(step, run, bar, timeouts), timeouts.uneven(first):
                if first:
                    slow_phase("first")  # tests only (SELFSUP_FAULT)
                acc.add(optimisation_step(step_fn, run.optimizer, views, lr,
                                          numerics.autocast_dtype, run.device))
            model.after_step(step, total)  # momentum encoders, queues
            step += 1
            bar.update(1)
            end_of_epoch = step % spe == 0
            mid_save = bool(r.checkpoint_steps) and step % r.checkpoint_steps == 0
            over = t.max_time_s is not None and time.perf_counter() - run.t_start > t.max_time_s
            inject_fault(step)  # tests of failure handling only (SELFSUP_FAULT)
            out_of_time = False
            # a single process stops on the step its budget runs out; ranks agree at sync
            # points; every checkpoint is preceded by a sync, whose finite check keeps NaN out
            if (step % r.log_every == 0 or end_of_epoch or step == total or mid_save
                    or (over and world_size() == 1)):
                out_of_time = run.log(_sync(acc, over, step, run, bar, timeouts), step, lr, bar)
            if end_of_epoch or out_of_time or step == total or mid_save:
                # rank 0 writes alone while the others wait at the barrier that ends it
                with _peers_answer(step, run, bar, timeouts), timeouts.uneven():
                    if end_of_epoch or out_of_time or step == total:
                        run.end_of_epoch(step, end_of_epoch)
                    else:
                        run.save(step)
            if out_of_time:
                break
    bar.close()
    return step


def _sync(acc: MetricAccumulator, over: bool, step: int, run: PretrainRun, bar,
          timeouts: CollectiveTimeouts) -> Synced:
    with _peers_answer(step, run, bar, timeouts, any_error=True):
        return acc.sync(flag=over)  # one all-reduce: metrics, histograms, rank 0's clock


# what gloo / NCCL say when a peer stopped answering or died (lower case)
_PEER_LOST = ("timeout", "timed out", "pair closure", "connection closed", "connection reset",
              "broken pipe", "nccl communicator was aborted")


@contextmanager
def _peers_answer(step: int, run: PretrainRun, bar, timeouts: CollectiveTimeouts,
                  any_error: bool = False):
    """A collective that a stopped or dead peer left waiting ends the run in one line; the
    last checkpoint is untouched (``any_error``: every RuntimeError of a pure collective)."""
    try:
        yield
    except SelfsupError:
        raise
    except RuntimeError as exc:
        text = str(exc).lower()
        if world_size() == 1 or not (any_error or any(k in text for k in _PEER_LOST)):
            raise
        bar.close()
        leave_broken_group()
        t = run.cfg.train.timeout_s
        within = (f"train.timeout_s = {t:g} s" if timeouts.now == t else
                  f"{timeouts.now:g} s (the bound of a checkpoint, an evaluation or the first "
                  f"step; train.timeout_s = {t:g} s bounds the others)")
        raise TrainingError(
            f"rank {rank()}: the other ranks did not answer at step {step} within {within} "
            f"({str(exc).splitlines()[0][:120]}); stopped, last checkpoint kept in "
            f"{run.folder.checkpoints}") from None
