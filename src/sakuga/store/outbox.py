"""The webhook outbox: a delivery row is written in the transaction of the change it reports.

So a job never changes state without its event being recorded, and an event is never
recorded for a change that rolled back. Deliverers claim due rows with a lease (one
statement, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL); every later write is conditional on
(lease owner, attempt count), so a deliverer whose lease expired cannot overwrite the
outcome of the one that took over. Times to act on (``next_attempt_at``, ``lease_expires``)
are epoch seconds from the database clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.elements import ColumnElement

from sakuga.domain.jobs import TERMINAL, JobStatus
from sakuga.domain.webhooks import Delivery, DeliveryStatus, job_payload
from sakuga.store import tables as t
from sakuga.store.db import Database, aware

d = t.webhook_deliveries
PENDING = DeliveryStatus.PENDING.value
MAX_ERROR_CHARS = 500


def _now() -> datetime:
    return datetime.now(UTC)


def delivery_from_row(row: Mapping[Any, Any]) -> Delivery:
    """Build a frozen Delivery from a ``webhook_deliveries`` row mapping."""
    status = DeliveryStatus(row["status"])
    created = aware(row["created_at"])
    assert created is not None
    due = row["next_attempt_at"]
    return Delivery(
        id=row["id"],
        seq=row["seq"],
        job_id=row["job_id"],
        owner=row["owner"],
        url=row["url"],
        event_type=row["event_type"],
        payload=row["payload"],
        status=status,
        attempts=row["attempts"],
        next_attempt_at=(
            datetime.fromtimestamp(due, UTC) if status is DeliveryStatus.PENDING else None
        ),
        created_at=created,
        delivered_at=aware(row["delivered_at"]),
        last_error=row["last_error"],
        last_status_code=row["last_status_code"],
    )


def enqueue(
    conn: Connection,
    job: Mapping[Any, Any],
    event_type: str,
    db_now: ColumnElement[float],
) -> str | None:
    """Record ``event_type`` for ``job`` (a ``jobs`` row, as it is after the change).

    Runs inside the caller's transaction on ``conn``; nothing is written when the job has
    no ``webhook_url``. Returns the delivery id (also the ``webhook-id`` header), or None.
    """
    url = job.get("webhook_url")
    if not url:
        return None
    outputs: list[Mapping[Any, Any]] = []
    if JobStatus(job["status"]) in TERMINAL:
        outputs = list(
            conn.execute(
                select(t.assets)
                .where(t.assets.c.job_id == job["id"])
                .order_by(t.assets.c.created_at, t.assets.c.id)
            )
            .mappings()
            .all()
        )
    at = _now()
    ordinal = conn.scalar(select(func.count()).select_from(d).where(d.c.job_id == job["id"]))
    delivery_id = str(uuid.uuid4())
    conn.execute(
        d.insert().values(
            id=delivery_id,
            seq=int(ordinal or 0) + 1,
            job_id=job["id"],
            owner=job["owner"],
            url=url,
            event_type=event_type,
            payload=job_payload(event_type, job, outputs, at),
            status=PENDING,
            attempts=0,
            next_attempt_at=db_now,
            created_at=at,
        )
    )
    return delivery_id


def enqueue_for_job(
    conn: Connection, job_id: str, event_type: str, db_now: ColumnElement[float]
) -> str | None:
    """``enqueue`` for the job row as it stands in this transaction; None without a webhook."""
    # Most jobs have no webhook: a cheap look first, the whole row only when there is one.
    if conn.scalar(_HAS_WEBHOOK, {"job_id": job_id}) is None:
        return None
    row = conn.execute(_JOB_ROW, {"job_id": job_id}).mappings().first()
    return None if row is None else enqueue(conn, row, event_type, db_now)


_HAS_WEBHOOK = select(t.jobs.c.seq).where(
    t.jobs.c.id == bindparam("job_id"), t.jobs.c.webhook_url.is_not(None)
)
_JOB_ROW = select(t.jobs).where(t.jobs.c.id == bindparam("job_id"))


class Outbox:
    """Claim, settle, list and re-queue deliveries. Every method is one unit of work.

    ``wake()`` is called by the job stores after a transaction that enqueued a delivery
    committed; listeners (the in-process deliverer) then look at once instead of polling.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._listeners: list[Callable[[], None]] = []

    # -- wake-ups -------------------------------------------------------------------------

    def listen(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def wake(self) -> None:
        for callback in list(self._listeners):
            callback()

    # -- deliverer side -------------------------------------------------------------------

    def _owned(self, delivery: Delivery, worker_id: str) -> Any:
        return and_(
            d.c.id == delivery.id,
            d.c.lease_owner == worker_id,
            d.c.attempts == delivery.attempts,
            d.c.status == PENDING,
        )

    async def claim(self, worker_id: str, *, limit: int, lease_s: float) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries, oldest due first; each claim is one attempt."""
        if limit < 1:
            return []
        db_now = self.db.now_epoch()
        pick = (
            select(d.c.id)
            .where(
                d.c.status == PENDING,
                d.c.next_attempt_at <= db_now,
                or_(d.c.lease_owner.is_(None), d.c.lease_expires < db_now),
            )
            .order_by(d.c.next_attempt_at, d.c.created_at)
            .limit(limit)
        )
        if not self.db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        statement = (
            update(d)
            .where(d.c.id.in_(pick.scalar_subquery()))
            .values(
                lease_owner=worker_id,
                lease_expires=db_now + lease_s,
                attempts=d.c.attempts + 1,
            )
            .returning(*d.c)
        )

        def work(conn: Connection) -> Sequence[RowMapping]:
            return conn.execute(statement).mappings().all()

        rows = await self.db.write(work)
        return sorted((delivery_from_row(r) for r in rows), key=lambda x: x.created_at)

    async def next_due_s(self) -> float | None:
        """Seconds until the earliest unleased pending delivery is due (0 if overdue)."""
        db_now = self.db.now_epoch()

        def work(conn: Connection) -> Any:
            return conn.scalar(
                select(func.min(d.c.next_attempt_at) - db_now).where(
                    d.c.status == PENDING, d.c.lease_owner.is_(None)
                )
            )

        wait = await self.db.read(work)
        return None if wait is None else max(0.0, float(wait))

    async def delivered(self, delivery: Delivery, worker_id: str, status_code: int) -> bool:
        """Mark delivered; False when the lease was lost meanwhile."""

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(d)
                .where(self._owned(delivery, worker_id))
                .values(
                    status=DeliveryStatus.DELIVERED.value,
                    delivered_at=_now(),
                    last_status_code=status_code,
                    last_error=None,
                    lease_owner=None,
                    lease_expires=None,
                )
            )
            return bool(result.rowcount)

        return await self.db.write(work)

    async def failed(
        self,
        delivery: Delivery,
        worker_id: str,
        *,
        error: str,
        status_code: int | None,
        retry_in_s: float | None,
    ) -> bool:
        """Record a failed attempt: due again in ``retry_in_s``, or dead when it is None."""
        values: dict[str, Any] = {
            "last_error": error[:MAX_ERROR_CHARS],
            "last_status_code": status_code,
            "lease_owner": None,
            "lease_expires": None,
        }
        if retry_in_s is None:
            values["status"] = DeliveryStatus.DEAD.value
        else:
            values["next_attempt_at"] = self.db.now_epoch() + retry_in_s

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(d).where(self._owned(delivery, worker_id)).values(**values)
            )
            return bool(result.rowcount)

        return await self.db.write(work)

    async def release(self, delivery: Delivery, worker_id: str) -> None:
        """Give an interrupted attempt back (shutdown): due at once, the attempt not counted."""

        def work(conn: Connection) -> None:
            conn.execute(
                update(d)
                .where(self._owned(delivery, worker_id))
                .values(
                    attempts=d.c.attempts - 1,
                    lease_owner=None,
                    lease_expires=None,
                    next_attempt_at=self.db.now_epoch(),
                )
            )

        await self.db.write(work)

    # -- API side -------------------------------------------------------------------------

    async def for_job(self, job_id: str, owner: str | None) -> list[Delivery]:
        """The job's deliveries in event order."""
        query = select(d).where(d.c.job_id == job_id).order_by(d.c.seq, d.c.created_at)
        if owner is not None:
            query = query.where(d.c.owner == owner)

        def work(conn: Connection) -> Sequence[RowMapping]:
            return conn.execute(query).mappings().all()

        return [delivery_from_row(r) for r in await self.db.read(work)]

    async def page(
        self,
        owner: str | None,
        *,
        status: DeliveryStatus | None,
        limit: int,
        before: tuple[datetime, str] | None = None,
    ) -> list[Delivery]:
        """Newest first; ``before`` is the (created_at, id) of the last row already seen."""
        query = select(d).order_by(d.c.created_at.desc(), d.c.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(d.c.owner == owner)
        if status is not None:
            query = query.where(d.c.status == status.value)
        if before is not None:
            at, last_id = before
            query = query.where(
                or_(d.c.created_at < at, and_(d.c.created_at == at, d.c.id < last_id))
            )

        def work(conn: Connection) -> Sequence[RowMapping]:
            return conn.execute(query).mappings().all()

        return [delivery_from_row(r) for r in await self.db.read(work)]

    async def get(self, delivery_id: str, owner: str | None) -> Delivery | None:
        query = select(d).where(d.c.id == delivery_id)
        if owner is not None:
            query = query.where(d.c.owner == owner)

        def work(conn: Connection) -> RowMapping | None:
            return conn.execute(query).mappings().first()

        row = await self.db.read(work)
        return None if row is None else delivery_from_row(row)

    async def requeue(self, delivery_id: str, owner: str | None) -> Delivery | None:
        """Dead -> pending with a fresh set of attempts, due now; other states unchanged.

        Returns the delivery as it is afterwards (None when unknown or another owner's).
        """
        where = [d.c.id == delivery_id, d.c.status == DeliveryStatus.DEAD.value]
        if owner is not None:
            where.append(d.c.owner == owner)

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(d)
                .where(*where)
                .values(
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=self.db.now_epoch(),
                    lease_owner=None,
                    lease_expires=None,
                )
            )
            return bool(result.rowcount)

        if await self.db.write(work):
            self.wake()
        return await self.get(delivery_id, owner)
