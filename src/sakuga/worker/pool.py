"""Dispatch: claim jobs for backends with a free slot, least-loaded healthy backend first.

Each backend has ``capacity`` slots (running + prefetched prompts). One dispatcher task
claims on their behalf: on a new job (the notifier's ``NEW_JOB``), when a job ends, when a
backend changes (added, resumed, healthy again) and every ``poll_s`` as the backstop for
jobs created by other processes and for expired leases. A round walks the dispatchable
backends in load order (busy/capacity) and claims for the first; a backend that finds
nothing it can run is skipped for the rest of the round, so a job only one backend can run
still reaches it at once. Each claimed job runs in its own task:
``JobRun(ctx, job, lease, backend).execute()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid

from sakuga.domain.jobs import Job
from sakuga.notify import NEW_JOB, Notifier
from sakuga.store import Lease
from sakuga.worker.backends import BACKEND_FAULTS, Backend, BackendPool
from sakuga.worker.runner import JobRun, RunContext

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """Unique per process start, readable in logs."""
    return f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class WorkerPool:
    """Owns the dispatcher and one task per running job; ``async with`` starts and stops them.

    On exit every running job is cancelled and its lease handed back, so the next start (or
    another worker) re-attaches to the prompt still on the backend.
    """

    def __init__(self, ctx: RunContext, backends: BackendPool) -> None:
        self.ctx = ctx
        self.backends = backends
        self._wake = asyncio.Event()
        # Set with ``_wake`` when there may be new work (a new job, a backend change); a
        # freed slot sets only ``_wake``, and needs no claim where the queue was empty.
        self._news = asyncio.Event()
        self._nothing_for: set[str] = set()
        # Backends whose last claim said more jobs wait: their next claim skips the probe.
        self._more_for: set[str] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> WorkerPool:
        self._wake = self.ctx.notifier.subscribe(NEW_JOB)
        self._news = self.ctx.notifier.subscribe(NEW_JOB)
        self.backends.on_change(self._changed)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="dispatcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.backends.off_change(self._changed)
        self.ctx.notifier.unsubscribe(NEW_JOB, self._wake)
        self.ctx.notifier.unsubscribe(NEW_JOB, self._news)
        tasks = [t for t in (self._dispatcher, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        self._runs.clear()

    def _changed(self) -> None:
        self._news.set()
        self._wake.set()

    async def _dispatch(self) -> None:
        polled = True
        while True:
            self._wake.clear()  # before the round: a wake-up during it means "look again"
            news = self._news.is_set()
            if polled or news:
                # Work may have appeared anywhere (the poll also covers other processes,
                # expired leases and retry delays): every backend claims again.
                self._news.clear()
                self._nothing_for.clear()
            await self._round(expect_job=news)
            polled = not await Notifier.wait_event(self._wake, self.ctx.settings.poll_s)

    async def _round(self, *, expect_job: bool) -> None:
        """Claim for free backends until each is full or finds nothing.

        ``expect_job``: a new job was announced, so the first claim skips its read-only look.
        """
        store, settings = self.ctx.store, self.ctx.settings
        found_nothing = self._nothing_for
        while True:
            free = [b for b in self.backends.dispatchable() if b.url not in found_nothing]
            if not free:
                return
            backend = free[0]
            try:
                claimed = await store.leases.claim(
                    self.ctx.worker_id,
                    backend.url,
                    settings.lease_s,
                    elsewhere_s=settings.retry_elsewhere_s,
                    record=True,
                    probe=not expect_job and backend.url not in self._more_for,
                    capacity=backend.capacity,
                    client_id=backend.client.client_id,
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is unreachable: the next poll tries again
                log.exception("claim failed", extra={"backend": backend.url})
                return
            expect_job = False
            if claimed is None or not claimed.more:
                found_nothing.add(backend.url)
                self._more_for.discard(backend.url)
            else:
                self._more_for.add(backend.url)
            if claimed is not None:
                self._start(backend, claimed.job, claimed.lease)

    def _start(self, backend: Backend, job: Job, lease: Lease) -> None:
        # An attempt left unfinished by a dead worker may still be running on its
        # backend: follow it there. Anything else runs on the claiming backend.
        last = job.attempts[-1] if job.attempts else None
        unfinished = last is not None and last.finished_at is None
        target = self.backends.get(last.backend) if unfinished and last else None
        runs_on = target or backend
        runs_on.busy += 1  # before the next claim of this round looks at the load
        task = asyncio.create_task(self._run(runs_on, job, lease), name=f"job-{job.id}")
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run(self, backend: Backend, job: Job, lease: Lease) -> None:
        store = self.ctx.store
        run = JobRun(self.ctx, job, lease, backend)
        try:
            await run.execute()
        except asyncio.CancelledError:
            backend.busy -= 1
            # Shutting down: give the job back so the next start re-attaches at once.
            with contextlib.suppress(Exception):
                await asyncio.shield(store.leases.release(lease))
            raise
        except Exception:
            log.exception("job run crashed", extra={"job_id": job.id})
            backend.busy -= 1
            ended = False
        else:
            backend.busy -= 1
            self._report(backend, run)
            ended = True
        self._wake.set()  # a slot is free: another job may be waiting
        await self.backends.settle(backend)
        if ended:
            await run.record_telemetry()

    def _report(self, backend: Backend, run: JobRun) -> None:
        """Feed the attempt's outcome to the backend's breaker.

        A lost backend (unreachable, prompt gone) is a failure; any answer from it, even
        the workflow's own error, is a success. A run that never reached it counts not.
        """
        if not run.prompt_id or run.lost.is_set():
            return
        if run.failure_code in BACKEND_FAULTS:
            self.backends.backend_error(backend.url)
        else:
            self.backends.backend_ok(backend.url)
