"""Liveness, readiness and per-backend health."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from sakuga.api.deps import Services, services
from sakuga.errors import BackendError
from sakuga.worker.backends import Backend

router = APIRouter(tags=["health"])

READY_BUDGET_S = 0.25


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (no I/O)."""
    return {"status": "ok"}


async def _store_ok(svc: Services) -> bool:
    try:
        await svc.store.db.read(lambda conn: conn.execute(text("SELECT 1")).scalar())
        return True
    except (OSError, RuntimeError, Exception):  # any driver failure means "not ready"
        return False


async def _probe(backend: Backend) -> bool:
    try:
        await backend.client.system_stats()
        return True
    except BackendError:
        return False


@router.get("/readyz")
async def readyz(svc: Annotated[Services, Depends(services)]) -> JSONResponse:
    """200 when the store answers and at least one backend is reachable, within 250 ms."""
    checks: dict[str, bool] = {"store": False, "backend": False}
    try:
        async with asyncio.timeout(READY_BUDGET_S):
            store_task = asyncio.create_task(_store_ok(svc))
            probes = [asyncio.create_task(_probe(b)) for b in svc.backends.backends.values()]
            checks["store"] = await store_task
            for done in asyncio.as_completed(probes):
                if await done:
                    checks["backend"] = True
                    break
            for p in probes:
                p.cancel()
    except TimeoutError:
        pass
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/api/v2/health")
async def health(svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    """Detail per backend: reachability, capacity, busy slots, node catalogue."""
    backends = list(svc.backends.backends.values())
    reachable = await asyncio.gather(
        *(asyncio.wait_for(_probe(b), READY_BUDGET_S * 4) for b in backends),
        return_exceptions=True,
    )
    return {
        "status": "healthy" if any(r is True for r in reachable) else "degraded",
        "backends": [
            {
                "url": b.url,
                "reachable": r is True,
                "capacity": b.capacity,
                "busy": b.busy,
                "node_classes": len(b.object_info or {}),
                "object_info_refreshed_at": b.refreshed_at,
            }
            for b, r in zip(backends, reachable, strict=True)
        ],
    }
