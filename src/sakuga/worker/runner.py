"""Run one claimed job on one backend: attempt, progress, outputs, outcome, cancel.

The runner owns three tasks while a job runs: the backend run itself, a lease keeper
(heartbeat + cancel watch) and the progress flusher. All are cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sakuga.artifacts import Artifacts
from sakuga.comfy.client import RunResult
from sakuga.comfy.progress import Progress
from sakuga.comfy.protocol import OutputFile
from sakuga.domain.jobs import Job, JobError, JobStatus
from sakuga.domain.templates import builtin_templates
from sakuga.errors import (
    BackendError,
    BackendLost,
    BackendTimeout,
    ExecutionFailed,
    ExecutionInterrupted,
)
from sakuga.notify import Notifier, job_key
from sakuga.settings import Settings
from sakuga.store import Lease, Store
from sakuga.worker.backends import Backend
from sakuga.worker.outputs import collect_output
from sakuga.worker.staging import stage_inputs

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


class JobRun:
    """One attempt of one job; ``await JobRun(...).execute()``."""

    def __init__(self, ctx: RunContext, job: Job, lease: Lease, backend: Backend) -> None:
        self.ctx = ctx
        self.job = job
        self.lease = lease
        self.backend = backend
        self.prompt_id = ""
        self.running = job.status is not JobStatus.QUEUED
        self.cancel = asyncio.Event()
        self.lost = asyncio.Event()
        self.progress: dict[str, Any] | None = job.progress
        self._dirty = asyncio.Event()
        self._seen: set[tuple[str, str, str, str]] = set()
        self._started = time.monotonic()

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
        """Drive the attempt to an outcome; never raises for backend failures."""
        keeper = asyncio.create_task(self._keep_lease(), name=f"lease-{self.job.id}")
        flusher = asyncio.create_task(self._flush_progress(), name=f"progress-{self.job.id}")
        try:
            if self.job.cancel_requested and self.job.status is JobStatus.QUEUED:
                await self._finish(JobStatus.CANCELED, None)
                return
            work = asyncio.create_task(self._run_on_backend(), name=f"run-{self.job.id}")
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
            for task in (keeper, flusher):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(keeper, flusher, return_exceptions=True)

    async def _run_on_backend(self) -> None:
        client = self.backend.client
        previous = self.job.attempts[-1] if self.job.attempts else None
        result: RunResult | None = None
        try:
            if previous is not None and previous.backend == self.backend.url:
                result = await self._reattach(previous.prompt_id, previous.client_id)
            if result is None:
                self.prompt_id, client_id = str(uuid.uuid4()), uuid.uuid4().hex
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
                )
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
                await self._finish(JobStatus.FAILED, _error(exc))
            return
        for output in result.outputs:
            await self._store_output(output)
        if self.cancel.is_set():
            # The prompt finished before the interrupt landed: the work is done, keep it.
            log.info("cancel arrived after completion", extra={"job_id": self.job.id})
        await self._finish(JobStatus.SUCCEEDED, None)

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
        if not self.running:
            self.running = True
            self._started = time.monotonic()
            if not await self.ctx.store.leases.mark_running(self.lease):
                self.lost.set()
                raise LeaseLost(self.job.id)
            self.ctx.notifier.publish(job_key(self.job.id))
        if isinstance(event, OutputFile):
            await self._store_output(event)
        else:
            self.progress = _progress_dict(event)
            self._dirty.set()

    async def _store_output(self, output: OutputFile) -> None:
        key = (output.node_id, output.filename, output.subfolder, output.type)
        if key in self._seen:
            return
        self._seen.add(key)
        row = await collect_output(self.backend.client, self.ctx.artifacts, self.job, output)
        if not await self.ctx.store.leases.add_output(self.lease, row):
            self.lost.set()
            raise LeaseLost(self.job.id)
        self.ctx.notifier.publish(job_key(self.job.id))

    async def _flush_progress(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.progress is not None:
                await self.ctx.store.leases.set_progress(self.lease, self.progress)
                self.ctx.notifier.publish(job_key(self.job.id))
            await asyncio.sleep(PROGRESS_INTERVAL_S)  # the coalescing window, not a wait-for

    async def _keep_lease(self) -> None:
        settings = self.ctx.settings
        next_beat = time.monotonic() + settings.heartbeat_s
        while True:
            await self.ctx.notifier.wait(
                job_key(self.job.id), max(0.0, next_beat - time.monotonic())
            )
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + settings.heartbeat_s
                state = await self.ctx.store.leases.heartbeat(self.lease, settings.lease_s)
                if state is None:
                    self.lost.set()
                    return
                requested = state
            else:
                requested = await self.ctx.store.leases.cancel_requested(self.lease)
            if requested and not self.cancel.is_set():
                self.cancel.set()
                await self._interrupt()

    async def _interrupt(self) -> None:
        if not self.prompt_id:
            return
        client = self.backend.client
        with contextlib.suppress(BackendError):
            await client.delete_pending(self.prompt_id)
            await client.interrupt(self.prompt_id)

    async def _finish(self, status: JobStatus, error: dict[str, Any] | None) -> None:
        progress = self.progress
        if status is JobStatus.SUCCEEDED and progress is not None:
            progress = {**progress, "value": 1.0, "nodes_done": progress.get("nodes_total", 0)}
        run_ms = int((time.monotonic() - self._started) * 1000)
        self._dirty.clear()
        ok = await self.ctx.store.leases.finish(
            self.lease,
            status,
            error=error,
            progress=progress,
            run_ms=run_ms if status is JobStatus.SUCCEEDED else None,
        )
        if not ok:
            self.lost.set()
            raise LeaseLost(self.job.id)
        self.ctx.notifier.publish(job_key(self.job.id))


def _progress_dict(progress: Progress) -> dict[str, Any]:
    return {
        "value": progress.value,
        "nodes_done": progress.nodes_done,
        "nodes_total": progress.nodes_total,
        "current_node": progress.current_node,
        "current_node_class": progress.current_node_class,
        "step": progress.step,
        "steps": progress.steps,
        "message": progress.message,
    }


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
