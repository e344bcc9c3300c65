"""Injected failures and delays, for the tests of what happens when a run fails or a phase is
slow (never set otherwise).

``SELFSUP_FAULT`` holds comma-separated specs. ``fail@N``: the first attempt of a run raises
once it reaches step N (a torchrun elastic restart then continues it); ``hang@N@R``: rank R
stops answering at step N (the other ranks must end with an error after ``train.timeout_s``,
not wait forever); ``slow@PHASE@S``: rank 0 sleeps S seconds the first time it reaches PHASE
(``first``: inside the first step, as a slow compile; ``save``: before writing a checkpoint;
``knn``: before the k-NN monitor; ``summary``: before writing the summary), a healthy phase
that takes longer than ``train.timeout_s`` and must not fail the run.
"""

from __future__ import annotations

import os
import time

from selfsup.distributed import rank
from selfsup.train.resume import elastic_restart

# read once: the loop calls inject_fault every step
_SPECS = [s.split("@") for s in os.environ.get("SELFSUP_FAULT", "").split(",") if s]
_slept: set[str] = set()


def inject_fault(step: int) -> None:
    for kind, *args in _SPECS:
        if kind == "fail" and step == int(args[0]) and not elastic_restart():
            raise RuntimeError(f"injected failure at step {step} "
                               f"(SELFSUP_FAULT={os.environ['SELFSUP_FAULT']})")
        if kind == "hang" and step == int(args[0]) and rank() == int(args[1]):
            while True:
                time.sleep(3600)


def slow_phase(phase: str) -> None:
    for kind, *args in _SPECS:
        if kind == "slow" and args[0] == phase and rank() == 0 and phase not in _slept:
            _slept.add(phase)
            time.sleep(float(args[1]))
