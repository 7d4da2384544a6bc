"""Worker-side queries: claim with a lease, heartbeat, record attempts, progress and outcome.

Every write after the claim is conditional on (lease owner, attempt number): zero rows
updated means another worker took the job over, and the caller must stop.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, case, cast, insert, or_, select, update
from sqlalchemy.engine import Connection

from sakuga.domain.jobs import ACTIVE, Job, JobStatus
from sakuga.domain.webhooks import event_for
from sakuga.store import tables as t
from sakuga.store.db import Database
from sakuga.store.jobs import now
from sakuga.store.outbox import Outbox, enqueue_for_job
from sakuga.store.records import attempt_from_row, job_from_row


@dataclass(frozen=True)
class Lease:
    """Proof of ownership carried by every worker write."""

    job_id: str
    worker_id: str
    attempt: int
    # ``(prompt_id, client_id)`` of the attempt the claim recorded, if it recorded one.
    prompt: tuple[str, str] | None = None


class LeaseStore:
    """Claim, heartbeat and record; the one place that knows lease rules."""

    def __init__(self, db: Database, outbox: Outbox | None = None) -> None:
        self.db = db
        self.outbox = outbox or Outbox(db)

    def _owned(self, lease: Lease) -> Any:
        return and_(
            t.jobs.c.id == lease.job_id,
            t.jobs.c.lease_owner == lease.worker_id,
            t.jobs.c.attempt_count == lease.attempt,
        )

    async def claim(
        self,
        worker_id: str,
        backend: str,
        lease_s: float,
        *,
        elsewhere_s: float = 0.0,
        record: bool = False,
    ) -> tuple[Job, Lease] | None:
        """Take the oldest runnable job for ``backend`` (new, or whose lease expired).

        A job that failed on ``backend`` waits ``elsewhere_s`` more for another backend.
        With ``record``, a job with no attempt left unfinished (nothing to re-attach to)
        gets its new attempt on ``backend`` in the same transaction: ``Lease.prompt``.
        """
        db_now = self.db.now_epoch()
        eligible = or_(
            cast(t.jobs.c.eligible_backends, String) == "[]",
            cast(t.jobs.c.eligible_backends, String).like(f'%"{backend}"%'),
        )
        claimable = (
            t.jobs.c.status.in_([s.value for s in ACTIVE]),
            or_(t.jobs.c.lease_owner.is_(None), t.jobs.c.lease_expires < db_now),
            or_(t.jobs.c.not_before.is_(None), t.jobs.c.not_before <= db_now),
            or_(
                t.jobs.c.backend.is_(None),
                t.jobs.c.backend != backend,
                t.jobs.c.transient_failures == 0,
                t.jobs.c.not_before + elsewhere_s <= db_now,
            ),
            eligible,
        )
        # Most claims find nothing (a slot freed, a poll): a plain read says so without
        # taking the write lock; the UPDATE below re-checks, so a race only costs a retry.
        probe = select(t.jobs.c.seq).where(*claimable).limit(1)
        if await self.db.read(lambda conn: conn.scalar(probe)) is None:
            return None
        pick = (
            select(t.jobs.c.seq)
            .where(*claimable)
            # A retry prefers another backend than the one it failed on; oldest first.
            .order_by(
                case(
                    (and_(t.jobs.c.backend == backend, t.jobs.c.transient_failures > 0), 1),
                    else_=0,
                ),
                t.jobs.c.seq,
            )
            .limit(1)
        )
        if not self.db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        statement = (
            update(t.jobs)
            .where(t.jobs.c.seq == pick.scalar_subquery())
            .values(
                lease_owner=worker_id,
                lease_expires=db_now + lease_s,
                attempt_count=t.jobs.c.attempt_count + 1,
                updated_at=now(),
            )
            .returning(*t.jobs.c)
        )

        def work(conn: Connection) -> tuple[Job, Lease] | None:
            row = conn.execute(statement).mappings().first()
            if row is None:
                return None
            attempt_rows = (
                conn.execute(
                    select(t.attempts)
                    .where(t.attempts.c.job_id == row["id"])
                    .order_by(t.attempts.c.number)
                )
                .mappings()
                .all()
            )
            job = job_from_row(row, [attempt_from_row(a) for a in attempt_rows])
            lease = Lease(job.id, worker_id, job.attempt_count)
            last = job.attempts[-1] if job.attempts else None
            canceled = job.cancel_requested and job.status is JobStatus.QUEUED
            if not record or canceled or (last is not None and last.finished_at is None):
                return job, lease
            prompt = (str(uuid.uuid4()), uuid.uuid4().hex)
            self._record(conn, lease, backend, *prompt)
            return job, replace(lease, prompt=prompt)

        return await self.db.write(work)

    async def heartbeat(self, lease: Lease, lease_s: float) -> bool | None:
        """Extend the lease; None when it was lost, else whether a cancel was requested."""
        statement = (
            update(t.jobs)
            .where(self._owned(lease))
            .values(lease_expires=self.db.now_epoch() + lease_s)
            .returning(t.jobs.c.cancel_requested)
        )
        row = await self.db.write(lambda conn: conn.execute(statement).first())
        return None if row is None else bool(row[0])

    async def cancel_requested(self, lease: Lease) -> bool:
        query = select(t.jobs.c.cancel_requested).where(t.jobs.c.id == lease.job_id)
        return bool(await self.db.read(lambda conn: conn.scalar(query)))

    async def start_attempt(
        self, lease: Lease, *, backend: str, prompt_id: str, client_id: str
    ) -> bool:
        """Record the attempt (before the prompt is sent, so a successor can re-attach)."""
        return await self.db.write(
            lambda conn: self._record(conn, lease, backend, prompt_id, client_id)
        )

    def _record(
        self, conn: Connection, lease: Lease, backend: str, prompt_id: str, client_id: str
    ) -> bool:
        owned = conn.execute(
            update(t.jobs).where(self._owned(lease)).values(backend=backend, updated_at=now())
        )
        if owned.rowcount == 0:
            return False
        # An earlier attempt left open belonged to a worker whose lease expired.
        conn.execute(
            update(t.attempts)
            .where(t.attempts.c.job_id == lease.job_id, t.attempts.c.finished_at.is_(None))
            .values(
                finished_at=now(),
                error={"code": "worker_lost", "message": "the worker's lease expired"},
            )
        )
        conn.execute(
            insert(t.attempts).values(
                job_id=lease.job_id,
                number=lease.attempt,
                backend=backend,
                prompt_id=prompt_id,
                client_id=client_id,
                worker_id=lease.worker_id,
                started_at=now(),
            )
        )
        return True

    async def mark_running(self, lease: Lease, started_at: datetime | None = None) -> bool:
        """queued -> running, once the backend starts executing the prompt."""
        at = started_at or now()
        db_now = self.db.now_epoch()

        def work(conn: Connection) -> tuple[bool, str | None]:
            result = conn.execute(
                update(t.jobs)
                .where(self._owned(lease), t.jobs.c.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.RUNNING.value, started_at=at, updated_at=at)
            )
            if result.rowcount:
                # The outbox row commits with the change, or not at all.
                return True, enqueue_for_job(conn, lease.job_id, "job.running", db_now)
            still = conn.scalar(select(t.jobs.c.id).where(self._owned(lease)))
            return still is not None, None

        owned, webhook = await self.db.write(work)
        if webhook is not None:
            self.outbox.wake()
        return owned

    async def set_progress(self, lease: Lease, progress: dict[str, Any]) -> bool:
        statement = (
            update(t.jobs).where(self._owned(lease)).values(progress=progress, updated_at=now())
        )
        return await self.db.write(lambda conn: bool(conn.execute(statement).rowcount))

    async def add_output(self, lease: Lease, asset: dict[str, Any]) -> bool:
        """Store one output asset row, unless the lease was lost."""

        def work(conn: Connection) -> bool:
            result = conn.execute(update(t.jobs).where(self._owned(lease)).values(updated_at=now()))
            if result.rowcount == 0:
                return False
            conn.execute(insert(t.assets).values(**asset))
            return True

        return await self.db.write(work)

    async def finish(
        self,
        lease: Lease,
        status: JobStatus,
        *,
        error: dict[str, Any] | None = None,
        progress: dict[str, Any] | None = None,
        run_ms: int | None = None,
        attempt_error: dict[str, Any] | None = None,
    ) -> bool:
        """Record the outcome of the attempt and the job; releases the lease.

        ``attempt_error`` is the attempt's own error when the job's differs (poison).
        """
        at = now()
        values: dict[str, Any] = {
            "status": status.value,
            "updated_at": at,
            "completed_at": at,
            "error": error,
            "lease_owner": None,
            "lease_expires": None,
            "run_ms": run_ms,
        }
        if progress is not None:
            values["progress"] = progress
        db_now = self.db.now_epoch()
        event = event_for(status)

        def work(conn: Connection) -> tuple[bool, str | None]:
            result = conn.execute(update(t.jobs).where(self._owned(lease)).values(**values))
            if result.rowcount == 0:
                return False, None
            conn.execute(
                update(t.attempts)
                .where(t.attempts.c.job_id == lease.job_id, t.attempts.c.number == lease.attempt)
                .values(finished_at=at, error=attempt_error or error)
            )
            if event is None:
                return True, None
            # The outbox row commits with the outcome, or not at all.
            return True, enqueue_for_job(conn, lease.job_id, event, db_now)

        owned, webhook = await self.db.write(work)
        if webhook is not None:
            self.outbox.wake()
        return owned

    async def reschedule(
        self,
        lease: Lease,
        *,
        error: dict[str, Any],
        delay_s: float,
        strike: bool,
        progress: dict[str, Any] | None,
    ) -> bool:
        """A transient failure: back to ``queued``, claimable again after ``delay_s``."""
        at = now()
        not_before = self.db.now_epoch() + delay_s

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(t.jobs)
                .where(self._owned(lease))
                .values(
                    status=JobStatus.QUEUED.value,
                    updated_at=at,
                    lease_owner=None,
                    lease_expires=None,
                    not_before=not_before,
                    transient_failures=t.jobs.c.transient_failures + 1,
                    poison_strikes=t.jobs.c.poison_strikes + (1 if strike else 0),
                    progress=progress,
                )
            )
            if result.rowcount == 0:
                return False
            conn.execute(
                update(t.attempts)
                .where(t.attempts.c.job_id == lease.job_id, t.attempts.c.number == lease.attempt)
                .values(finished_at=at, error=error)
            )
            return True

        return await self.db.write(work)

    async def failure_counts(self, lease: Lease) -> tuple[int, int]:
        """(transient failures, poison strikes) recorded on the job so far."""
        query = select(t.jobs.c.transient_failures, t.jobs.c.poison_strikes).where(
            t.jobs.c.id == lease.job_id
        )
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    async def set_telemetry(self, lease: Lease, telemetry: dict[str, Any]) -> bool:
        """Store backend telemetry on this lease's own attempt row.

        Written after the outcome (so it never delays it), when the job lease is already
        released: the condition is the attempt row this worker recorded for this lease.
        """
        statement = (
            update(t.attempts)
            .where(
                t.attempts.c.job_id == lease.job_id,
                t.attempts.c.number == lease.attempt,
                t.attempts.c.worker_id == lease.worker_id,
            )
            .values(telemetry=telemetry)
        )
        return await self.db.write(lambda conn: bool(conn.execute(statement).rowcount))

    async def release(self, lease: Lease) -> None:
        """Give the job back (shutdown): the next claimant re-attaches to its prompt."""
        statement = (
            update(t.jobs)
            .where(self._owned(lease))
            .values(lease_owner=None, lease_expires=None, updated_at=now())
        )
        await self.db.write(lambda conn: conn.execute(statement).rowcount)
