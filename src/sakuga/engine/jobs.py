"""ComfyUI's unified job view (``/api/jobs``, PROTOCOL §4.6), built from queue and history."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sakuga.engine.queue import QueueItem

STATUSES = ("pending", "in_progress", "completed", "failed")
_ENDS = ("execution_success", "execution_error", "execution_interrupted")


class JobQueryError(ValueError):
    """A bad ``/api/jobs`` query; the message is ComfyUI's exact error text."""


def _workflow_id(extra_data: Mapping[str, Any]) -> Any:
    info = extra_data.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, Mapping) else None
    return workflow.get("id") if isinstance(workflow, Mapping) else None


def _pruned(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if value is not None}


def queued_job(item: QueueItem, status: str) -> dict[str, Any]:
    """A pending or running prompt (short form only)."""
    return _pruned(
        {
            "id": item.prompt_id,
            "status": status,
            "priority": item.number,
            "create_time": item.extra_data.get("create_time"),
            "outputs_count": 0,
            "workflow_id": _workflow_id(item.extra_data),
        }
    )


def _outputs_summary(outputs: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
    count, first, first_output = 0, None, None
    for node_id, ui in outputs.items():
        if not isinstance(ui, Mapping):
            continue
        for media_type, items in ui.items():
            if not isinstance(items, list):
                continue
            for entry in items:
                if not isinstance(entry, Mapping) or "filename" not in entry:
                    continue
                count += 1
                found = {**entry, "nodeId": node_id, "mediaType": media_type}
                first = first or found
                if entry.get("type") == "output":
                    first_output = first_output or found
    return count, first_output or first


def finished_job(prompt_id: str, entry: Mapping[str, Any], full: bool) -> dict[str, Any]:
    """A job from its history entry; ``full`` adds outputs, execution_status and workflow."""
    number, _, prompt, extra_data, _ = entry["prompt"]
    status = entry["status"]
    times = {event: data.get("timestamp") for event, data in status["messages"]}
    end = next((times[event] for event in _ENDS if event in times), None)
    error = next((data for event, data in status["messages"] if event == "execution_error"), None)
    count, preview = _outputs_summary(entry["outputs"])
    job = _pruned(
        {
            "id": prompt_id,
            "status": "completed" if status["status_str"] == "success" else "failed",
            "priority": number,
            "create_time": extra_data.get("create_time"),
            "execution_start_time": times.get("execution_start"),
            "execution_end_time": end,
            "execution_error": error,
            "outputs_count": count,
            "preview_output": preview,
            "workflow_id": _workflow_id(extra_data),
        }
    )
    if full:
        job["outputs"] = entry["outputs"]
        job["execution_status"] = status
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def all_jobs(
    running: QueueItem | None, pending: Iterable[QueueItem], history: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Every known job in the short form."""
    jobs = [queued_job(running, "in_progress")] if running is not None else []
    jobs.extend(queued_job(item, "pending") for item in pending)
    jobs.extend(finished_job(key, value, full=False) for key, value in history.items())
    return jobs


def query_jobs(jobs: list[dict[str, Any]], params: Mapping[str, str]) -> dict[str, Any]:
    """Filter, sort and page like ComfyUI; raises ``JobQueryError`` with its messages."""
    wanted = None
    if params.get("status"):
        wanted = [part.strip() for part in params["status"].split(",") if part.strip()]
        bad = [part for part in wanted if part not in STATUSES]
        if bad:
            raise JobQueryError(
                f"Invalid status value(s): {', '.join(bad)}. Valid values: {', '.join(STATUSES)}"
            )
    sort_by = params.get("sort_by", "created_at")
    if sort_by not in ("created_at", "execution_duration"):
        raise JobQueryError("sort_by must be 'created_at' or 'execution_duration'")
    limit = _limit(params.get("limit"))
    try:
        offset = max(0, int(params.get("offset", 0)))
    except ValueError as exc:
        raise JobQueryError("offset must be an integer") from exc
    if wanted is not None:
        jobs = [job for job in jobs if job["status"] in wanted]
    if params.get("workflow_id"):
        jobs = [job for job in jobs if job.get("workflow_id") == params["workflow_id"]]
    jobs = sorted(jobs, key=_sort_key(sort_by), reverse=params.get("sort_order", "desc") != "asc")
    page = jobs[offset : offset + limit] if limit is not None else jobs[offset:]
    pagination = {
        "offset": offset,
        "limit": limit,
        "total": len(jobs),
        "has_more": offset + len(page) < len(jobs),
    }
    return {"jobs": page, "pagination": pagination}


def _limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise JobQueryError("limit must be a positive integer")
    return limit


def _sort_key(sort_by: str) -> Any:
    if sort_by == "created_at":
        return lambda job: job.get("create_time") or 0
    return lambda job: (job.get("execution_end_time") or 0) - (job.get("execution_start_time") or 0)
