"""Run one claimed job on one backend: attempt, progress, outputs, outcome, cancel.

The runner owns three tasks while a job runs: the backend run itself, a lease keeper
(``lease_keeper.py``: heartbeat + cancel watch) and the progress flusher. All are cancelled
and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sakuga.artifacts import Artifacts
from sakuga.comfy.client import RunResult
from sakuga.comfy.progress import Progress
from sakuga.comfy.protocol import OutputFile
from sakuga.domain.jobs import Job, JobError, JobStatus
from sakuga.domain.retry import decide
from sakuga.domain.templates import builtin_templates
from sakuga.errors import (
    BackendError,
    BackendLost,
    BackendTimeout,
    ExecutionFailed,
    ExecutionInterrupted,
)
from sakuga.logs import log_context
from sakuga.metrics import Metrics
from sakuga.notify import NEW_JOB, Notifier, job_key
from sakuga.prompt_keys import PromptKeys
from sakuga.settings import Settings
from sakuga.store import Lease, Store
from sakuga.store.job_queries import JobChange
from sakuga.worker.backends import Backend
from sakuga.worker.lease_keeper import keep_lease
from sakuga.worker.outputs import Outputs
from sakuga.worker.staging import stage_inputs
from sakuga.worker.telemetry import Sampler

log = logging.getLogger(__name__)

# At most ~10 progress writes per second per job, latest value wins (DECISIONS 6).
PROGRESS_INTERVAL_S = 0.1


class LeaseLost(Exception):
    """Another worker owns the job now; stop without writing anything."""


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    store: Store
    artifacts: Artifacts
    notifier: Notifier
    worker_id: str
    metrics: Metrics | None = None
    prompt_keys: PromptKeys | None = None


class JobRun:
    """One attempt of one job; ``await JobRun(...).execute()``."""

    def __init__(self, ctx: RunContext, job: Job, lease: Lease, backend: Backend) -> None:
        self.ctx = ctx
        self.job = job
        self.lease = lease
        self.backend = backend
        self.prompt_id = ""
        # The error code of a failed attempt (read by the pool to feed the breaker).
        self.failure_code: str | None = None
        self.running = job.status is not JobStatus.QUEUED
        self.cancel = asyncio.Event()
        self.lost = asyncio.Event()
        self.progress: dict[str, Any] | None = job.progress
        self._flushed = self.progress  # the snapshot last written (the object, not a copy)
        self._dirty = asyncio.Event()
        # Writes that run beside the socket reader, joined before the outcome is recorded:
        # "running" (set once), then each output's download and row.
        self._marked: asyncio.Task[None] | None = None
        self._outputs = Outputs(backend.client, ctx.artifacts, job, self._record_output)
        self._started = time.monotonic()
        self._started_at: datetime | None = job.started_at if self.running else None
        settings = ctx.settings
        self._sampler = Sampler(
            backend.client,
            backend.readings,
            timeout_s=settings.probe_timeout_s,
            fresh_s=settings.probe_s,
        )
        self._ended_at = 0.0  # time.monotonic() once the outcome is recorded

    @property
    def _job_s(self) -> float:
        """The template's own deadline when it has one, else the server's."""
        template = builtin_templates().get(self.job.template or "")
        if template is not None and template.timeout_s is not None:
            return min(template.timeout_s, self.ctx.settings.job_timeout_s)
        return self.ctx.settings.job_timeout_s

    @property
    def _floor(self) -> float:
        return float((self.job.progress or {}).get("value") or 0.0)

    async def execute(self) -> None:
        """Drive the attempt to an outcome; never raises for backend failures.

        Every log line of the run carries its job_id, attempt and backend. Backend
        telemetry is sampled from the start; ``record_telemetry`` finishes it.
        """
        with self._logged():
            self._sampler.start()
            try:
                await self._execute()
            except BaseException:
                await self._sampler.close()
                raise

    async def record_telemetry(self) -> None:
        """After the outcome (the slot already free): store the attempt's VRAM figures."""
        with self._logged():
            if not self.prompt_id or self.lost.is_set():
                await self._sampler.close()  # nothing ran, or it is no longer ours
                return
            # A retried attempt records no outcome of its own: it ended just now.
            ended_at = self._ended_at or time.monotonic()
            await self._save_telemetry(await self._sampler.result(ended_at))

    def _logged(self) -> contextlib.AbstractContextManager[None]:
        return log_context(job_id=self.job.id, attempt=self.lease.attempt, backend=self.backend.url)

    async def _execute(self) -> None:
        keeper = asyncio.create_task(self._keep_lease(), name=f"lease-{self.job.id}")
        flusher = asyncio.create_task(self._flush_progress(), name=f"progress-{self.job.id}")
        tasks = [keeper, flusher]
        try:
            if self.job.cancel_requested and self.job.status is JobStatus.QUEUED:
                await self._finish(JobStatus.CANCELED, None)
                return
            work = asyncio.create_task(self._run_on_backend(), name=f"run-{self.job.id}")
            tasks.append(work)
            lost = asyncio.create_task(self.lost.wait())
            try:
                await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
            if self.lost.is_set() and not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                    await work
                log.warning("lease lost", extra={"job_id": self.job.id})
                return
            with contextlib.suppress(LeaseLost):
                await work
        finally:
            # Also on shutdown (this task cancelled): nothing of the run outlives it.
            tasks += self._outputs.pending
            if self._marked is not None:
                tasks.append(self._marked)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_on_backend(self) -> None:
        client = self.backend.client
        keys = self.ctx.prompt_keys
        previous = self.job.attempts[-1] if self.job.attempts else None
        result: RunResult | None = None
        try:
            # Only an attempt that never finished (its worker died) can still be running.
            if (
                previous is not None
                and previous.finished_at is None
                and previous.backend == self.backend.url
            ):
                result = await self._reattach(previous.prompt_id, previous.client_id)
            if result is None:
                if self.lease.prompt is not None and not self.prompt_id:
                    # The claim recorded this attempt already, in its own transaction.
                    self.prompt_id, client_id = self.lease.prompt
                else:
                    self.prompt_id, client_id = str(uuid.uuid4()), client.client_id
                    await self._record_attempt(client_id)
                await stage_inputs(client, self.ctx.artifacts, self.job.workflow)
                result = await client.run(
                    self.job.workflow,
                    prompt_id=self.prompt_id,
                    client_id=client_id,
                    on_event=self._on_event,
                    object_info=self.backend.object_info,
                    progress_floor=self._floor,
                    job_s=self._job_s,
                    extra_data=keys.extra_data(self.job.id) if keys else None,
                )
            # The prompt ended: outputs still on their way are written with the outcome.
            self._outputs.hold()
            for output in result.outputs:
                self._outputs.collect(output)
            await self._outputs.stored()
        except ExecutionInterrupted as exc:
            status = JobStatus.CANCELED if self.cancel.is_set() else JobStatus.FAILED
            await self._finish(status, None if self.cancel.is_set() else _error(exc))
            return
        except BackendError as exc:
            if isinstance(exc, BackendTimeout):
                await self._interrupt()  # past its deadline: free the backend for other work
            if self.cancel.is_set():
                await self._finish(JobStatus.CANCELED, None)
            else:
                await self._failed(exc)
            return
        if self.cancel.is_set():
            # The prompt finished before the interrupt landed: the work is done, keep it.
            log.info("cancel arrived after completion", extra={"job_id": self.job.id})
        await self._finish(JobStatus.SUCCEEDED, None)

    async def _failed(self, exc: BackendError) -> None:
        """Retry a transient failure later (preferably elsewhere), or fail for good."""
        self.failure_code = exc.code
        await self._settle()
        failures, strikes = await self.ctx.store.leases.failure_counts(self.lease)
        elapsed = (datetime.now(UTC) - self.job.created_at).total_seconds()
        decision = decide(
            self.ctx.settings.retry_policy,
            code=exc.code,
            transient=exc.transient,
            failures_before=failures,
            strikes_before=strikes,
            ran=self.running,
            elapsed_s=elapsed,
        )
        error = _error(exc)
        log.warning(
            "attempt failed: %s (%s)", exc.message, decision.verdict, extra={"job_id": self.job.id}
        )
        if decision.verdict == "retry":
            for row in self._outputs.take_held():  # kept, as any output of an attempt
                await self._record_output(row)
            await self._outputs.restore()
            outcome = await self.ctx.store.leases.reschedule(
                self.lease,
                error=error,
                delay_s=decision.delay_s,
                strike=decision.strike,
                progress=self.progress,
            )
            if outcome == "lost":
                self.lost.set()
                raise LeaseLost(self.job.id)
            if outcome == "canceling":
                # Canceled while this attempt failed: end as the user asked, not queued again.
                self.cancel.set()
                await self._finish(JobStatus.CANCELED, None, attempt_error=error)
                return
            metrics = getattr(self.ctx, "metrics", None)
            if metrics is not None:
                metrics.retry(exc.code)
            self.ctx.notifier.publish(job_key(self.job.id))
            if decision.delay_s == 0:
                self.ctx.notifier.publish(NEW_JOB)
            return
        attempt_error = error
        if decision.verdict == "poison":
            error = JobError(
                code="poison",
                message=f"{decision.reason}; last error: {exc.message}",
                node_id=error.get("node_id"),
                class_type=error.get("class_type"),
            ).as_dict()
        elif exc.transient:
            error = {**error, "message": f"{exc.message} ({decision.reason})"}
        await self._finish(JobStatus.FAILED, error, attempt_error=attempt_error)

    async def _reattach(self, prompt_id: str, client_id: str) -> RunResult | None:
        """Follow the prompt a previous worker submitted, instead of paying for it twice."""
        self.prompt_id = prompt_id
        await self._record_attempt(client_id)
        try:
            return await self.backend.client.attach(
                self.job.workflow,
                prompt_id=prompt_id,
                client_id=client_id,
                on_event=self._on_event,
                object_info=self.backend.object_info,
                progress_floor=self._floor,
                job_s=self._job_s,
            )
        except BackendLost:
            log.info("prompt gone from backend; submitting again", extra={"job_id": self.job.id})
            return None

    async def _record_attempt(self, client_id: str) -> None:
        ok = await self.ctx.store.leases.start_attempt(
            self.lease, backend=self.backend.url, prompt_id=self.prompt_id, client_id=client_id
        )
        if not ok:
            self.lost.set()
            raise LeaseLost(self.job.id)

    async def _on_event(self, event: Progress | OutputFile) -> None:
        # Nothing here waits on the store or a download: the socket reader (and the
        # /history read after the end marker) go on while those writes run beside it.
        if not self.running:
            self.running = True
            self._started = time.monotonic()
            self._started_at = datetime.now(UTC)
            self._marked = asyncio.create_task(self._mark_running(self._started_at))
        if isinstance(event, OutputFile):
            self._outputs.collect(event)
        else:
            self.progress = event.as_dict()
            self._dirty.set()

    async def _mark_running(self, started_at: datetime) -> None:
        # The first snapshot goes with it: the flusher then has nothing new to write yet.
        progress = self._flushed = self.progress
        if not await self.ctx.store.leases.mark_running(self.lease, started_at, progress):
            self.lost.set()
            raise LeaseLost(self.job.id)
        self._publish(JobChange(status=JobStatus.RUNNING, progress=progress))

    async def _running_marked(self) -> None:
        """Wait for the queued -> running write, so no later write can overtake it."""
        if self._marked is not None:
            await self._marked

    async def _record_output(self, row: dict[str, Any]) -> None:
        await self._running_marked()
        if not await self.ctx.store.leases.add_output(self.lease, row):
            self.lost.set()
            raise LeaseLost(self.job.id)
        self._publish(JobChange(output=row))

    async def _settle(self) -> None:
        """Before the outcome: the running mark and the outputs that are on their way."""
        await self._running_marked()
        await self._outputs.stored(quiet=True)

    async def _flush_progress(self) -> None:
        while True:
            await self._dirty.wait()
            # The coalescing window comes first: a run that ends within it writes its last
            # progress with the outcome, and a long one is still written ~10 times a second.
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            self._dirty.clear()
            await self._running_marked()
            progress = self.progress
            if progress is None or progress is self._flushed:
                continue
            self._flushed = progress
            if await self.ctx.store.leases.set_progress(self.lease, progress):
                self._publish(JobChange(progress=progress))

    async def _keep_lease(self) -> None:
        settings = self.ctx.settings
        await keep_lease(
            self.ctx.store.leases,
            self.ctx.notifier,
            self.lease,
            heartbeat_s=settings.heartbeat_s,
            lease_s=settings.lease_s,
            on_cancel=self._on_cancel,
        )
        self.lost.set()

    async def _on_cancel(self) -> None:
        if not self.cancel.is_set():
            self.cancel.set()
            await self._interrupt()

    async def _interrupt(self) -> None:
        if not self.prompt_id:
            return
        client = self.backend.client
        with contextlib.suppress(BackendError):
            await client.delete_pending(self.prompt_id)
            await client.interrupt(self.prompt_id)

    async def _finish(
        self,
        status: JobStatus,
        error: dict[str, Any] | None,
        *,
        attempt_error: dict[str, Any] | None = None,
    ) -> None:
        await self._settle()
        if status is JobStatus.SUCCEEDED and not self.running:
            # The backend ran it without telling us (silent socket): it did run.
            self.running = True
            if not await self.ctx.store.leases.mark_running(self.lease):
                self.lost.set()
                raise LeaseLost(self.job.id)
        progress = self.progress
        if status is JobStatus.SUCCEEDED and progress is not None:
            progress = {**progress, "value": 1.0, "nodes_done": progress.get("nodes_total", 0)}
        run_ms = int((time.monotonic() - self._started) * 1000)
        self._dirty.clear()
        outputs = self._outputs.take_held()
        ok = await self.ctx.store.leases.finish(
            self.lease,
            status,
            error=error,
            progress=progress,
            run_ms=run_ms if status is JobStatus.SUCCEEDED else None,
            attempt_error=attempt_error,
            outputs=outputs,
        )
        self._ended_at = time.monotonic()
        if not ok:
            self.lost.set()
            raise LeaseLost(self.job.id)
        if self.ctx.prompt_keys is not None:
            self.ctx.prompt_keys.forget(self.job.id)
        self._observe(status)
        for row in outputs:  # the streams send outputs before the terminal status
            self._publish(JobChange(output=row))
        self._publish(JobChange(status=status, progress=progress))
        await self._outputs.restore()

    def _publish(self, change: JobChange) -> None:
        """Wake the job's streams with what was just committed (they need not read it)."""
        self.ctx.notifier.publish(job_key(self.job.id), change)

    def _observe(self, status: JobStatus) -> None:
        """Log the outcome; count it with its queue wait and execution seconds."""
        queue_s = execution_s = None
        if self._started_at is not None:
            queue_s = (self._started_at - self.job.created_at).total_seconds()
            execution_s = (datetime.now(UTC) - self._started_at).total_seconds()
        log.info("job %s", status.value, extra={"queue_s": queue_s, "execution_s": execution_s})
        if self.ctx.metrics is not None:
            self.ctx.metrics.job_finished(self.job.template, status.value, queue_s, execution_s)

    async def _save_telemetry(self, telemetry: dict[str, Any] | None) -> None:
        """Store the attempt's backend telemetry; a failure here is logged, never raised."""
        if telemetry is None:
            return
        try:
            await self.ctx.store.telemetry.write(self.lease, telemetry)
        except Exception:  # the outcome is already recorded; telemetry is best effort
            log.warning("could not store attempt telemetry", exc_info=True)


def _error(exc: BackendError) -> dict[str, Any]:
    if isinstance(exc, ExecutionFailed):
        return JobError(
            code=exc.code,
            message=exc.message,
            node_id=exc.node_id,
            class_type=exc.class_type,
            traceback="".join(exc.traceback) or None,
        ).as_dict()
    return JobError(code=exc.code, message=exc.message).as_dict()
