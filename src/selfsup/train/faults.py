"""Injected failures, for the tests of what happens when a run fails (never set otherwise).

``SELFSUP_FAULT`` = ``fail@N``: the first attempt of a run raises once it reaches step N (a
torchrun elastic restart then continues it); ``hang@N@R``: rank R stops answering at step N
(the other ranks must end with an error after ``train.timeout_s``, not wait forever).
"""

from __future__ import annotations

import os
import time

from selfsup.distributed import rank
from selfsup.train.resume import elastic_restart

_SPEC = os.environ.get("SELFSUP_FAULT", "")  # read once: the loop calls this every step


def inject_fault(step: int) -> None:
    spec = _SPEC
    if not spec:
        return
    kind, *args = spec.split("@")
    if kind == "fail" and step == int(args[0]) and not elastic_restart():
        raise RuntimeError(f"injected failure at step {step} (SELFSUP_FAULT={spec})")
    if kind == "hang" and step == int(args[0]) and rank() == int(args[1]):
        while True:
            time.sleep(3600)
