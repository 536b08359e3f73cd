"""CPU time and memory of processes over a phase (psutil), and the percentiles of the report.

CPU is read from each process's own accounting (user + system time), so what the bench itself
spends is never charged to the process it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import psutil


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process has used so far, or None when it is gone."""
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return None
    return times.user + times.system


def rss(pid: int) -> int | None:
    """Resident set size in bytes, or None when the process is gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return None


def with_children(pid: int | None) -> list[int]:
    """`pid` and its children (PostgreSQL's backends, uvicorn's workers), [] without a pid."""
    if pid is None:
        return []
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children())]
    except (psutil.Error, OSError):
        return []


def total(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any value (or every value) is unknown."""
    found = list(values)
    if not found or any(v is None for v in found):
        return None
    return sum(v for v in found if v is not None)


Reading = Callable[[], float | None]


class CpuMeter:
    """CPU seconds used by named groups of processes over a phase, per job at the end.

    Each group is a function that reads its processes now (a group of processes found again at
    each reading: PostgreSQL's backends come and go; those that ended in between make its
    figure a lower bound). `bench` is this process's own CPU.
    """

    def __init__(self, groups: dict[str, Reading]) -> None:
        self.groups = {**groups, "bench": time.process_time}
        self.before = self._read()

    @classmethod
    def of(cls, **pids: list[int]) -> CpuMeter:
        """A meter over fixed lists of pids, by name; an empty list reads as unknown."""
        return cls(
            {name: (lambda p=p: total(cpu_seconds(x) for x in p)) for name, p in pids.items()}
        )

    def _read(self) -> dict[str, float | None]:
        return {name: read() for name, read in self.groups.items()}

    def per_job_ms(self, jobs: int) -> dict[str, float | None]:
        after = self._read()
        out: dict[str, float | None] = {}
        for key, value in after.items():
            start = self.before.get(key)
            if value is None or start is None or not jobs:
                out[key] = None
            else:
                out[key] = round(max(0.0, value - start) * 1000 / jobs, 3)
        return out


async def idle_cpu(pids: list[int], seconds: float = 2.0) -> float | None:
    """Percent of one core the (idle, polling) processes use, on average each."""
    before = total(cpu_seconds(p) for p in pids)
    await asyncio.sleep(seconds)
    after = total(cpu_seconds(p) for p in pids)
    if before is None or after is None or not pids:
        return None
    return round((after - before) / seconds * 100 / len(pids), 2)
