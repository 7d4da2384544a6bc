"""Job records and the job state machine (pure: no I/O).

States follow Comfy API v2: queued -> running -> succeeded | failed | expired, and a cancel
moves a running job through canceling -> canceled (a queued one straight to canceled).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELING = "canceling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED}
)
ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELING})

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    # A queued job already handed to a backend (prefetched) cancels through canceling.
    JobStatus.QUEUED: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.CANCELING,
            JobStatus.CANCELED,
            JobStatus.FAILED,
            JobStatus.EXPIRED,
        }
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELING, JobStatus.QUEUED}
    ),
    JobStatus.CANCELING: frozenset({JobStatus.CANCELED, JobStatus.SUCCEEDED, JobStatus.FAILED}),
}


def can_transition(src: JobStatus, dst: JobStatus) -> bool:
    """Whether the state machine allows ``src -> dst`` (terminal states never change)."""
    return dst in _ALLOWED.get(src, frozenset())


def cancel_target(status: JobStatus) -> JobStatus | None:
    """The state a cancel request moves a job to, or None when it is already terminal."""
    if status is JobStatus.QUEUED:
        return JobStatus.CANCELED
    if status is JobStatus.RUNNING:
        return JobStatus.CANCELING
    return None


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    traceback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "node_id": self.node_id,
            "class_type": self.class_type,
            "traceback": self.traceback,
        }


@dataclass(frozen=True)
class Attempt:
    job_id: str
    number: int
    backend: str
    prompt_id: str
    client_id: str
    worker_id: str
    started_at: datetime
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None
    # Backend figures around the attempt: {"device", "before": {...}, "after": {...}}.
    telemetry: dict[str, Any] | None = None


@dataclass(frozen=True)
class Job:
    """One job as stored; built from a row at the store boundary only."""

    id: str
    owner: str
    status: JobStatus
    workflow: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    seq: int = 0
    template: str | None = None
    params: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    started_at: datetime | None = None
    completed_at: datetime | None = None
    progress: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    backend: str | None = None
    eligible_backends: tuple[str, ...] = ()
    attempt_count: int = 0
    cancel_requested: bool = False
    attempts: tuple[Attempt, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_SEED_INPUTS = frozenset({"seed", "noise_seed"})


def fingerprint(
    workflow: dict[str, Any], template: str | None, params: dict[str, Any] | None
) -> str:
    """What makes two jobs comparable for ETA: template + size + steps, or the graph sans seed."""
    if template is not None and params is not None:
        size = f"{params.get('width')}x{params.get('height')}"
        return f"{template}:{size}:{params.get('steps')}"[:64]
    stripped = {
        node_id: {
            "class_type": node.get("class_type"),
            "inputs": {
                k: v for k, v in (node.get("inputs") or {}).items() if k not in _SEED_INPUTS
            },
        }
        for node_id, node in sorted(workflow.items())
        if isinstance(node, dict)
    }
    digest = hashlib.blake2b(
        json.dumps(stripped, sort_keys=True, default=str).encode(), digest_size=16
    )
    return "graph:" + digest.hexdigest()
