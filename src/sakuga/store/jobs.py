"""Job queries: create, read, list, cancel. Worker-side lease queries live in leases.py."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from sakuga.domain.jobs import ACTIVE, Job, JobStatus, cancel_target
from sakuga.errors import IdempotencyKeyReuse
from sakuga.store import tables as t
from sakuga.store.db import Database
from sakuga.store.outbox import Outbox, enqueue_for_job
from sakuga.store.records import attempt_from_row, job_from_row

ETA_SAMPLES = 3
IDEMPOTENCY_TTL = timedelta(hours=24)
ETA_WINDOW = 20


@dataclass(frozen=True)
class NewJob:
    """What the API hands the store to create one queued job."""

    id: str
    owner: str
    workflow: dict[str, Any]
    fingerprint: str
    eligible_backends: tuple[str, ...]
    template: str | None = None
    params: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    # Where the job's webhook events go (sakuga extension); None sends none.
    webhook_url: str | None = None
    # Set by the API so its 201 answer shows the stored time; else the insert's time.
    created_at: datetime | None = None


def now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    """The gateway for job rows. Every method is one unit of work."""

    def __init__(self, db: Database, *, retention_s: int, outbox: Outbox | None = None) -> None:
        self.db = db
        self.retention = timedelta(seconds=retention_s)
        self.outbox = outbox or Outbox(db)

    # -- create -------------------------------------------------------------------------

    def _row(self, new: NewJob, at: datetime) -> dict[str, Any]:
        return {
            "id": new.id,
            "owner": new.owner,
            "status": JobStatus.QUEUED.value,
            "template": new.template,
            "params": new.params,
            "workflow": new.workflow,
            "metadata": new.metadata,
            "fingerprint": new.fingerprint,
            "idempotency_key": new.idempotency_key,
            "webhook_url": new.webhook_url,
            "created_at": new.created_at or at,
            "updated_at": new.created_at or at,
            "expires_at": (new.created_at or at) + self.retention,
            "eligible_backends": list(new.eligible_backends),
            "attempt_count": 0,
            "cancel_requested": False,
        }

    async def insert_many(self, batch: list[NewJob]) -> list[BaseException | int]:
        """Insert jobs in one transaction when possible; returns each job's ``seq`` or error.

        A conflicting idempotency key in a batch falls back to one transaction per job, so
        one client's reuse never fails another client's submission.
        """
        at = now()
        insert = t.jobs.insert().returning(t.jobs.c.seq, sort_by_parameter_order=True)
        try:
            async with self.db.begin() as conn:
                result = await conn.execute(insert, [self._row(new, at) for new in batch])
                return [int(seq) for seq in result.scalars().all()]
        except IntegrityError:
            pass
        return [await self._insert_one(new, at) for new in batch]

    async def _insert_one(self, new: NewJob, at: datetime) -> BaseException | int:
        for _ in range(2):
            try:
                async with self.db.begin() as conn:
                    seq = await conn.scalar(
                        t.jobs.insert().values(**self._row(new, at)).returning(t.jobs.c.seq)
                    )
                return int(seq or 0)
            except IntegrityError:
                if not await self._expire_key(new, at):
                    return await self._reuse_error(new)
        return await self._reuse_error(new)

    async def _expire_key(self, new: NewJob, at: datetime) -> bool:
        """Free a key whose job is older than the 24 h keys are kept (API-V2 §6)."""
        if new.idempotency_key is None:
            return False
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(t.jobs)
                .where(
                    t.jobs.c.owner == new.owner,
                    t.jobs.c.idempotency_key == new.idempotency_key,
                    t.jobs.c.created_at < at - IDEMPOTENCY_TTL,
                )
                .values(idempotency_key=None)
            )
        return bool(result.rowcount)

    async def _reuse_error(self, new: NewJob) -> BaseException:
        async with self.db.read() as conn:
            job_id = await conn.scalar(
                select(t.jobs.c.id).where(
                    t.jobs.c.owner == new.owner, t.jobs.c.idempotency_key == new.idempotency_key
                )
            )
        return IdempotencyKeyReuse(
            f"Idempotency-Key {new.idempotency_key!r} was already used; "
            "send a new key for a new job",
            details={"job_id": job_id},
        )

    # -- read ---------------------------------------------------------------------------

    async def get(
        self, job_id: str, owner: str | None = None, *, attempts: bool = True
    ) -> Job | None:
        """The job (with its attempts unless ``attempts`` is False), or None when unknown."""
        async with self.db.read() as conn:
            return await self._get(conn, job_id, owner, attempts=attempts)

    async def _get(
        self, conn: AsyncConnection, job_id: str, owner: str | None, *, attempts: bool = True
    ) -> Job | None:
        query = select(t.jobs).where(t.jobs.c.id == job_id)
        if owner is not None:
            # A caller's view: past its retention (``expires_at``) a job is gone (API-V2 §3).
            query = query.where(t.jobs.c.owner == owner, t.jobs.c.expires_at > now())
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        if not attempts:
            return job_from_row(row)
        attempt_rows = (
            (
                await conn.execute(
                    select(t.attempts)
                    .where(t.attempts.c.job_id == job_id)
                    .order_by(t.attempts.c.number)
                )
            )
            .mappings()
            .all()
        )
        return job_from_row(row, [attempt_from_row(a) for a in attempt_rows])

    async def counts(self) -> list[tuple[str, str | None, int]]:
        """``(status, template, jobs)`` over every job held, in one GROUP BY (metrics)."""
        query = select(t.jobs.c.status, t.jobs.c.template, func.count()).group_by(
            t.jobs.c.status, t.jobs.c.template
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(str(row[0]), row[1], int(row[2])) for row in rows]

    async def page(
        self,
        owner: str | None,
        *,
        limit: int,
        before_seq: int | None = None,
        metadata: dict[str, str] | None = None,
        status: JobStatus | None = None,
    ) -> list[Job]:
        """Newest first, ``limit`` jobs older than ``before_seq`` (the cursor)."""
        query = (
            select(t.jobs)
            .where(t.jobs.c.expires_at > now())
            .order_by(t.jobs.c.seq.desc())
            .limit(limit)
        )
        if owner is not None:
            query = query.where(t.jobs.c.owner == owner)
        if before_seq is not None:
            query = query.where(t.jobs.c.seq < before_seq)
        if status is not None:
            query = query.where(t.jobs.c.status == status.value)
        rows_needed = limit
        async with self.db.read() as conn:
            if not metadata:
                rows = (await conn.execute(query)).mappings().all()
                return [job_from_row(r) for r in rows]
            # Label filters are checked here so the query stays portable across dialects.
            found: list[Job] = []
            cursor = before_seq
            while len(found) < rows_needed:
                page_query = query.limit(200)
                if cursor is not None:
                    page_query = page_query.where(t.jobs.c.seq < cursor)
                rows = (await conn.execute(page_query)).mappings().all()
                if not rows:
                    break
                for r in rows:
                    labels = r["metadata"] or {}
                    if all(labels.get(k) == v for k, v in metadata.items()):
                        found.append(job_from_row(r))
                cursor = rows[-1]["seq"]
            return found[:rows_needed]

    async def queue_position(self, job: Job) -> int | None:
        """1 for the next job to start; None unless queued."""
        if job.status is not JobStatus.QUEUED:
            return None
        async with self.db.read() as conn:
            ahead = await conn.scalar(
                select(func.count())
                .select_from(t.jobs)
                .where(t.jobs.c.status == JobStatus.QUEUED.value, t.jobs.c.seq < job.seq)
            )
        return int(ahead or 0) + 1

    async def count_queued(self, owner: str) -> int:
        """How many of this owner's jobs wait in the queue (the per-key queue cap)."""
        async with self.db.read() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(t.jobs)
                .where(t.jobs.c.owner == owner, t.jobs.c.status == JobStatus.QUEUED.value)
            )
        return int(count or 0)

    async def eta_inputs(self, job: Job) -> tuple[float | None, int]:
        """Median run seconds of recent jobs like this one (None below 3 samples), jobs ahead."""
        async with self.db.read() as conn:
            samples: list[int] = list(
                await conn.scalars(
                    select(t.jobs.c.run_ms)
                    .where(
                        t.jobs.c.fingerprint == job.fingerprint,
                        t.jobs.c.status == JobStatus.SUCCEEDED.value,
                        t.jobs.c.run_ms.is_not(None),
                    )
                    .order_by(t.jobs.c.seq.desc())
                    .limit(ETA_WINDOW)
                )
            )
            ahead = await conn.scalar(
                select(func.count())
                .select_from(t.jobs)
                .where(
                    t.jobs.c.status.in_([s.value for s in ACTIVE]),
                    t.jobs.c.seq < job.seq,
                )
            )
        median = statistics.median(samples) / 1000 if len(samples) >= ETA_SAMPLES else None
        return median, int(ahead or 0)

    async def outputs(self, job_id: str) -> list[dict[str, Any]]:
        """The job's output asset rows in the order they were stored."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(t.assets)
                    .where(t.assets.c.job_id == job_id)
                    .order_by(t.assets.c.created_at, t.assets.c.id)
                )
            ).mappings()
            return [dict(r) for r in rows]

    # -- cancel -------------------------------------------------------------------------

    async def request_cancel(self, job_id: str, owner: str | None) -> Job | None:
        """Move a queued job to canceled and a running one to canceling; terminal: no-op."""
        async with self.db.begin() as conn:
            job = await self._get(conn, job_id, owner)
            if job is None:
                return None
            target = cancel_target(job.status)
            if target is None:
                return job
            at = now()
            values: dict[str, Any] = {
                "status": target.value,
                "cancel_requested": True,
                "updated_at": at,
            }
            if target is JobStatus.CANCELED:
                values["completed_at"] = at
                values["progress"] = job.progress
            # A queued job a worker already claimed is being submitted right now: let the
            # worker finish the cancel so the backend never keeps an orphan prompt.
            claimed = and_(t.jobs.c.lease_owner.is_not(None), t.jobs.c.status == "queued")
            result = await conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == job_id, t.jobs.c.status == job.status.value)
                .where(~claimed if target is JobStatus.CANCELED else t.jobs.c.id == job_id)
                .values(**values)
            )
            webhook = None
            if result.rowcount and target is JobStatus.CANCELED:
                # The outbox row commits with the cancel, or not at all.
                webhook = await enqueue_for_job(conn, job_id, "job.canceled", self.db.now_epoch())
            if result.rowcount == 0 and target is JobStatus.CANCELED:
                await conn.execute(
                    update(t.jobs)
                    .where(t.jobs.c.id == job_id, or_(claimed, t.jobs.c.status == "running"))
                    .values(status=JobStatus.CANCELING.value, cancel_requested=True, updated_at=at)
                )
            changed = await self._get(conn, job_id, owner)
        if webhook is not None:
            self.outbox.wake()
        return changed
