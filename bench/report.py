"""Result rows, targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bench.stats import Summary

Metric = Literal["p50_ms", "p99_ms", "rate_per_s"]
_OPS: dict[str, Callable[[float, float], bool]] = {"<": operator.lt, ">=": operator.ge}
_LABELS = {"p50_ms": "p50", "p99_ms": "p99", "rate_per_s": "rate"}


@dataclass(frozen=True)
class Target:
    """One goal from the issue, e.g. ``Target("p50_ms", "<", 10)``."""

    metric: Metric
    op: Literal["<", ">="]
    value: float

    def met(self, summary: Summary) -> bool:
        actual = getattr(summary, self.metric)
        return actual is not None and not math.isnan(actual) and _OPS[self.op](actual, self.value)

    def __str__(self) -> str:
        unit = "/s" if self.metric == "rate_per_s" else " ms"
        return f"{_LABELS[self.metric]} {self.op} {self.value:g}{unit}"


@dataclass(frozen=True)
class Row:
    """One measurement: what, its summary, the targets it is judged by, JSON extras, a note."""

    name: str
    summary: Summary
    targets: tuple[Target, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def met(self) -> bool | None:
        return all(t.met(self.summary) for t in self.targets) if self.targets else None


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _cpu(extra: dict[str, Any]) -> str:
    server, client = extra.get("server_cpu"), extra.get("client_cpu")
    if server is None:
        return ""
    return f"{server:.2f}" + (f" / {client:.2f}" if client is not None else " (both)")


def table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows (also readable in a terminal)."""
    head = (
        "measurement",
        "n",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU srv/cli",
        "target",
        "met",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        s = row.summary
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        cells = (
            row.name,
            str(s.n),
            _num(s.rate_per_s, 0),
            _num(s.p50_ms),
            _num(s.p99_ms),
            _num(s.max_ms),
            _cpu(row.extra),
            "; ".join(str(t) for t in row.targets),
            met,
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """``value`` with every NaN replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(out_dir: Path, context: dict[str, Any], rows: Sequence[Row]) -> Path:
    """Write ``<UTC time>.json`` and ``latest.json`` under ``out_dir``; returns the first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    body = {
        **context,
        "results": [
            {
                "name": row.name,
                **row.summary.as_dict(),
                "targets": [str(t) for t in row.targets],
                "met": row.met,
                "note": row.note,
                **row.extra,
            }
            for row in rows
        ],
    }
    text = json.dumps(_finite(body), indent=2, default=str, allow_nan=False)
    path = out_dir / f"{stamp}.json"
    path.write_text(text + "\n")
    (out_dir / "latest.json").write_text(text + "\n")
    return path
