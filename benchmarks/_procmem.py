"""Memory of a process tree, as the kernel shares it out: PSS summed over every process.

RSS counts a page shared by several processes (a shared-memory block, torch's libraries)
once in each of them, so adding RSS over a pool's processes counts the data several times.
PSS (proportional set size, ``/proc/<pid>/smaps_rollup``) charges each process its share
of every page, so the sum over the processes is what the tree costs. (Pages of files that
unrelated processes also map — torch's libraries, when other Python processes run — are
shared with them too, so the sum can be a little below what the tree would cost alone.)

Used by ``benchmarks/engine.py``: a :class:`PeakSampler` thread in the benchmark process
reads the tree of a run it started every ``interval`` seconds and keeps the peak.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def children_of() -> dict[int, list[int]]:
    """Every process's children, from ``/proc/<pid>/stat``."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (a pool's forkserver and its workers included)."""
    tree = children_of()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(tree.get(pid, []))
    return pids


def pss_mb(pid: int) -> float:
    """One process's PSS in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def tree_pss_mb(root: int) -> dict[int, float]:
    """PSS in MiB of ``root`` and each of its descendants."""
    return {pid: pss_mb(pid) for pid in tree_pids(root)}


class PeakSampler:
    """Samples a process tree's summed PSS in a thread; :attr:`peak_mb` is the largest sum seen.

    Args:
        root: the tree's root process (a run the benchmark started).
        interval: seconds between samples.
    """

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak_mb = 0.0
        self.peak_parts: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            parts = tree_pss_mb(self.root)
            total = sum(parts.values())
            if total > self.peak_mb:
                self.peak_mb, self.peak_parts = total, parts

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
