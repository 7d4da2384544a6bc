"""The live event stream of a job (SSE): snapshot on connect, then changes, terminal last."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse

from sakuga.api.auth import require_scope
from sakuga.api.deps import Services, base_url, owner, services
from sakuga.api.jobs import ERRORS
from sakuga.api.schemas import OutputOut
from sakuga.api.views import output_view
from sakuga.domain.jobs import Job
from sakuga.errors import NotFound
from sakuga.notify import job_key

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
    job = await svc.store.jobs.get(job_id, who)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    stream = _stream(svc, job_id, who, base_url(request))
    return EventSourceResponse(
        stream,
        ping=KEEPALIVE_S,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _frame(name: str, data: dict[str, Any]) -> dict[str, str]:
    return {"event": name, "data": json.dumps(data, separators=(",", ":"))}


async def _stream(svc: Services, job_id: str, who: str, base: str) -> AsyncIterator[dict[str, str]]:
    wake = svc.notifier.subscribe(job_key(job_id))
    last_status: tuple[str, int | None] | None = None
    last_progress: dict[str, Any] | None = None
    sent: set[str] = set()
    try:
        while True:
            wake.clear()
            job = await svc.store.jobs.get(job_id, who, attempts=False)
            if job is None:
                return
            position = await svc.store.jobs.queue_position(job)
            status = (job.status.value, position)
            if not job.terminal and status != last_status:
                last_status = status
                yield _frame("status", {"status": status[0], "queue_position": position})
            if job.progress is not None and job.progress != last_progress:
                last_progress = job.progress
                yield _frame("progress", job.progress)
            async for frame in _new_outputs(svc, job, base, sent):
                yield frame
            if job.terminal:
                yield _frame("status", {"status": job.status.value, "queue_position": None})
                return
            await svc.notifier.wait_event(wake, BACKSTOP_S)
    finally:
        svc.notifier.unsubscribe(job_key(job_id), wake)


async def _new_outputs(
    svc: Services, job: Job, base: str, sent: set[str]
) -> AsyncIterator[dict[str, str]]:
    for row in await svc.store.jobs.outputs(job.id):
        if row["id"] in sent:
            continue
        sent.add(row["id"])
        view = output_view(base, row, job, svc.signer)
        output = OutputOut.model_validate(view).model_dump(mode="json")
        yield _frame("output", output)
