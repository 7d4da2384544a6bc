"""Prometheus metrics: one ``Metrics`` per server, on its own registry.

Events are counted where they happen (``job_finished``, ``retry``, ``webhook_delivery``);
states are read when scraped (``refresh``): job counts from the store in one GROUP BY, and
each backend's health and slots from the backend pool. Several servers in one process (the
tests) never share a series, because each owns its ``CollectorRegistry``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from sakuga.domain.jobs import JobStatus

if TYPE_CHECKING:
    from sakuga.store import Store
    from sakuga.worker.backends import BackendPool

__all__ = ["NO_TEMPLATE", "WEBHOOK_OUTCOMES", "Metrics"]

# The ``template`` label of a job submitted as a raw workflow (no template name has parens).
NO_TEMPLATE = "(workflow)"
WEBHOOK_OUTCOMES = ("delivered", "retry", "dead")
RETENTION_KINDS = ("expired_jobs", "deleted_jobs", "blobs")

# Seconds, from a fast dispatch to an hour-long video render.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def template_label(template: str | None) -> str:
    return template or NO_TEMPLATE


class Metrics:
    """The instruments; ``render()`` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        self.jobs = Gauge(
            "sakuga_jobs",
            "Jobs held in the store, by state and template.",
            ["state", "template"],
            registry=reg,
        )
        self.queue_depth = Gauge(
            "sakuga_queue_depth", "Jobs queued and not yet running.", registry=reg
        )
        self.queue_wait = Histogram(
            "sakuga_job_queue_wait_seconds",
            "Time from submission to the backend starting the job, by template.",
            ["template"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.execution = Histogram(
            "sakuga_job_execution_seconds",
            "Time from the backend starting the job to its outcome, by template.",
            ["template"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.finished = Counter(
            "sakuga_jobs_finished",
            "Jobs that reached a terminal state in this process, by status and template.",
            ["status", "template"],
            registry=reg,
        )
        self.retries = Counter(
            "sakuga_retries",
            "Attempts retried after a transient failure, by reason.",
            ["reason"],
            registry=reg,
        )
        self.backend_up = Gauge(
            "sakuga_backend_up",
            "1 when the backend is healthy (breaker closed), else 0.",
            ["backend"],
            registry=reg,
        )
        self.backend_busy = Gauge(
            "sakuga_backend_busy_slots",
            "Slots of the backend running a job now.",
            ["backend"],
            registry=reg,
        )
        self.backend_capacity = Gauge(
            "sakuga_backend_capacity",
            "Slots of the backend: running + prefetched prompts.",
            ["backend"],
            registry=reg,
        )
        self.webhooks = Counter(
            "sakuga_webhook_deliveries",
            "Webhook delivery attempts, by outcome.",
            ["outcome"],
            registry=reg,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome=outcome)
        self.retention = Counter(
            "sakuga_retention_removed",
            "What the retention sweep removed: expired queued jobs, deleted jobs, blobs.",
            ["kind"],
            registry=reg,
        )
        for kind in RETENTION_KINDS:
            self.retention.labels(kind=kind)

    # -- events (called where they happen) ------------------------------------------------

    def job_finished(
        self,
        template: str | None,
        status: str,
        queue_s: float | None,
        execution_s: float | None,
    ) -> None:
        """A job reached ``status``; the durations are seconds, None when it never ran."""
        label = template_label(template)
        self.finished.labels(status=str(status), template=label).inc()
        if queue_s is not None:
            self.queue_wait.labels(template=label).observe(max(0.0, queue_s))
        if execution_s is not None:
            self.execution.labels(template=label).observe(max(0.0, execution_s))

    def retry(self, reason: str) -> None:
        """An attempt failed transiently and the job was queued again; ``reason`` is the
        error code (``backend_unreachable``, ``out_of_memory``…)."""
        self.retries.labels(reason=reason).inc()

    def swept(self, expired: int, deleted: int, blobs: int) -> None:
        """One retention sweep: queued jobs it expired, jobs it deleted, blobs it removed."""
        for kind, count in zip(RETENTION_KINDS, (expired, deleted, blobs), strict=True):
            if count:
                self.retention.labels(kind=kind).inc(count)

    def webhook_delivery(self, outcome: str) -> None:
        """One delivery attempt ended: ``delivered``, ``retry`` (will try again) or ``dead``."""
        self.webhooks.labels(outcome=outcome).inc()

    # -- states (read at scrape time) -----------------------------------------------------

    async def refresh(self, store: Store, backends: BackendPool | None = None) -> None:
        """Read job counts and backend state into the gauges, just before a scrape."""
        counts = await store.jobs.counts()
        self.set_job_counts(counts)
        if backends is not None:
            self.set_backends(backends)

    def set_job_counts(self, counts: Iterable[tuple[str, str | None, int]]) -> None:
        """``(state, template, jobs)`` rows; every state of a seen template is reported."""
        by_key: dict[tuple[str, str], int] = {}
        for state, template, n in counts:
            key = (state, template_label(template))
            by_key[key] = by_key.get(key, 0) + n
        templates = {template for _, template in by_key}
        self.jobs.clear()
        for template in sorted(templates):
            for state in JobStatus:
                self.jobs.labels(state=state.value, template=template).set(
                    by_key.get((state.value, template), 0)
                )
        queued = sum(n for (state, _), n in by_key.items() if state == JobStatus.QUEUED)
        self.queue_depth.set(queued)

    def set_backends(self, backends: BackendPool) -> None:
        for gauge in (self.backend_up, self.backend_busy, self.backend_capacity):
            gauge.clear()
        for name, backend in backends.backends.items():
            # Health comes from the probe and breaker when the pool has them.
            healthy = bool(getattr(backend, "healthy", True))
            self.backend_up.labels(backend=name).set(1 if healthy else 0)
            self.backend_busy.labels(backend=name).set(backend.busy)
            self.backend_capacity.labels(backend=name).set(backend.capacity)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry as ``(body, content type)`` for a scraper's ``Accept`` header:
        OpenMetrics when asked for, else the Prometheus text format 0.0.4."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
