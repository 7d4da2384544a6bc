"""Job routes (Comfy API v2): submit, get, list, workflow, cancel."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from sakuga.api.auth import require_scope
from sakuga.api.deps import Services, base_url, owner, services
from sakuga.api.limits import submit_allowed
from sakuga.api.schemas import ErrorEnvelope, JobOut, JobPage, SubmitBody, WorkflowOut
from sakuga.api.views import job_summary, job_view
from sakuga.api.webhooks import submit_webhook_url
from sakuga.domain.graph import is_ui_format
from sakuga.domain.inputs import pin, references, staged_blobs, staged_digest, staged_name
from sakuga.domain.jobs import Job, JobStatus, fingerprint
from sakuga.domain.labels import filter_problem, label_problem
from sakuga.domain.templates import bind, get_template
from sakuga.errors import (
    BadQuery,
    InvalidMetadataFilter,
    InvalidRequest,
    MetadataInvalid,
    MissingAsset,
    NotFound,
    WorkflowFormatUI,
)
from sakuga.notify import NEW_JOB, cancel_key, job_key
from sakuga.store import NewJob
from sakuga.store.job_queries import JobDetail

router = APIRouter(prefix="/api/v2", tags=["jobs"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (400, 401, 403, 404, 413, 422, 429, 503)
}
MAX_IDEMPOTENCY_KEY = 255


def _busy_slots(svc: Services) -> int:
    return sum(b.capacity for b in svc.backends.backends.values())


async def _view(request: Request, svc: Services, job_id: str, who: str) -> dict[str, Any]:
    detail = await svc.store.jobs.detail(job_id, who)
    if detail is None:
        raise NotFound(f"job {job_id!r} not found")
    return job_view(detail, base_url(request), busy_slots=_busy_slots(svc), signer=svc.signer)


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobOut,
    responses=ERRORS,
    dependencies=[Depends(submit_allowed)],
)
async def submit_job(
    request: Request,
    body: SubmitBody,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Validate and durably queue a workflow or template job; 201 only once it is stored."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise BadQuery("Idempotency-Key", idempotency_key, "1 to 255 characters")
    labels = body.metadata or {}
    problem = label_problem(labels)
    if problem is not None:
        raise MetadataInvalid(*problem)
    workflow, template, params = _resolve_body(body, svc)
    webhook_url = await submit_webhook_url(request, svc, body.webhook_url)
    uploads = svc.backends.upload_inputs()
    if not uploads:
        await svc.backends.refresh_all(svc.store)
        uploads = svc.backends.upload_inputs()
    workflow = await pin_inputs(svc, who, workflow, uploads)
    staged = frozenset(staged_blobs(workflow))
    eligible = await svc.backends.eligible(workflow, store=svc.store, staged=staged)
    new = NewJob(
        id=str(uuid.uuid4()),
        owner=who,
        workflow=workflow,
        fingerprint=fingerprint(workflow, template, params),
        eligible_backends=eligible,
        template=template,
        params=params,
        metadata={k: str(v) for k, v in labels.items()},
        idempotency_key=idempotency_key,
        webhook_url=webhook_url,
        created_at=datetime.now(UTC),
        max_queued=svc.settings.max_queued_per_key,
    )
    placed = await svc.store.writer.submit(new)
    if body.extra_data is not None and body.extra_data.api_key_comfy_org:
        svc.prompt_keys.put(new.id, body.extra_data.api_key_comfy_org)
    svc.notifier.publish(NEW_JOB)
    # The answer is built from what was just committed, without reading it back.
    detail = JobDetail(
        _queued(new, placed.seq, svc.store.jobs.retention),
        outputs=[],
        queue_position=placed.queue_position,
        median_run_s=placed.median_run_s,
        ahead=placed.ahead,
    )
    view = job_view(detail, base_url(request), busy_slots=_busy_slots(svc), signer=svc.signer)
    return JSONResponse(JobOut.model_validate(view).model_dump(mode="json"), status_code=201)


def _queued(new: NewJob, seq: int, retention: timedelta) -> Job:
    assert new.created_at is not None
    return Job(
        id=new.id,
        owner=new.owner,
        status=JobStatus.QUEUED,
        workflow=new.workflow,
        created_at=new.created_at,
        updated_at=new.created_at,
        expires_at=new.created_at + retention,
        seq=seq,
        template=new.template,
        params=new.params,
        metadata=new.metadata,
        fingerprint=new.fingerprint,
        eligible_backends=new.eligible_backends,
    )


async def pin_inputs(
    svc: Services, who: str, workflow: dict[str, Any], uploads: set[str]
) -> dict[str, Any]:
    """Resolve ``core/ASSET`` refs and uploaded file names to staged blob names (or 422)."""
    names: dict[tuple[str, str], str] = {}
    missing: list[str] = []
    for ref in references(workflow, uploads):
        if ref.asset_id is not None:
            row = await svc.store.assets.get(ref.asset_id, who) if ref.asset_id else None
            if row is None:
                missing.append(ref.asset_id or f"{ref.node_id}.{ref.input_name}")
                continue
        elif (digest := staged_digest(ref.file_path or "")) is not None:
            # A staged name is only valid over a blob this owner uploaded.
            row = await svc.store.assets.by_hash(digest, who)
            if row is None:
                missing.append(ref.file_path or "")
                continue
        else:
            row = await svc.store.assets.by_file_path(ref.file_path or "", who)
            if row is None:
                continue  # not an upload of this owner: the backend's own file list decides
        names[(ref.node_id, ref.input_name)] = staged_name(row["hash"], row["file_path"])
    if missing:
        raise MissingAsset(
            f"asset reference(s) {', '.join(missing)} not found; upload with POST /api/v2/assets "
            "and reference the returned id",
            details={"missing_ids": missing},
        )
    return pin(workflow, names) if names else workflow


def _resolve_body(
    body: SubmitBody, svc: Services
) -> tuple[dict[str, Any], str | None, dict[str, Any] | None]:
    if body.template is not None:
        if body.workflow is not None:
            raise InvalidRequest("workflow", "(graph)", "either a workflow or a template, not both")
        bound = bind(
            get_template(body.template),
            body.params or {},
            svc.limits,
            seed_source=lambda: secrets.randbelow(2**63),
        )
        return bound.workflow, body.template, bound.params
    if body.params is not None:
        raise InvalidRequest("params", body.params, "params only together with a template")
    if body.workflow is None:
        raise InvalidRequest(
            "workflow", None, "an API-format graph in `workflow`, or a `template` name"
        )
    if is_ui_format(body.workflow):
        raise WorkflowFormatUI(
            "workflow is in the UI (save) format; export it with 'Save (API Format)' "
            "and send that graph"
        )
    return body.workflow, None, None


# exclude_unset: the last page has no ``next_cursor`` key at all (API-V2 §2), not a null.
@router.get(
    "/jobs",
    response_model=JobPage,
    response_model_exclude_unset=True,
    responses=ERRORS,
    dependencies=[Depends(require_scope("read"))],
)
async def list_jobs(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    filters = _metadata_filters(request)
    before = _decode_cursor(cursor) if cursor else None
    jobs = await svc.store.jobs.page(who, limit=limit + 1, before_seq=before, metadata=filters)
    page = jobs[:limit]
    result: dict[str, Any] = {"jobs": [job_summary(j) for j in page]}
    if len(jobs) > limit:
        result["next_cursor"] = _encode_cursor(page[-1].seq)
    return result


def _metadata_filters(request: Request) -> dict[str, str]:
    filters: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata[") and key.endswith("]"):
            filters[key[len("metadata[") : -1]] = value
        elif key.startswith("metadata"):
            raise InvalidMetadataFilter(key, value, "metadata[<name>]=<value>")
    problem = filter_problem(filters)
    if problem is not None:
        raise InvalidMetadataFilter(*problem)
    return filters


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(raw)
        return int(raw[1:])
    except ValueError as exc:
        raise BadQuery(
            "cursor", cursor, "the next_cursor value of a previous page", message=None
        ) from exc


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses=ERRORS,
    dependencies=[Depends(require_scope("read"))],
)
async def get_job(
    job_id: str,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> dict[str, Any]:
    """The authoritative job view; outputs fill in while it runs."""
    return await _view(request, svc, job_id, who)


@router.get(
    "/jobs/{job_id}/workflow",
    response_model=WorkflowOut,
    responses=ERRORS,
    dependencies=[Depends(require_scope("read"))],
)
async def get_workflow(
    job_id: str,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> dict[str, Any]:
    """The API-format graph the job runs."""
    job = await svc.store.jobs.get(job_id, who)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return {"workflow": job.workflow, "format": "api"}


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses=ERRORS,
    dependencies=[Depends(require_scope("submit"))],
)
async def cancel_job(
    job_id: str,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> dict[str, Any]:
    """Queued: canceled at once, never runs. Running: canceling, then canceled."""
    detail = await svc.store.jobs.request_cancel(job_id, who)
    if detail is None:
        raise NotFound(f"job {job_id!r} not found")
    svc.notifier.publish(job_key(job_id))
    svc.notifier.publish(cancel_key(job_id))
    return job_view(detail, base_url(request), busy_slots=_busy_slots(svc), signer=svc.signer)
