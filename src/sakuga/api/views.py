"""Build the Job and Asset JSON the Comfy API v2 clients expect, from store records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sakuga.api.signing import UrlSigner
from sakuga.domain.jobs import Job, JobStatus
from sakuga.store.job_queries import JobDetail

# How long an unsigned content link (the content route itself, which needs a key) is
# promised to work; comfy-sdk's Asset model still requires a time. The API passes a signer,
# so its links are signed and expire after ``settings.signed_url_ttl_s``.
ASSET_URL_VALIDITY = timedelta(hours=24)


def job_urls(base: str, job_id: str) -> dict[str, str]:
    root = f"{base}/api/v2/jobs/{job_id}"
    return {"self": root, "events": f"{root}/events", "cancel": f"{root}/cancel"}


def asset_url(base: str, asset_id: str) -> str:
    return f"{base}/api/v2/assets/{asset_id}/content"


def content_link(
    base: str, asset_id: str, signer: UrlSigner | None, fallback_expiry: datetime
) -> tuple[str, datetime]:
    """A signed content link (works without a key) when a signer is given, else the route."""
    if signer is not None:
        return signer.url(base, asset_id)
    return asset_url(base, asset_id), fallback_expiry


def output_view(
    base: str, row: dict[str, Any], job: Job, signer: UrlSigner | None = None
) -> dict[str, Any]:
    url, url_expires_at = content_link(base, row["id"], signer, job.expires_at)
    return {
        "id": row["id"],
        "node_id": row["node_id"],
        "name": row["file_path"],
        "type": row["kind"],
        "content_type": row["content_type"],
        "size_bytes": row["size_bytes"],
        "hash": row["hash"],
        "url": url,
        "url_expires_at": url_expires_at,
        "job_id": job.id,
    }


def asset_view(
    base: str,
    row: dict[str, Any],
    created_new: bool | None = None,
    signer: UrlSigner | None = None,
) -> dict[str, Any]:
    fallback = datetime.now(UTC) + ASSET_URL_VALIDITY
    url, url_expires_at = content_link(base, row["id"], signer, fallback)
    view = {
        "id": row["id"],
        "hash": row["hash"],
        "size_bytes": row["size_bytes"],
        "content_type": row["content_type"],
        "created_at": row["created_at"],
        "url": url,
        "url_expires_at": url_expires_at,
        "file_path": row["file_path"],
        "expires_at": None,
        "tags": row["tags"] or [],
    }
    if row.get("job_id"):
        view["job_id"] = row["job_id"]
    if created_new is not None:
        view["created_new"] = created_new
    return view


def _metrics(job: Job) -> dict[str, int | None]:
    queue_ms = execution_ms = None
    if job.started_at is not None:
        queue_ms = int((job.started_at - job.created_at).total_seconds() * 1000)
        if job.completed_at is not None:
            execution_ms = int((job.completed_at - job.started_at).total_seconds() * 1000)
    return {"queue_ms": queue_ms, "execution_ms": execution_ms}


def job_view(
    detail: JobDetail,
    base: str,
    *,
    busy_slots: int,
    signer: UrlSigner | None = None,
) -> dict[str, Any]:
    """The full Job object: status, progress, outputs, links and sakuga's extra fields."""
    job = detail.job
    eta_s: float | None = None
    if not job.terminal and detail.median_run_s is not None:
        median = detail.median_run_s
        done = float((job.progress or {}).get("value") or 0.0)
        eta_s = round(median * (1 - done) + median * detail.ahead / max(1, busy_slots), 3)
    progress = job.progress
    if progress is None and job.status is JobStatus.SUCCEEDED:
        progress = {"value": 1.0, "nodes_done": 0, "nodes_total": 0}
    return {
        "id": job.id,
        "status": job.status.value,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "expires_at": job.expires_at,
        "queue_position": detail.queue_position,
        "progress": progress,
        "outputs": [output_view(base, row, job, signer) for row in detail.outputs],
        "error": job.error,
        "urls": job_urls(base, job.id),
        "metrics": _metrics(job),
        "metadata": job.metadata,
        "eta_s": eta_s,
        "attempts": [
            {
                "number": a.number,
                "backend": a.backend,
                "prompt_id": a.prompt_id,
                "worker_id": a.worker_id,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "error": a.error,
                "telemetry": a.telemetry,
            }
            for a in job.attempts
        ],
        "backend": job.backend,
        "template": job.template,
        "params": job.params,
    }


def job_summary(job: Job) -> dict[str, Any]:
    """A list item: both the v2 names and the ones comfy-sdk reads (API-V2 §10.4)."""
    return {
        "id": job.id,
        "status": job.status.value,
        "created_at": job.created_at,
        "create_time": job.created_at,
        "update_time": job.updated_at,
        "completed_at": job.completed_at,
        "metadata": job.metadata,
        "template": job.template,
    }
