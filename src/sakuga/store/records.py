"""Rows become records here, and only here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import RowMapping

from sakuga.domain.jobs import Attempt, Job, JobStatus
from sakuga.store.db import aware


def _must(value: Any) -> Any:
    result = aware(value)
    assert result is not None
    return result


def job_from_row(row: RowMapping, attempts: Iterable[Attempt] = ()) -> Job:
    """Build a frozen Job from a ``jobs`` row mapping."""
    return Job(
        id=row["id"],
        seq=row["seq"],
        owner=row["owner"],
        status=JobStatus(row["status"]),
        workflow=row["workflow"],
        template=row["template"],
        params=row["params"],
        metadata=row["metadata"] or {},
        fingerprint=row["fingerprint"],
        created_at=_must(row["created_at"]),
        updated_at=_must(row["updated_at"]),
        expires_at=_must(row["expires_at"]),
        started_at=aware(row["started_at"]),
        completed_at=aware(row["completed_at"]),
        progress=row["progress"],
        error=row["error"],
        backend=row["backend"],
        eligible_backends=tuple(row["eligible_backends"] or ()),
        attempt_count=row["attempt_count"],
        cancel_requested=bool(row["cancel_requested"]),
        attempts=tuple(attempts),
    )


def attempt_from_row(row: RowMapping) -> Attempt:
    """Build a frozen Attempt from an ``attempts`` row mapping."""
    return Attempt(
        job_id=row["job_id"],
        number=row["number"],
        backend=row["backend"],
        prompt_id=row["prompt_id"],
        client_id=row["client_id"],
        worker_id=row["worker_id"],
        started_at=_must(row["started_at"]),
        finished_at=aware(row["finished_at"]),
        error=row["error"],
        telemetry=row.get("telemetry"),
    )
