"""Webhook routes (sakuga extension): a job's deliveries, the owner's outbox, re-queue a dead one.

The signing secret is never served: it is ``SAKUGA_WEBHOOK_SECRET``, or the file
``<data_dir>/webhook-secret`` generated on first start (see the README's Webhooks section).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from sakuga.api.auth import principal, require_scope
from sakuga.api.deps import Services, owner, services
from sakuga.api.schemas import ErrorEnvelope
from sakuga.domain.webhooks import Delivery, DeliveryStatus
from sakuga.errors import BadQuery, DeliveryNotDead, NotFound
from sakuga.worker.webhook_targets import RESOLVE_TIMEOUT_S, allow_list, check_webhook_url

router = APIRouter(prefix="/api/v2", tags=["webhooks"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (400, 401, 403, 404, 409, 422)
}


class DeliveryOut(BaseModel):
    """One webhook event on its way to (or at) its URL."""

    id: str = Field(description="Also the `webhook-id` header; the same on every retry.")
    job_id: str
    event_type: str
    url: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int = Field(description="Attempts made so far.")
    max_attempts: int = Field(description="Attempts before the delivery is dead-lettered.")
    next_attempt_at: datetime | None = Field(description="When the next attempt is due.")
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="The exact JSON body that is signed and sent.")


class JobDeliveries(BaseModel):
    deliveries: list[DeliveryOut]


class DeliveryPage(JobDeliveries):
    next_cursor: str | None = None


async def submit_webhook_url(request: Request, svc: Services, url: str | None) -> str | None:
    """The webhook URL a new job stores: the body's (checked now, 422 if refused), else the
    API key's default (checked at each delivery), else None."""
    if url is not None:
        timeout_s = min(RESOLVE_TIMEOUT_S, svc.settings.webhook_timeout_s)
        await check_webhook_url(url, allow_list(svc.settings), timeout_s=timeout_s)
        return url
    return (await principal(request)).webhook_url


def delivery_view(delivery: Delivery, max_attempts: int) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "job_id": delivery.job_id,
        "event_type": delivery.event_type,
        "url": delivery.url,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "max_attempts": max_attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": delivery.created_at,
        "delivered_at": delivery.delivered_at,
        "payload": delivery.payload,
    }


@router.get(
    "/jobs/{job_id}/webhooks",
    response_model=JobDeliveries,
    responses=ERRORS,
    dependencies=[Depends(require_scope("read"))],
)
async def job_webhooks(
    job_id: str,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> dict[str, Any]:
    """The job's webhook deliveries in event order, with attempts and the last error."""
    if await svc.store.jobs.get(job_id, who) is None:
        raise NotFound(f"job {job_id!r} not found")
    rows = await svc.store.outbox.for_job(job_id, who)
    limit = svc.settings.webhook_attempts
    return {"deliveries": [delivery_view(d, limit) for d in rows]}


@router.get(
    "/webhooks/deliveries",
    response_model=DeliveryPage,
    response_model_exclude_unset=True,
    responses=ERRORS,
    dependencies=[Depends(require_scope("read"))],
)
async def list_deliveries(
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
    status: Annotated[
        Literal["pending", "delivered", "dead"] | None,
        Query(description="Only deliveries in this state (`dead` = the dead letters)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The caller's deliveries, newest first; pass ``next_cursor`` back as ``cursor``."""
    before = _decode_cursor(cursor) if cursor else None
    rows = await svc.store.outbox.page(
        who,
        status=DeliveryStatus(status) if status else None,
        limit=limit + 1,
        before=before,
    )
    page = rows[:limit]
    max_attempts = svc.settings.webhook_attempts
    result: dict[str, Any] = {"deliveries": [delivery_view(d, max_attempts) for d in page]}
    if len(rows) > limit:
        result["next_cursor"] = _encode_cursor(page[-1])
    return result


@router.post(
    "/webhooks/deliveries/{delivery_id}/retry",
    response_model=DeliveryOut,
    responses=ERRORS,
    dependencies=[Depends(require_scope("submit"))],
)
async def retry_delivery(
    delivery_id: str,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> dict[str, Any]:
    """Queue a dead delivery again, due now, with a fresh set of attempts (409 if not dead)."""
    existing = await svc.store.outbox.get(delivery_id, who)
    if existing is None:
        raise NotFound(f"webhook delivery {delivery_id!r} not found")
    if existing.status is not DeliveryStatus.DEAD:
        raise DeliveryNotDead(
            f"webhook delivery {delivery_id!r} is {existing.status.value}; only a dead "
            "delivery can be retried",
            details={"status": existing.status.value},
        )
    requeued = await svc.store.outbox.requeue(delivery_id, who)
    if requeued is None:
        raise NotFound(f"webhook delivery {delivery_id!r} not found")
    return delivery_view(requeued, svc.settings.webhook_attempts)


def _encode_cursor(delivery: Delivery) -> str:
    raw = f"{delivery.created_at.isoformat()}|{delivery.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, delivery_id = raw.partition("|")
        if not delivery_id:
            raise ValueError(raw)
        return datetime.fromisoformat(at), delivery_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadQuery("cursor", cursor, "the next_cursor value of a previous page") from exc
