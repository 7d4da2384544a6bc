"""The retention sweep: every ``sweep_s``, jobs past ``expires_at`` are expired or deleted,
and released blobs (their jobs deleted, or their assets) that nothing uses are removed.

A blob is removed only when no asset row uses it and it was not written or reused for
``BLOB_GRACE_S`` (until then its release waits for a later sweep). It is moved aside first
and the rows are asked again, so an upload or an output that started using it meanwhile
gets it back; uploads also re-check the file after recording their row (``api/assets.py``,
``worker/outputs.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sakuga.artifacts import Artifacts
from sakuga.metrics import Metrics
from sakuga.notify import Notifier, job_key
from sakuga.store import Store

log = logging.getLogger(__name__)

# A blob written or reused this recently is never removed (uploads in flight).
BLOB_GRACE_S = 600.0

Release = Literal["removed", "in use", "recent"]


@dataclass(frozen=True)
class Swept:
    """What one sweep did."""

    expired: int = 0
    deleted: int = 0
    blobs_removed: int = 0


class Sweeper:
    """``async with Sweeper(...)``: sweeps every ``every_s``, the first time one interval
    after the start."""

    def __init__(
        self,
        store: Store,
        artifacts: Artifacts,
        notifier: Notifier,
        *,
        every_s: float,
        blob_grace_s: float = BLOB_GRACE_S,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.notifier = notifier
        self.every_s = every_s
        self.blob_grace_s = blob_grace_s
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sweeper:
        self._task = asyncio.create_task(self._run(), name="sakuga-sweeper")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            # First after one interval: a start (and its readiness checks) has enough to do.
            await asyncio.sleep(self.every_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is down: the next round tries again
                log.exception("retention sweep failed")

    async def sweep(self, at: datetime | None = None) -> Swept:
        """One pass over everything past its ``expires_at`` (as of ``at``, default now)."""
        at = at or datetime.now(UTC)
        retention = self.store.retention
        expired = 0
        while batch := await retention.expire_queued(at):
            expired += len(batch)
            for job_id in batch:
                self.notifier.publish(job_key(job_id))
            self.store.outbox.wake()
        deleted = 0
        while count := await retention.delete_finished(at):
            deleted += count
        removed = 0
        settled: list[str] = []
        for digest in await retention.released(at):
            outcome = await self.release_blob(digest)
            if outcome == "removed":
                removed += 1
            if outcome != "recent":  # a recent one is looked at again next time
                settled.append(digest)
        await retention.forget(settled)
        swept = Swept(expired, deleted, removed)
        if self.metrics is not None:
            self.metrics.swept(expired, deleted, removed)
        if expired or deleted or removed:
            log.info(
                "retention: %d queued jobs expired, %d jobs deleted, %d blobs removed",
                expired,
                deleted,
                removed,
            )
        return swept

    async def release_blob(self, digest: str) -> Release:
        """Remove blob ``digest`` unless an asset uses it or it is in its grace period
        (an already missing blob counts as removed)."""
        if await self.store.retention.referenced(digest):
            return "in use"
        if not self.artifacts.exists(digest):
            return "removed"
        retired = await asyncio.to_thread(self.artifacts.retire, digest, self.blob_grace_s)
        if retired is None:
            return "recent"
        if await self.store.retention.referenced(digest):
            await asyncio.to_thread(self.artifacts.restore, retired, digest)
            return "in use"
        await asyncio.to_thread(retired.unlink, True)
        return "removed"
