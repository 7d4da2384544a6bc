"""Job queries: create, read, list, cancel. Worker-side lease queries live in leases.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from sakuga.domain.jobs import Job, JobStatus, cancel_target
from sakuga.errors import IdempotencyKeyReuse
from sakuga.store import tables as t
from sakuga.store.db import Database
from sakuga.store.job_queries import (
    JobDetail,
    active_before,
    median_run_s,
    now,
    queued_before,
    read_detail,
    read_job,
    within_caps,
)
from sakuga.store.outbox import Outbox, enqueue_for_job
from sakuga.store.records import job_from_row

IDEMPOTENCY_TTL = timedelta(hours=24)


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
    # The owner's queued-jobs cap, checked in the insert's transaction; None: no cap.
    max_queued: int | None = None


@dataclass(frozen=True)
class Placement:
    """Where a just-inserted job stands: its ``seq``, queue position and ETA inputs."""

    seq: int
    queue_position: int
    median_run_s: float | None
    ahead: int


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

    async def insert_many(self, batch: list[NewJob]) -> list[BaseException | Placement]:
        """Insert jobs in one transaction when possible; returns each job's placement or error.

        A conflicting idempotency key in a batch falls back to one transaction per job, so
        one client's reuse never fails another client's submission.
        """
        at = now()
        try:
            return await self.db.write(lambda conn: self._insert(conn, batch, at))
        except IntegrityError:
            pass
        return [await self._insert_one(new, at) for new in batch]

    def _insert(
        self, conn: Connection, batch: list[NewJob], at: datetime
    ) -> list[BaseException | Placement]:
        results: list[BaseException | Placement | None] = [None] * len(batch)
        admitted = within_caps(conn, batch, results)
        if admitted:
            # The 201 answer needs the queue position and ETA: a few queries per batch,
            # not per job, since a batch's jobs are queued one after another.
            insert = t.jobs.insert().returning(t.jobs.c.seq, sort_by_parameter_order=True)
            rows = [self._row(batch[i], at) for i in admitted]
            seqs: list[int] = list(map(int, conn.execute(insert, rows).scalars().all()))
            queued = queued_before(conn, seqs[0])
            active = active_before(conn, seqs[0])
            fingerprints = {batch[i].fingerprint for i in admitted}
            medians = {fp: median_run_s(conn, fp) for fp in fingerprints}
            for n, (i, seq) in enumerate(zip(admitted, seqs, strict=True)):
                median = medians[batch[i].fingerprint]
                results[i] = Placement(seq, queued + n + 1, median, active + n)
        return [r for r in results if r is not None]

    async def _insert_one(self, new: NewJob, at: datetime) -> BaseException | Placement:
        for _ in range(2):
            try:
                placed = await self.db.write(lambda conn: self._insert(conn, [new], at))
                return placed[0]
            except IntegrityError:
                if not await self._expire_key(new, at):
                    return await self._reuse_error(new)
        return await self._reuse_error(new)

    async def _expire_key(self, new: NewJob, at: datetime) -> bool:
        """Free a key whose job is older than the 24 h keys are kept (API-V2 §6)."""
        if new.idempotency_key is None:
            return False
        expire = (
            update(t.jobs)
            .where(
                t.jobs.c.owner == new.owner,
                t.jobs.c.idempotency_key == new.idempotency_key,
                t.jobs.c.created_at < at - IDEMPOTENCY_TTL,
            )
            .values(idempotency_key=None)
        )
        return await self.db.write(lambda conn: bool(conn.execute(expire).rowcount))

    async def _reuse_error(self, new: NewJob) -> BaseException:
        query = select(t.jobs.c.id).where(
            t.jobs.c.owner == new.owner, t.jobs.c.idempotency_key == new.idempotency_key
        )
        job_id = await self.db.read(lambda conn: conn.scalar(query))
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
        return await self.db.read(lambda conn: read_job(conn, job_id, owner, attempts=attempts))

    async def detail(
        self, job_id: str, owner: str | None = None, *, attempts: bool = True, eta: bool = True
    ) -> JobDetail | None:
        """The job with what its view shows (outputs, queue position, ETA) in one read."""
        return await self.db.read(
            lambda conn: read_detail(conn, job_id, owner, attempts=attempts, eta=eta)
        )

    async def counts(self) -> list[tuple[str, str | None, int]]:
        """``(status, template, jobs)`` over every job held, in one GROUP BY (metrics)."""
        query = select(t.jobs.c.status, t.jobs.c.template, func.count()).group_by(
            t.jobs.c.status, t.jobs.c.template
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
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

        def work(conn: Connection) -> list[Job]:
            if not metadata:
                return [job_from_row(r) for r in conn.execute(query).mappings().all()]
            # Label filters are checked here so the query stays portable across dialects.
            found: list[Job] = []
            cursor = before_seq
            while len(found) < limit:
                page_query = query.limit(200)
                if cursor is not None:
                    page_query = page_query.where(t.jobs.c.seq < cursor)
                rows = conn.execute(page_query).mappings().all()
                if not rows:
                    break
                for r in rows:
                    labels = r["metadata"] or {}
                    if all(labels.get(k) == v for k, v in metadata.items()):
                        found.append(job_from_row(r))
                cursor = rows[-1]["seq"]
            return found[:limit]

        return await self.db.read(work)

    # -- cancel -------------------------------------------------------------------------

    async def request_cancel(self, job_id: str, owner: str | None) -> JobDetail | None:
        """Move a queued job to canceled and a running one to canceling; terminal: no-op."""
        at = now()
        db_now = self.db.now_epoch()

        def work(conn: Connection) -> tuple[JobDetail | None, str | None]:
            job = read_job(conn, job_id, owner)
            if job is None:
                return None, None
            target = cancel_target(job.status)
            if target is None:
                return read_detail(conn, job_id, owner), None
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
            result = conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == job_id, t.jobs.c.status == job.status.value)
                .where(~claimed if target is JobStatus.CANCELED else t.jobs.c.id == job_id)
                .values(**values)
            )
            webhook = None
            if result.rowcount and target is JobStatus.CANCELED:
                # The outbox row commits with the cancel, or not at all.
                webhook = enqueue_for_job(conn, job_id, "job.canceled", db_now)
            if result.rowcount == 0 and target is JobStatus.CANCELED:
                conn.execute(
                    update(t.jobs)
                    .where(t.jobs.c.id == job_id, or_(claimed, t.jobs.c.status == "running"))
                    .values(status=JobStatus.CANCELING.value, cancel_requested=True, updated_at=at)
                )
            return read_detail(conn, job_id, owner), webhook

        changed, webhook = await self.db.write(work)
        if webhook is not None:
            self.outbox.wake()
        return changed
