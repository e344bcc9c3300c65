"""The work of ``selfsup pack`` outside its bookkeeping: what a worker process does with one
chunk of files (read headers; decode and write rows), the log that makes a pack resumable, and
squeezing out the rows of files that failed. numpy + PIL only: workers start fast.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from selfsup.data.decode import DecodeError, decode, probe


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def probe_chunk(job: tuple[list[str]]) -> list[str]:
    """``mode WxH`` of each file, or ``!reason`` for a file whose header is unreadable."""
    out = []
    for path in job[0]:
        try:
            out.append(probe(path))
        except DecodeError as exc:
            out.append(f"!{exc}")
    return out


def pack_chunk(job: tuple) -> tuple:
    """Decode one chunk and write its rows at ``first`` of ``target``; stats of the good rows."""
    key, target, first, paths, size, channels, decoder = job
    block = np.zeros((len(paths), channels, size, size), np.uint8)
    bad = []
    for i, path in enumerate(paths):
        try:
            block[i] = decode(path, size, channels, decoder).transpose(2, 0, 1)
        except DecodeError as exc:
            bad.append([i, str(exc)])
    good = np.ones(len(paths), bool)
    good[[i for i, _ in bad]] = False
    # per-channel histograms give exact sums and sums of squares at a fraction of the cost
    # of float arithmetic on every pixel (measured: 18 ms against 376 ms per 64 x 224 px)
    hist = [np.bincount(block[good, c].ravel(), minlength=256).tolist()
            for c in range(channels)]
    fd = os.open(target, os.O_WRONLY)
    try:
        os.pwrite(fd, block.tobytes(), first * block[0].nbytes)
    finally:
        os.close(fd)
    return key, bad, hist


class ProgressLog:
    """progress.jsonl: the probe, every finished chunk, compaction; a torn last line is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # killed mid-write: everything after is lost anyway
        self._f = open(path, "a")

    def add(self, record: dict) -> None:
        self.records.append(record)
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def make_pool(workers: int):
    if workers <= 0:
        return None
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers)


def squeeze(target: Path, n: int, row: int, holes: list[int], block: int = 256) -> None:
    """Move the good rows of ``target`` down over the holes, in order, and cut the file."""
    arr = np.memmap(target, np.uint8, "r+", shape=(n, row))
    hole_set, dst = set(holes), 0
    good = [i for i in range(n) if i not in hole_set]
    for lo in range(0, len(good), block):
        rows = good[lo:lo + block]
        if rows[0] != dst or rows[-1] != dst + len(rows) - 1:
            arr[dst:dst + len(rows)] = arr[rows]
        dst += len(rows)
    arr.flush()
    del arr
    os.truncate(target, dst * row)
