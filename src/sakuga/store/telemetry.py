"""Attempts' backend telemetry, written after their outcome; attempts that end together
commit together.

Telemetry is written once an attempt's "after" reading arrives, and attempts that ended
close together share that reading (``worker/telemetry.py``), so they reach the store in a
burst: one transaction takes whatever queued up while the previous one was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

from sqlalchemy import and_, bindparam, update
from sqlalchemy.engine import Connection

from sakuga.store import tables as t
from sakuga.store.db import Database
from sakuga.store.leases import Lease

# The attempt row this worker recorded for the lease: the job lease is already released.
_UPDATE_OWN_ATTEMPT = update(t.attempts).where(
    and_(
        t.attempts.c.job_id == bindparam("b_job"),
        t.attempts.c.number == bindparam("b_attempt"),
        t.attempts.c.worker_id == bindparam("b_worker"),
    )
)


class TelemetryWriter:
    """``await writer.write(lease, telemetry)`` returns once the row is committed."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queued: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, lease: Lease, telemetry: dict[str, Any]) -> None:
        """Store ``telemetry`` on the lease's own attempt (raises what the store raised)."""
        row = {
            "b_job": lease.job_id,
            "b_attempt": lease.attempt,
            "b_worker": lease.worker_id,
            "telemetry": telemetry,
        }
        future = asyncio.get_running_loop().create_future()
        self._queued.append((row, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="sakuga-telemetry-writer")
        await future

    async def stop(self) -> None:
        """Cancel the write in flight, if any; its callers see the cancellation."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, future in self._queued:
            future.cancel()
        self._queued = []

    async def _run(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self.db.write(functools.partial(_update, rows=[row for row, _ in batch]))
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # every caller of the batch learns it failed
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)


def _update(conn: Connection, *, rows: list[dict[str, Any]]) -> None:
    conn.execute(_UPDATE_OWN_ATTEMPT, rows)
