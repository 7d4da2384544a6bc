"""Worker slots: each backend has ``capacity`` slots; a free slot claims the next job.

A new job wakes an idle slot at once through the notifier; polling every ``poll_s`` is only
the backstop for jobs created by another process and for expired leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid

from sakuga.notify import NEW_JOB
from sakuga.worker.backends import Backend, BackendPool
from sakuga.worker.runner import JobRun, RunContext

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """Unique per process start, readable in logs."""
    return f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class WorkerPool:
    """Owns one task per backend slot; ``async with WorkerPool(...)`` starts and stops them."""

    def __init__(self, ctx: RunContext, backends: BackendPool) -> None:
        self.ctx = ctx
        self.backends = backends
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> WorkerPool:
        for backend in self.backends.backends.values():
            for slot in range(backend.capacity):
                self._tasks.append(
                    asyncio.create_task(self._slot(backend), name=f"slot-{backend.url}-{slot}")
                )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _slot(self, backend: Backend) -> None:
        store, settings = self.ctx.store, self.ctx.settings
        while True:
            try:
                claimed = await store.leases.claim(
                    self.ctx.worker_id, backend.url, settings.lease_s
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is unreachable: back off and try again
                log.exception("claim failed", extra={"backend": backend.url})
                claimed = None
            if claimed is None:
                await self.ctx.notifier.wait(NEW_JOB, settings.poll_s)
                continue
            job, lease = claimed
            target = self.backends.get(job.attempts[-1].backend) if job.attempts else None
            run = JobRun(self.ctx, job, lease, target or backend)
            backend.busy += 1
            try:
                await run.execute()
            except asyncio.CancelledError:
                # Shutting down: give the job back so the next start re-attaches at once.
                with contextlib.suppress(Exception):
                    await asyncio.shield(store.leases.release(lease))
                raise
            except Exception:
                log.exception("job run crashed", extra={"job_id": job.id})
            finally:
                backend.busy -= 1
            # Another job may be waiting: look again at once.
