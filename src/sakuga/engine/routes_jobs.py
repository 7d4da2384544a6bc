"""``GET /api/jobs`` and ``GET /api/jobs/{id}``: the one view that knows every job state."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sakuga.engine import jobs
from sakuga.engine.routes import engine_of


async def list_jobs(request: Request) -> Response:
    """Jobs filtered by ``status``/``workflow_id``, sorted and paged; 400 on a bad query."""
    queue = engine_of(request).queue
    every = jobs.all_jobs(queue.running, queue.pending, queue.history)
    try:
        return JSONResponse(jobs.query_jobs(every, request.query_params))
    except jobs.JobQueryError as exc:
        return JSONResponse({"error": str(exc)}, 400)


async def get_job(request: Request) -> Response:
    """One job in any state; 404 ``{"error": "Job not found"}`` when unknown."""
    queue = engine_of(request).queue
    job_id = request.path_params["job_id"]
    if queue.running is not None and queue.running.prompt_id == job_id:
        return JSONResponse(jobs.queued_job(queue.running, "in_progress"))
    for item in queue.pending:
        if item.prompt_id == job_id:
            return JSONResponse(jobs.queued_job(item, "pending"))
    entry = queue.history.get(job_id)
    if entry is None:
        return JSONResponse({"error": "Job not found"}, 404)
    return JSONResponse(jobs.finished_job(job_id, entry, full=True))
