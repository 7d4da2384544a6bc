"""Job queries run inside a unit of work, on statements built once (bound per call).

Building a statement and its cache key costs several times what SQLite takes to run it,
so the queries every job view and claim runs are module constants with bind parameters.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from sakuga.domain.jobs import ACTIVE, Job, JobStatus, can_transition
from sakuga.errors import QueueFull
from sakuga.store import tables as t
from sakuga.store.records import attempt_from_row, job_from_row

if TYPE_CHECKING:
    from sakuga.store.jobs import NewJob, Placement

ETA_SAMPLES = 3
ETA_WINDOW = 20


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobDetail:
    """A job with everything its API view shows, read in one transaction."""

    job: Job
    outputs: list[dict[str, Any]]
    queue_position: int | None = None
    # Median run seconds of recent jobs like this one (None below 3 samples).
    median_run_s: float | None = None
    # Active jobs ahead of this one (ETA).
    ahead: int = 0


@dataclass(frozen=True)
class JobChange:
    """What a worker just committed to a job, carried by the job's wake-up in-process, so
    its event streams need not read it back. Never a return to ``queued`` (that is read)."""

    status: JobStatus | None = None
    progress: dict[str, Any] | None = None
    output: dict[str, Any] | None = None  # one new output asset row

    def applied(self, detail: JobDetail) -> JobDetail:
        """``detail`` with this change, unless it is older than what ``detail`` shows: a
        wake-up may arrive after a read that already saw a later state. The state machine
        and monotonic progress tell (a status it cannot move to, a lower progress)."""
        job, outputs, position = detail.job, detail.outputs, detail.queue_position
        if self.status is not None and can_transition(job.status, self.status):
            job, position = replace(job, status=self.status), None
        if self.progress is not None and _value(self.progress) >= _value(job.progress):
            job = replace(job, progress=self.progress)
        if self.output is not None and all(o["id"] != self.output["id"] for o in outputs):
            outputs = [*outputs, self.output]
        return replace(detail, job=job, outputs=outputs, queue_position=position)


def _value(progress: dict[str, Any] | None) -> float:
    return float((progress or {}).get("value") or 0.0)


_JOB = select(t.jobs).where(t.jobs.c.id == bindparam("job_id"))
# A caller's view: past its retention (``expires_at``) a job is gone (API-V2 §3).
_OWNED_JOB = _JOB.where(t.jobs.c.owner == bindparam("owner"), t.jobs.c.expires_at > bindparam("at"))
ATTEMPTS = (
    select(t.attempts)
    .where(t.attempts.c.job_id == bindparam("job_id"))
    .order_by(t.attempts.c.number)
)
OUTPUTS = (
    select(t.assets)
    .where(t.assets.c.job_id == bindparam("job_id"))
    .order_by(t.assets.c.created_at, t.assets.c.id)
)
_QUEUED_BEFORE = (
    select(func.count())
    .select_from(t.jobs)
    .where(t.jobs.c.status == JobStatus.QUEUED.value, t.jobs.c.seq < bindparam("seq"))
)
_ACTIVE_BEFORE = (
    select(func.count())
    .select_from(t.jobs)
    .where(t.jobs.c.status.in_([s.value for s in ACTIVE]), t.jobs.c.seq < bindparam("seq"))
)
_QUEUED_OF = (
    select(func.count())
    .select_from(t.jobs)
    .where(t.jobs.c.owner == bindparam("owner"), t.jobs.c.status == JobStatus.QUEUED.value)
)
_RUN_TIMES = (
    select(t.jobs.c.run_ms)
    .where(
        t.jobs.c.fingerprint == bindparam("fingerprint"),
        t.jobs.c.status == JobStatus.SUCCEEDED.value,
        t.jobs.c.run_ms.is_not(None),
    )
    .order_by(t.jobs.c.seq.desc())
    .limit(ETA_WINDOW)
)


def read_job(
    conn: Connection, job_id: str, owner: str | None, *, attempts: bool = True
) -> Job | None:
    """The job row (and attempts), as the owner sees it: past ``expires_at`` it is gone."""
    if owner is None:
        row = conn.execute(_JOB, {"job_id": job_id}).mappings().first()
    else:
        bound = {"job_id": job_id, "owner": owner, "at": now()}
        row = conn.execute(_OWNED_JOB, bound).mappings().first()
    if row is None:
        return None
    if not attempts:
        return job_from_row(row)
    return job_from_row(row, read_attempts(conn, job_id))


def read_attempts(conn: Connection, job_id: str) -> list[Any]:
    rows = conn.execute(ATTEMPTS, {"job_id": job_id}).mappings().all()
    return [attempt_from_row(a) for a in rows]


def read_detail(
    conn: Connection, job_id: str, owner: str | None, *, attempts: bool = True, eta: bool = True
) -> JobDetail | None:
    """``read_job`` plus outputs, queue position and (unless terminal or not asked) ETA."""
    job = read_job(conn, job_id, owner, attempts=attempts)
    if job is None:
        return None
    outputs = read_outputs(conn, job_id)
    position = queued_before(conn, job.seq) + 1 if job.status is JobStatus.QUEUED else None
    if not eta or job.terminal:
        return JobDetail(job, outputs, position)
    median = median_run_s(conn, job.fingerprint)
    return JobDetail(job, outputs, position, median, active_before(conn, job.seq))


def read_outputs(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """The job's output asset rows in the order they were stored."""
    return [dict(r) for r in conn.execute(OUTPUTS, {"job_id": job_id}).mappings()]


def queued_before(conn: Connection, seq: int) -> int:
    """Queued jobs ahead of ``seq``."""
    return int(conn.scalar(_QUEUED_BEFORE, {"seq": seq}) or 0)


def active_before(conn: Connection, seq: int) -> int:
    """Queued or running jobs ahead of ``seq`` (ETA)."""
    return int(conn.scalar(_ACTIVE_BEFORE, {"seq": seq}) or 0)


def queued_of(conn: Connection, owner: str) -> int:
    """How many of ``owner``'s jobs wait in the queue."""
    return int(conn.scalar(_QUEUED_OF, {"owner": owner}) or 0)


def median_run_s(conn: Connection, fingerprint: str) -> float | None:
    """Median run seconds of the last successful jobs like this one; None below 3."""
    samples: list[int] = list(map(int, conn.scalars(_RUN_TIMES, {"fingerprint": fingerprint})))
    return statistics.median(samples) / 1000 if len(samples) >= ETA_SAMPLES else None


def within_caps(
    conn: Connection, batch: list[NewJob], results: list[BaseException | Placement | None]
) -> list[int]:
    """Indexes of the jobs their owner's queued-jobs cap admits; the rest get QueueFull."""
    capped = {new.owner for new in batch if new.max_queued is not None}
    queued = {owner: queued_of(conn, owner) for owner in capped}
    admitted: list[int] = []
    for i, new in enumerate(batch):
        if new.max_queued is not None:
            if queued[new.owner] >= new.max_queued:
                results[i] = QueueFull.over_cap(queued[new.owner], new.max_queued)
                continue
            queued[new.owner] += 1
        admitted.append(i)
    return admitted
