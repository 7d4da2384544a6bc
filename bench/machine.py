"""The machine a run was measured on: CPUs, memory, Python, SQLite and PostgreSQL versions."""

from __future__ import annotations

import os
import platform
import resource
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy


def _proc_field(path: str, name: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def describe(postgres_version: str | None = None) -> dict[str, Any]:
    """A JSON-ready description of this machine and run time (UTC)."""
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "postgresql": postgres_version,
        "loadavg_1m_at_start": load_1m(),
        "cpu_busy_before_start": cpu_busy(),
    }


def cpu_busy(sample_s: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over ``sample_s`` (from /proc/stat); None off Linux."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(sample_s)
    after = _cpu_times()
    if after is None:
        return None
    total = after[0] - before[0]
    return round(1 - (after[1] - before[1]) / total, 2) if total else None


def _cpu_times() -> tuple[int, int] | None:
    """(all jiffies, idle + iowait jiffies) of the ``cpu`` line of /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4]


def load_1m() -> float:
    """The 1-minute load average: other busy processes inflate every wall-clock number."""
    return round(os.getloadavg()[0], 2)


class CpuWatch:
    """CPU the rest of the machine used during a run, in cores (PostgreSQL's work included)."""

    # All CPUs' busy time from /proc/stat minus this process and its reaped children (the
    # load client and engine processes).

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        times = _cpu_times()
        if times is None:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        ours = sum(
            resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        )
        return (times[0] - times[1]) / ticks, ours, time.monotonic()

    def others_cores(self) -> float | None:
        """Average cores busy outside this run since the watch started; None off Linux."""
        end = self._sample()
        if self._start is None or end is None or end[2] <= self._start[2]:
            return None
        busy = (end[0] - self._start[0]) - (end[1] - self._start[1])
        return round(max(0.0, busy) / (end[2] - self._start[2]), 2)
