"""The live event stream of a job (SSE): snapshot on connect, then changes, terminal last."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from sakuga.api.auth import require_scope
from sakuga.api.deps import Services, base_url, owner, services
from sakuga.api.jobs import ERRORS
from sakuga.api.schemas import OutputOut
from sakuga.api.views import output_view
from sakuga.domain.jobs import Job
from sakuga.errors import NotFound
from sakuga.notify import Notifier, Subscription, job_key
from sakuga.store.job_queries import JobChange, JobDetail

router = APIRouter(prefix="/api/v2", tags=["jobs"])

# The store is re-read at least this often, for changes made by another process.
BACKSTOP_S = 0.5
KEEPALIVE_S = 15


@router.get(
    "/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **ERRORS},
    response_class=EventSourceResponse,
    dependencies=[Depends(require_scope("read"))],
)
async def job_events(
    job_id: str,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> EventSourceResponse:
    """Server-sent events: ``status``, ``progress``, ``output``; ends after the terminal status."""
    key = job_key(job_id)
    # Subscribed before the first read, so no change can slip between the two.
    wake = svc.notifier.subscribe(key, changes=True)
    try:
        first = await svc.store.jobs.detail(job_id, who, attempts=False, eta=False)
    except BaseException:
        svc.notifier.unsubscribe(key, wake)
        raise
    if first is None:
        svc.notifier.unsubscribe(key, wake)
        raise NotFound(f"job {job_id!r} not found")
    return EventSourceResponse(
        _stream(svc, first, wake, who, base_url(request)),
        ping=KEEPALIVE_S,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        # Also when the stream never started (the client left at once); unsubscribing twice
        # is harmless.
        background=BackgroundTask(_unsubscribe, svc.notifier, key, wake),
    )


async def _unsubscribe(notifier: Notifier, key: str, wake: Subscription) -> None:
    # A coroutine, so Starlette runs it on the event loop: a plain function would go to its
    # thread pool, and the notifier is not thread-safe.
    notifier.unsubscribe(key, wake)


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return ServerSentEvent(json.dumps(data, separators=(",", ":")), event=name).encode()


async def _stream(
    svc: Services, first: JobDetail, wake: Subscription, who: str, base: str
) -> AsyncIterator[bytes]:
    # The frames one wake-up brings go out together, as one chunk (one send down the stack).
    job_id = first.job.id
    detail: JobDetail | None = first
    last_status: tuple[str, int | None] | None = None
    last_progress: dict[str, Any] | None = None
    sent: set[str] = set()
    try:
        while True:
            if detail is None:
                return
            job = detail.job
            frames: list[bytes] = []
            status = (job.status.value, detail.queue_position)
            if not job.terminal and status != last_status:
                last_status = status
                frames.append(_frame("status", {"status": status[0], "queue_position": status[1]}))
            if job.progress is not None and job.progress != last_progress:
                last_progress = job.progress
                frames.append(_frame("progress", job.progress))
            for row in detail.outputs:
                if row["id"] not in sent:
                    sent.add(row["id"])
                    frames.append(_frame("output", _output(base, row, job, svc)))
            if job.terminal:
                frames.append(
                    _frame("status", {"status": job.status.value, "queue_position": None})
                )
                yield b"".join(frames)
                return
            if frames:
                yield b"".join(frames)
            fired = await svc.notifier.wait_event(wake, BACKSTOP_S)
            wake.clear()
            changes = _carried(wake) if fired else None
            if changes:
                # This process's worker said what it committed: no read.
                for change in changes:
                    detail = change.applied(detail)
            else:
                # One read: the job, its outputs and queue position together.
                detail = await svc.store.jobs.detail(job_id, who, attempts=False, eta=False)
    finally:
        svc.notifier.unsubscribe(job_key(job_id), wake)


def _carried(wake: Subscription) -> list[JobChange] | None:
    """The job changes the wake-ups carried; None when any of them must be read instead."""
    changes = wake.take_changes()
    if changes is None or not all(isinstance(c, JobChange) for c in changes):
        return None
    return [c for c in changes if isinstance(c, JobChange)]


def _output(base: str, row: dict[str, Any], job: Job, svc: Services) -> dict[str, Any]:
    view = output_view(base, row, job, svc.signer)
    return OutputOut.model_validate(view).model_dump(mode="json")
