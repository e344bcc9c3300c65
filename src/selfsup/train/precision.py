"""Which number format and memory layout a run trains in, and why.

``train.precision: auto`` trains under bf16 autocast where the device executes bf16 natively:
every CUDA device, and a CPU with AMX or AVX512-BF16 (x86) or the BF16 extension (Arm). A CPU
without them would emulate bf16 through fp32 and run slower, so ``auto`` keeps fp32 there.
Measured on a 2-core Xeon with AMX (``benchmarks/throughput.py``: SimCLR, ResNet-18 CIFAR
stem width 0.25, batch 256 of 28 px, end to end): fp32 414 img/s, bf16 682, bf16 +
channels_last 869 (2.1x); fp32 + channels_last 482. The losses, softmax and score statistics
upcast to fp32 themselves (``losses/ntxent.py``, ``losses/infonce.py``).

``train.channels_last: auto`` picks NHWC where oneDNN / cuDNN have fast NHWC convolutions:
CUDA and the same bf16-native CPUs (faster in both fp32 and bf16 there, measured above).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup.config import Config

# /proc/cpuinfo flags of native bf16 arithmetic, the fastest first: x86 AMX, AVX512-BF16,
# Arm's BF16 extension
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_support(cpuinfo: str | None = None) -> str | None:
    """The CPU feature that runs bf16 natively (e.g. ``"amx_bf16"``), or None.

    Read from ``/proc/cpuinfo`` (Linux); other systems report None, and ``auto`` keeps fp32
    there (an explicit ``train.precision: bf16`` still works).
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if platform.system() != "Linux" or not path.is_file():
            return None
        cpuinfo = path.read_text(errors="replace")
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


@dataclass(frozen=True)
class NumericsChoice:
    """What ``train.precision`` / ``train.channels_last`` resolved to on this device."""

    autocast_dtype: torch.dtype | None  # None: plain fp32
    channels_last: bool
    reason: str  # for the run's start line

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype is torch.bfloat16 else "fp32"

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{self.precision} {layout} ({self.reason})"


def resolve_numerics(cfg: Config, device: torch.device) -> NumericsChoice:
    """Resolve ``auto`` in ``train.precision`` and ``train.channels_last`` for ``device``."""
    t = cfg.train
    if device.type == "cuda":
        native, why = True, "CUDA runs bf16 natively"
    else:
        flag = cpu_bf16_support()
        native = flag is not None
        why = f"this CPU runs bf16 natively ({flag})" if native else \
            "this CPU has no native bf16 (AMX / AVX512-BF16): bf16 would be emulated"
    reasons = []
    if t.precision == "auto":
        precision = "bf16" if native else "fp32"
        reasons.append(f"precision auto: {why}")
    else:
        precision = t.precision
        reasons.append(f"precision {precision} as set")
    if t.channels_last == "auto":
        channels_last = native
        reasons.append("channels_last auto: " + ("NHWC convolutions are faster here" if native
                                                 else "contiguous is the safe default here"))
    else:
        channels_last = bool(t.channels_last)
    return NumericsChoice(torch.bfloat16 if precision == "bf16" else None, channels_last,
                          "; ".join(reasons))


def precision_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``cfg`` on ``device`` (None: fp32)."""
    return resolve_numerics(cfg, device).autocast_dtype
