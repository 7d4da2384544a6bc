"""Worker-side queries: claim with a lease, heartbeat, record attempts, progress and outcome.

Every write after the claim is conditional on (lease owner, attempt number): zero rows
updated means another worker took the job over, and the caller must stop.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import String, and_, bindparam, case, cast, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from sakuga.domain.jobs import ACTIVE, Job, JobStatus
from sakuga.domain.webhooks import event_for
from sakuga.store import tables as t
from sakuga.store.db import Database
from sakuga.store.job_queries import now, read_attempts
from sakuga.store.outbox import Outbox, enqueue_for_job
from sakuga.store.records import job_from_row

# ``capacity=None``: no cap on a backend's leased jobs.
NO_LIMIT = 2**31 - 1
# PostgreSQL advisory locks are (class, object) pairs of int4: sakuga's claims take
# (this class, hashtext(backend)), so they never collide with another application's.
CLAIM_LOCK_CLASS = 0x5A6B


@dataclass(frozen=True)
class Lease:
    """Proof of ownership carried by every worker write."""

    job_id: str
    worker_id: str
    attempt: int
    # ``(prompt_id, client_id)`` of the attempt the claim recorded, if it recorded one.
    prompt: tuple[str, str] | None = None
    # Whether the job has a webhook (fixed at submission): without one, no outbox look.
    webhook: bool = True


class Claim(NamedTuple):
    """A claimed job, the lease that proves it is ours, and whether more wait for the backend.

    ``more`` is False when, right after this claim and in its transaction, no other job
    was claimable for the backend (slots aside): a new one comes with news of its own.
    """

    job: Job
    lease: Lease
    more: bool


class LeaseStore:
    """Claim, heartbeat and record; the one place that knows lease rules."""

    def __init__(self, db: Database, outbox: Outbox | None = None) -> None:
        self.db = db
        self.outbox = outbox or Outbox(db)
        self._claims = _claim_statements(db)

    async def claim(
        self,
        worker_id: str,
        backend: str,
        lease_s: float,
        *,
        elsewhere_s: float = 0.0,
        record: bool = False,
        probe: bool = True,
        capacity: int | None = None,
        client_id: str | None = None,
    ) -> Claim | None:
        """Take the oldest runnable job for ``backend`` (new, or whose lease expired).

        A job that failed on ``backend`` waits ``elsewhere_s`` more for another backend.
        With ``record``, a job with no attempt left unfinished (nothing to re-attach to)
        gets its new attempt on ``backend`` in the same transaction: ``Lease.prompt``.
        ``probe=False`` skips the read-only look first, for a caller that expects a job.
        ``capacity`` counts the jobs every process has leased on ``backend``: at that many,
        nothing is claimed (workers in several processes share a backend's slots).
        ``client_id``: the one the recorded attempt will submit under (default: a new one).
        """
        look, take, slot_lock = self._claims
        bound = {
            "b_backend": backend,
            "eligible": f'%"{backend}"%',
            "elsewhere_s": elsewhere_s,
            "b_capacity": NO_LIMIT if capacity is None else capacity,
        }
        # Most claims find nothing (a slot freed, a poll): a plain read says so without
        # taking the write lock; the UPDATE below re-checks, so a race only costs a retry.
        if probe and await self.db.read(lambda conn: conn.scalar(look, bound)) is None:
            return None
        taking = {**bound, "worker_id": worker_id, "lease_s": lease_s, "at": now()}
        # Slots aside: a backend this claim filled still has work waiting for its next slot.
        after = {**bound, "b_capacity": NO_LIMIT}

        def work(conn: Connection) -> Claim | None:
            if slot_lock is not None and capacity is not None:
                # Claims for one backend take turns, so two at the same instant cannot
                # both take its last slot (SQLite's writers take turns anyway).
                conn.execute(slot_lock, bound)
            row = conn.execute(take, taking).mappings().first()
            if row is None:
                return None
            # A first claim has no attempts to read (the count includes this one).
            first = row["attempt_count"] == 1
            job = job_from_row(row, [] if first else read_attempts(conn, row["id"]))
            lease = Lease(job.id, worker_id, job.attempt_count, webhook=bool(row["webhook_url"]))
            # Saves the caller a claim that would find the queue empty.
            more = conn.scalar(look, after) is not None
            last = job.attempts[-1] if job.attempts else None
            canceled = job.cancel_requested and job.status is JobStatus.QUEUED
            if not record or canceled or (last is not None and last.finished_at is None):
                return Claim(job, lease, more)
            prompt = (str(uuid.uuid4()), client_id or uuid.uuid4().hex)
            self._record(conn, lease, backend, *prompt, earlier=not first)
            return Claim(job, replace(lease, prompt=prompt), more)

        return await self.db.write(work)

    async def heartbeat(self, lease: Lease, lease_s: float) -> bool | None:
        """Extend the lease; None when it was lost, else whether a cancel was requested."""
        statement = (
            update(t.jobs)
            .where(_OWNED)
            .values(lease_expires=self.db.now_epoch() + lease_s)
            .returning(t.jobs.c.cancel_requested)
        )
        row = await self.db.write(lambda conn: conn.execute(statement, _bound(lease)).first())
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
        self,
        conn: Connection,
        lease: Lease,
        backend: str,
        prompt_id: str,
        client_id: str,
        *,
        earlier: bool = True,
    ) -> bool:
        """Record this lease's attempt; ``earlier``: the job may have attempts before it."""
        at = now()
        if not _update_owned(conn, lease, backend=backend, updated_at=at):
            return False
        if earlier:
            # An earlier attempt left open belonged to a worker whose lease expired.
            lost = {"code": "worker_lost", "message": "the worker's lease expired"}
            conn.execute(
                _CLOSE_OPEN_ATTEMPTS, {"b_job": lease.job_id, "finished_at": at, "error": lost}
            )
        attempt = {
            "job_id": lease.job_id,
            "number": lease.attempt,
            "backend": backend,
            "prompt_id": prompt_id,
            "client_id": client_id,
            "worker_id": lease.worker_id,
            "started_at": at,
        }
        conn.execute(_INSERT_ATTEMPT, attempt)
        return True

    async def mark_running(
        self,
        lease: Lease,
        started_at: datetime | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """queued -> running, once the backend starts executing the prompt (with the first
        progress snapshot, when there is one already)."""
        at = started_at or now()
        db_now = self.db.now_epoch()
        values: dict[str, Any] = {
            "status": JobStatus.RUNNING.value,
            "started_at": at,
            "updated_at": at,
        }
        if progress is not None:
            values["progress"] = progress

        def work(conn: Connection) -> tuple[bool, str | None]:
            if conn.execute(_START, {**_bound(lease), **values}).rowcount:
                # The outbox row commits with the change, or not at all.
                return True, _enqueue(conn, lease, "job.running", db_now)
            return conn.scalar(_STILL_OWNED, _bound(lease)) is not None, None

        owned, webhook = await self.db.write(work)
        if webhook is not None:
            self.outbox.wake()
        return owned

    async def set_progress(self, lease: Lease, progress: dict[str, Any]) -> bool:
        return await self.db.write(
            lambda conn: _update_owned(conn, lease, progress=progress, updated_at=now())
        )

    async def add_output(self, lease: Lease, asset: dict[str, Any]) -> bool:
        """Store one output asset row, unless the lease was lost."""

        def work(conn: Connection) -> bool:
            if not _update_owned(conn, lease, updated_at=now()):
                return False
            conn.execute(_INSERT_ASSET, asset)
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
        outputs: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Record the outcome of the attempt and the job; releases the lease.

        ``attempt_error`` is the attempt's own error when the job's differs (poison);
        ``outputs`` are output asset rows that commit with the outcome.
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
        ended = {**_attempt_of(lease), "finished_at": at, "error": attempt_error or error}

        def work(conn: Connection) -> tuple[bool, str | None]:
            if not _update_owned(conn, lease, **values):
                return False, None
            conn.execute(_UPDATE_ATTEMPT, ended)
            if outputs:
                conn.execute(_INSERT_ASSET, list(outputs))
            if event is None:
                return True, None
            # The outbox row commits with the outcome, or not at all.
            return True, _enqueue(conn, lease, event, db_now)

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
    ) -> Literal["queued", "canceling", "lost"]:
        """A transient failure: back to ``queued``, claimable again after ``delay_s``.

        Not when a cancel was requested meanwhile (``canceling`` may only end, never go
        back to the queue): "canceling", and the caller records the cancel instead.
        "lost" when the lease is no longer this worker's.
        """
        at = now()
        not_before = self.db.now_epoch() + delay_s

        def work(conn: Connection) -> Literal["queued", "canceling", "lost"]:
            result = conn.execute(
                update(t.jobs)
                .where(_OWNED, t.jobs.c.status != JobStatus.CANCELING.value)
                .values(
                    status=JobStatus.QUEUED.value,
                    updated_at=at,
                    lease_owner=None,
                    lease_expires=None,
                    not_before=not_before,
                    transient_failures=t.jobs.c.transient_failures + 1,
                    poison_strikes=t.jobs.c.poison_strikes + (1 if strike else 0),
                    progress=progress,
                ),
                _bound(lease),
            )
            if result.rowcount == 0:
                return "canceling" if conn.scalar(_STILL_OWNED, _bound(lease)) else "lost"
            conn.execute(_UPDATE_ATTEMPT, {**_attempt_of(lease), "finished_at": at, "error": error})
            return "queued"

        return await self.db.write(work)

    async def failure_counts(self, lease: Lease) -> tuple[int, int]:
        """(transient failures, poison strikes) recorded on the job so far."""
        query = select(t.jobs.c.transient_failures, t.jobs.c.poison_strikes).where(
            t.jobs.c.id == lease.job_id
        )
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    async def release(self, lease: Lease) -> None:
        """Give the job back (shutdown): the next claimant re-attaches to its prompt."""
        await self.db.write(
            lambda conn: _update_owned(
                conn, lease, lease_owner=None, lease_expires=None, updated_at=now()
            )
        )


# -- statements built once; the lease's values are bound per call --------------------------

_OWNED = and_(
    t.jobs.c.id == bindparam("b_job"),
    t.jobs.c.lease_owner == bindparam("b_worker"),
    t.jobs.c.attempt_count == bindparam("b_attempt"),
)
# Executed with the lease's ``b_*`` values plus column values: those become the SET list.
_UPDATE_OWNED = update(t.jobs).where(_OWNED)
_START = update(t.jobs).where(_OWNED, t.jobs.c.status == JobStatus.QUEUED.value)
_STILL_OWNED = select(t.jobs.c.id).where(_OWNED)
_THIS_ATTEMPT = and_(
    t.attempts.c.job_id == bindparam("b_job"), t.attempts.c.number == bindparam("b_attempt")
)
_UPDATE_ATTEMPT = update(t.attempts).where(_THIS_ATTEMPT)
_CLOSE_OPEN_ATTEMPTS = update(t.attempts).where(
    t.attempts.c.job_id == bindparam("b_job"), t.attempts.c.finished_at.is_(None)
)
_INSERT_ATTEMPT = insert(t.attempts)
_INSERT_ASSET = insert(t.assets)


def _bound(lease: Lease) -> dict[str, Any]:
    return {"b_job": lease.job_id, "b_worker": lease.worker_id, "b_attempt": lease.attempt}


def _attempt_of(lease: Lease) -> dict[str, Any]:
    return {"b_job": lease.job_id, "b_attempt": lease.attempt}


def _update_owned(conn: Connection, lease: Lease, **values: Any) -> bool:
    """SET ``values`` on the job if ``lease`` still owns it; False when it does not."""
    return bool(conn.execute(_UPDATE_OWNED, {**_bound(lease), **values}).rowcount)


def _claim_statements(db: Database) -> tuple[Any, Any, Any]:
    """The claim's probe, its UPDATE and (PostgreSQL) the per-backend lock that makes the
    slot count exact, built once per database (its clock differs)."""
    db_now = db.now_epoch()
    backend: Any = bindparam("b_backend")
    held = t.jobs.alias("held")
    leased_here = (
        select(func.count())
        .select_from(held)
        .where(
            held.c.backend == backend,
            held.c.lease_owner.is_not(None),
            held.c.lease_expires >= db_now,
            held.c.status.in_([s.value for s in ACTIVE]),
        )
        .scalar_subquery()
    )
    claimable = (
        leased_here < bindparam("b_capacity"),
        t.jobs.c.status.in_([s.value for s in ACTIVE]),
        or_(t.jobs.c.lease_owner.is_(None), t.jobs.c.lease_expires < db_now),
        or_(t.jobs.c.not_before.is_(None), t.jobs.c.not_before <= db_now),
        or_(
            t.jobs.c.backend.is_(None),
            t.jobs.c.backend != backend,
            t.jobs.c.transient_failures == 0,
            t.jobs.c.not_before + bindparam("elsewhere_s") <= db_now,
        ),
        or_(
            cast(t.jobs.c.eligible_backends, String) == "[]",
            cast(t.jobs.c.eligible_backends, String).like(bindparam("eligible")),
        ),
    )
    probe = select(t.jobs.c.seq).where(*claimable).limit(1)
    pick = (
        select(t.jobs.c.seq)
        .where(*claimable)
        # A retry prefers another backend than the one it failed on; oldest first.
        .order_by(
            case((and_(t.jobs.c.backend == backend, t.jobs.c.transient_failures > 0), 1), else_=0),
            t.jobs.c.seq,
        )
        .limit(1)
    )
    slot_lock = None
    if not db.is_sqlite:
        pick = pick.with_for_update(skip_locked=True)
        slot_lock = select(func.pg_advisory_xact_lock(CLAIM_LOCK_CLASS, func.hashtext(backend)))
    take = (
        update(t.jobs)
        .where(t.jobs.c.seq == pick.scalar_subquery())
        .values(
            lease_owner=bindparam("worker_id"),
            lease_expires=db_now + bindparam("lease_s"),
            attempt_count=t.jobs.c.attempt_count + 1,
            updated_at=bindparam("at"),
        )
        .returning(*t.jobs.c)
    )
    return probe, take, slot_lock


def _enqueue(
    conn: Connection, lease: Lease, event: str, db_now: ColumnElement[float]
) -> str | None:
    """The job's webhook delivery for ``event``, in the caller's transaction (if it has one)."""
    return enqueue_for_job(conn, lease.job_id, event, db_now) if lease.webhook else None
