"""Retention: jobs past ``expires_at`` are expired (never run) or deleted, in small batches.

A job is retrievable until its ``expires_at`` (API-V2 §3); after that it answers 404 and
the sweep removes it: a job still queued becomes ``expired`` (its webhook, if any, says
so) and is deleted once that delivery settled; a finished one is deleted with its attempts,
outputs and settled deliveries. Blobs are content-addressed and may be shared: a hash an
asset stopped using (its job deleted, or the asset itself) is noted in ``blob_releases``,
and ``referenced`` tells whether any asset still uses one (``worker/sweeper.py`` removes
the file, or keeps the note until the blob's grace period has passed).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from sakuga.domain.jobs import TERMINAL, JobStatus
from sakuga.domain.webhooks import DeliveryStatus
from sakuga.store import tables as t
from sakuga.store.db import Database
from sakuga.store.outbox import enqueue_for_job

# Rows per transaction: a sweep never holds the write lock for long.
BATCH = 200

_PAST = t.jobs.c.expires_at <= bindparam("at")
_EXPIRE = (
    update(t.jobs)
    .where(
        t.jobs.c.id.in_(bindparam("ids", expanding=True)),
        t.jobs.c.status == JobStatus.QUEUED.value,
        t.jobs.c.lease_owner.is_(None),
    )
    .values(
        status=JobStatus.EXPIRED.value, updated_at=bindparam("at"), completed_at=bindparam("at")
    )
    .returning(t.jobs.c.id)
)
_QUEUED_PAST = (
    select(t.jobs.c.id)
    .where(_PAST, t.jobs.c.status == JobStatus.QUEUED.value, t.jobs.c.lease_owner.is_(None))
    .limit(BATCH)
)
_UNSETTLED = exists().where(
    t.webhook_deliveries.c.job_id == t.jobs.c.id,
    t.webhook_deliveries.c.status == DeliveryStatus.PENDING.value,
)
_FINISHED_PAST = (
    select(t.jobs.c.id)
    .where(_PAST, t.jobs.c.status.in_([s.value for s in TERMINAL]), ~_UNSETTLED)
    .limit(BATCH)
)
_IDS: Any = bindparam("ids", expanding=True)
_HASHES_OF = select(t.assets.c.hash).where(t.assets.c.job_id.in_(_IDS)).distinct()
_DELETES = (
    delete(t.assets).where(t.assets.c.job_id.in_(_IDS)),
    delete(t.attempts).where(t.attempts.c.job_id.in_(_IDS)),
    delete(t.webhook_deliveries).where(t.webhook_deliveries.c.job_id.in_(_IDS)),
    delete(t.jobs).where(t.jobs.c.id.in_(_IDS)),
)
_USED = select(t.assets.c.id).where(t.assets.c.hash == bindparam("hash")).limit(1)
_RELEASED = (
    select(t.blob_releases.c.hash)
    .where(t.blob_releases.c.released_at <= bindparam("at"))
    .order_by(t.blob_releases.c.released_at)
    .limit(BATCH)
)
_FORGET = delete(t.blob_releases).where(t.blob_releases.c.hash.in_(_IDS))


def release_blobs(conn: Connection, hashes: Collection[str], at: datetime) -> None:
    """Note that assets stopped using these blobs (in the transaction that stopped it)."""
    if not hashes:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    rows = [{"hash": digest, "released_at": at} for digest in hashes]
    conn.execute(dialect.insert(t.blob_releases).on_conflict_do_nothing(), rows)


class Retention:
    """The sweep's queries; each method is one unit of work of at most ``BATCH`` jobs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def expire_queued(self, at: datetime) -> list[str]:
        """Queued jobs past ``expires_at`` become ``expired`` (with their webhook); their ids."""
        db_now = self.db.now_epoch()

        def work(conn: Connection) -> list[str]:
            ids: list[str] = list(conn.scalars(_QUEUED_PAST, {"at": at}))
            if not ids:
                return []
            expired: list[str] = list(conn.scalars(_EXPIRE, {"ids": ids, "at": at}))
            for job_id in expired:
                enqueue_for_job(conn, job_id, "job.expired", db_now)
            return expired

        return await self.db.write(work)

    async def delete_finished(self, at: datetime) -> int:
        """Delete finished jobs past ``expires_at`` with their rows (their outputs' blobs
        are released); how many."""

        def work(conn: Connection) -> int:
            ids: list[str] = list(conn.scalars(_FINISHED_PAST, {"at": at}))
            if not ids:
                return 0
            release_blobs(conn, set(conn.scalars(_HASHES_OF, {"ids": ids})), at)
            for statement in _DELETES:
                conn.execute(statement, {"ids": ids})
            return len(ids)

        return await self.db.write(work)

    async def released(self, at: datetime) -> list[str]:
        """Released blob hashes, oldest first (at most ``BATCH``)."""
        return await self.db.read(lambda conn: list(conn.scalars(_RELEASED, {"at": at})))

    async def forget(self, hashes: Collection[str]) -> None:
        """Drop these release notes (removed, or in use again)."""
        if hashes:
            await self.db.write(lambda conn: conn.execute(_FORGET, {"ids": list(hashes)}))

    async def referenced(self, digest: str) -> bool:
        """Whether any asset row (an upload or a job's output) still uses blob ``digest``."""
        return await self.db.read(lambda conn: conn.scalar(_USED, {"hash": digest}) is not None)
