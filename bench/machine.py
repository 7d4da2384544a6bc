"""The machine a run was measured on: CPUs, memory, Python, SQLite and PostgreSQL versions."""

from __future__ import annotations

import os
import platform
import sqlite3
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
    }


def load_1m() -> float:
    """The 1-minute load average: other busy processes inflate every wall-clock number."""
    return round(os.getloadavg()[0], 2)
