"""The ``backends`` table: cached ``/object_info``, run-time registrations, drain flags.

Also the one query that widens queued jobs' ``eligible_backends`` when a backend arrives
(registered, or back with a new catalogue), so a new GPU takes work already waiting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, cast, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from sakuga.domain.jobs import JobStatus
from sakuga.store import tables as t
from sakuga.store.db import Database, aware


@dataclass(frozen=True)
class BackendRow:
    """One row; ``object_info`` is None unless asked for (it can be megabytes)."""

    url: str
    registered: bool
    capacity: int | None
    draining: bool
    refreshed_at: datetime | None
    object_info: dict[str, Any] | None = None


@dataclass(frozen=True)
class QueuedJob:
    seq: int
    id: str
    workflow: dict[str, Any]
    eligible: tuple[str, ...]


class BackendStore:
    """Gateway for backend rows. Writes are upserts, so they never clobber each other's
    columns: a catalogue refresh keeps ``registered``/``draining`` and vice versa."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def rows(self, *, catalogues: bool = False) -> list[BackendRow]:
        columns = [
            t.backends.c.url,
            t.backends.c.registered,
            t.backends.c.capacity,
            t.backends.c.draining,
            t.backends.c.refreshed_at,
        ]
        if catalogues:
            columns.append(t.backends.c.object_info)

        def work(conn: Connection) -> Sequence[RowMapping]:
            return conn.execute(select(*columns)).mappings().all()

        found = await self.db.read(work)
        return [
            BackendRow(
                url=row["url"],
                registered=bool(row["registered"]),
                capacity=row["capacity"],
                draining=bool(row["draining"]),
                refreshed_at=aware(row["refreshed_at"]),
                # An empty catalogue is a placeholder written by a drain: not a cache.
                object_info=(row.get("object_info") or None) if catalogues else None,
            )
            for row in found
        ]

    async def catalogue(self, url: str) -> dict[str, Any] | None:

        def work(conn: Connection) -> dict[str, Any] | None:
            return conn.scalar(select(t.backends.c.object_info).where(t.backends.c.url == url))

        info = await self.db.read(work)
        return info or None

    async def save_catalogue(self, url: str, object_info: dict[str, Any], at: datetime) -> None:
        await self._upsert(url, {"object_info": object_info, "refreshed_at": at})

    async def register(
        self, url: str, *, capacity: int, object_info: dict[str, Any], at: datetime
    ) -> None:
        await self._upsert(
            url,
            {
                "registered": True,
                "capacity": capacity,
                "draining": False,
                "object_info": object_info,
                "refreshed_at": at,
            },
        )

    async def set_draining(self, url: str, draining: bool) -> None:
        await self._upsert(url, {"draining": draining})

    async def delete(self, url: str) -> None:

        def work(conn: Connection) -> None:
            conn.execute(t.backends.delete().where(t.backends.c.url == url))

        await self.db.write(work)

    async def _upsert(self, url: str, values: dict[str, Any]) -> None:
        # A new row needs the NOT NULL columns; ``{}`` marks "no catalogue cached yet".
        row = {"object_info": {}, "refreshed_at": datetime.now(UTC), **values, "url": url}
        dialect = sqlite if self.db.is_sqlite else postgresql
        statement = (
            dialect.insert(t.backends)
            .values(**row)
            .on_conflict_do_update(index_elements=[t.backends.c.url], set_=values)
        )

        def work(conn: Connection) -> None:
            conn.execute(statement)

        await self.db.write(work)

    # -- queued jobs a newly arrived backend could take ---------------------------------

    async def queued_elsewhere(self, url: str, *, after_seq: int, limit: int) -> list[QueuedJob]:
        """Queued jobs (oldest first, past ``after_seq``) whose eligible set lacks ``url``."""
        listed = cast(t.jobs.c.eligible_backends, String)

        def work(conn: Connection) -> Sequence[RowMapping]:
            return (
                conn.execute(
                    select(
                        t.jobs.c.seq,
                        t.jobs.c.id,
                        t.jobs.c.workflow,
                        t.jobs.c.eligible_backends,
                    )
                    .where(
                        t.jobs.c.status == JobStatus.QUEUED.value,
                        t.jobs.c.seq > after_seq,
                        listed != "[]",
                        ~listed.like(f'%"{url}"%'),
                    )
                    .order_by(t.jobs.c.seq)
                    .limit(limit)
                )
                .mappings()
                .all()
            )

        return [
            QueuedJob(r["seq"], r["id"], r["workflow"], tuple(r["eligible_backends"] or ()))
            for r in await self.db.read(work)
        ]

    async def add_eligible(self, jobs: list[QueuedJob], url: str) -> int:
        """Append ``url`` to each job's eligible set, unless it changed meanwhile."""

        def work(conn: Connection) -> int:
            added = 0
            for job in jobs:
                result = conn.execute(
                    update(t.jobs)
                    .where(
                        t.jobs.c.id == job.id,
                        t.jobs.c.status == JobStatus.QUEUED.value,
                        # JSON has no equality on PostgreSQL; compare the text form,
                        # which SQLAlchemy wrote with json.dumps on both databases.
                        cast(t.jobs.c.eligible_backends, String) == json.dumps(list(job.eligible)),
                    )
                    .values(eligible_backends=[*job.eligible, url])
                )
                added += result.rowcount
            return added

        return await self.db.write(work)
