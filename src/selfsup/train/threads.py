"""How many CPU threads a process uses, and a warning when processes would fight over them.

torch's default is one OpenMP thread per physical core of the *machine*, whatever the process
may use: in a container limited to 2 CPUs, or with two runs side by side, threads wait on each
other (measured here: a 2-core machine busy with a second run trained 3.5x slower with torch's
default 2 threads than with 1). selfsup's default is the CPUs this process may run on (its
affinity mask), divided among the ranks torchrun starts on this node, in pretraining and in
every later stage (``OMP_NUM_THREADS``, when set, wins).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from selfsup.data.pack_jobs import available_cpus


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` when set (the user's choice), else the CPUs available to this
    process, shared among torchrun's local ranks."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, available_cpus() // max(local_world, 1))


def other_selfsup_processes() -> int:
    """Other processes of this user running ``selfsup`` (Linux: /proc; elsewhere 0)."""
    me, count = os.getpid(), 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if int(cmdline.parent.name) == me or cmdline.parent.stat().st_uid != os.getuid():
                continue
            args = cmdline.read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(a.endswith(b"selfsup") for a in args[:3]) and b"pretrain" in args:
            count += 1
    return count


def set_threads(requested: int | None) -> int:
    """Set torch's intra-op threads (``train.num_threads``, else :func:`default_threads`);
    warn when other selfsup runs on this machine would oversubscribe its CPUs."""
    n = requested or default_threads()
    torch.set_num_threads(n)
    others = other_selfsup_processes() if int(os.environ.get("LOCAL_RANK", "0")) == 0 else 0
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if others > local_world - 1 and n * (others + 1) > available_cpus():
        warnings.warn(f"{others - local_world + 1} other selfsup run(s) on this machine share "
                      f"its {available_cpus()} CPUs with this one's {n} threads: they slow each "
                      "other down several-fold; set train.num_threads so that the runs' "
                      "threads add up to the CPUs", stacklevel=3)
    return n
