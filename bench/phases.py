"""Where a job's time goes: sequential jobs with the server's async steps timed in place.

A ``Tracer`` wraps named coroutine functions of sakuga (API, store, worker, ComfyUI client,
engine) for the duration of one run and restores them after; nothing in ``src/`` changes.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench.client import TEMPLATES
from bench.context import Context
from bench.loadgen import SequentialSpec
from bench.server import BenchServer
from bench.stats import percentile
from sakuga.api import jobs as api_jobs
from sakuga.comfy import feeds
from sakuga.comfy.client import ComfyClient
from sakuga.engine.executor import Executor
from sakuga.store.db import AsyncRunner, ThreadRunner
from sakuga.store.jobs import JobStore
from sakuga.store.leases import LeaseStore
from sakuga.store.telemetry import TelemetryWriter
from sakuga.store.writer import SubmitWriter
from sakuga.worker import outputs, telemetry
from sakuga.worker.backends import BackendPool

log = logging.getLogger(__name__)

AsyncFn = Callable[..., Awaitable[Any]]

# (owner, attribute, label) in the order a job meets them.
SPANS: tuple[tuple[Any, str, str], ...] = (
    (BackendPool, "eligible", "api: validate against /object_info"),
    (SubmitWriter, "submit", "api: group-commit insert (await)"),
    (api_jobs, "_view", "api: job view (one read)"),
    (JobStore, "get", "store: jobs.get"),
    (JobStore, "detail", "store: jobs.detail (job+outputs+position[+eta], SSE and GET)"),
    (LeaseStore, "claim", "worker: claim (incl. empty claims)"),
    (LeaseStore, "start_attempt", "worker: record attempt"),
    (ComfyClient, "open_socket", "comfy: open /ws"),
    (ComfyClient, "submit", "comfy: POST /prompt"),
    (Executor, "run_item", "engine: run prompt"),
    (LeaseStore, "mark_running", "worker: mark running"),
    (LeaseStore, "set_progress", "worker: progress write (background)"),
    (LeaseStore, "cancel_requested", "worker: cancel check (background)"),
    (LeaseStore, "heartbeat", "worker: heartbeat (background)"),
    (outputs, "collect_output", "worker: collect output (/view+blob)"),
    (ComfyClient, "download", "comfy: GET /view"),
    (LeaseStore, "add_output", "worker: record output"),
    (ComfyClient, "history", "comfy: GET /history"),
    (feeds, "close_quietly", "comfy: close /ws"),
    (LeaseStore, "finish", "worker: finish"),
    (telemetry, "sample", "worker: /system_stats sample (x2)"),
    (TelemetryWriter, "write", "worker: store telemetry (after finish; grouped)"),
    # Every unit of work: one hop to a database thread (SQLite) or one run_sync (PostgreSQL).
    (ThreadRunner, "run", "store: unit of work, SQLite (one thread hop)"),
    (AsyncRunner, "run", "store: unit of work, PostgreSQL"),
)
SQL_LABEL = "sql: statements sent (all engines)"
TRACE_FIRST_INDEX = 2_000_000


@dataclass(frozen=True)
class Phase:
    """One traced step: calls per job, p50 and p99 ms per call, and ms per job in total."""

    label: str
    calls_per_job: float
    p50_ms: float
    p99_ms: float
    ms_per_job: float


class Tracer:
    """``with Tracer(SPANS) as tracer``: every call of the spans is timed into ``samples``."""

    def __init__(self, spans: tuple[tuple[Any, str, str], ...]) -> None:
        self.spans = spans
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.missing: list[str] = []  # spans whose function no longer exists in sakuga
        self._saved: list[tuple[Any, str, AsyncFn]] = []

    def __enter__(self) -> Tracer:
        for owner, attr, label in self.spans:
            original: AsyncFn | None = vars(owner).get(attr)
            if original is None:
                self.missing.append(f"{owner.__name__}.{attr}")
                continue
            self._saved.append((owner, attr, original))
            setattr(owner, attr, self._timed(original, label))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for owner, attr, original in reversed(self._saved):
            setattr(owner, attr, original)
        self._saved.clear()

    def _timed(self, fn: AsyncFn, label: str) -> AsyncFn:
        samples = self.samples[label]

        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                samples.append(time.perf_counter() - started)

        return timed


class StatementCounter:
    """``with StatementCounter() as counter``: SQL statements any SQLAlchemy engine sends."""

    def __init__(self) -> None:
        self.count = 0

    def _seen(self, *_args: Any) -> None:
        self.count += 1

    def __enter__(self) -> StatementCounter:
        event.listen(Engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._seen)


async def measure(ctx: Context, server: BenchServer) -> list[Phase]:
    """Trace ``trace_jobs`` sequential jobs (templates alternating); phases per job."""
    count = ctx.counts.trace_jobs
    templates = tuple(TEMPLATES[i % len(TEMPLATES)] for i in range(count))
    with Tracer(SPANS) as tracer, StatementCounter() as statements:
        # Inputs apart from the overhead run's, so no traced job is an engine cache hit.
        spec = SequentialSpec(server.url, templates, first_index=TRACE_FIRST_INDEX)
        await ctx.clients.sequential(spec, ctx.where)
    if tracer.missing:
        log.warning("not traced (no longer in sakuga): %s", ", ".join(tracer.missing))
    phases = []
    for _, _, label in SPANS:
        ms = [s * 1000 for s in tracer.samples.get(label, [])]
        if ms:
            phase = Phase(
                label, len(ms) / count, percentile(ms, 50), percentile(ms, 99), sum(ms) / count
            )
            phases.append(phase)
    nan = math.nan
    phases.append(Phase(SQL_LABEL, statements.count / count, nan, nan, nan))
    return phases


def phase_table(phases: list[Phase]) -> str:
    """A Markdown table of the traced phases."""
    lines = ["| step | calls/job | p50 ms/call | p99 ms/call | ms/job |", "|---|---|---|---|---|"]
    for p in phases:
        cells = (p.calls_per_job, p.p50_ms, p.p99_ms, p.ms_per_job)
        shown = ("-" if math.isnan(c) else f"{c:.2f}" for c in cells)
        lines.append(f"| {p.label} | " + " | ".join(shown) + " |")
    return "\n".join(lines)
