"""``GET /metrics``: Prometheus text exposition; needs the ``admin`` scope when auth is on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sakuga.api.auth import require_scope
from sakuga.api.deps import Services, services

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_scope("admin"))],
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request, svc: Annotated[Services, Depends(services)]) -> Response:
    """Jobs by state and template, queue depth, queue wait and execution histograms,
    retries, backend health and slots, webhook deliveries (read fresh on every scrape).

    The Prometheus text format, or OpenMetrics when the scraper's ``Accept`` asks for it.
    """
    await svc.metrics.refresh(svc.store, svc.backends)
    body, content_type = svc.metrics.render(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
