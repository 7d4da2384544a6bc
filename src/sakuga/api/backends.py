"""The backend pool at run time (admin scope): list, register, drain, resume, remove.

A backend's name is its URL, which holds ``:`` and ``/``; routes address it by ``id``, a
readable URL-safe slug of host, port and path (``http://gpu1:8188`` -> ``gpu1-8188``;
``embedded`` for the stand-in engine), listed by ``GET /api/v2/backends``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from sakuga.api.auth import require_scope
from sakuga.api.deps import Services, services
from sakuga.api.schemas import ErrorEnvelope
from sakuga.errors import InvalidRequest, NotFound
from sakuga.worker.backends import Backend

router = APIRouter(
    prefix="/api/v2/backends",
    tags=["backends"],
    dependencies=[Depends(require_scope("admin"))],
)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 422)
}
MAX_URL = 255  # the width of backends.url


class BackendOut(BaseModel):
    id: str = Field(description="URL-safe id used in this API's paths.")
    name: str = Field(description="The backend's identity on jobs and attempts (its URL).")
    url: str = Field(description="Base URL sakuga talks to.")
    capacity: int = Field(description="Slots: running + prefetched prompts.")
    busy: int = Field(description="Slots in use by this process.")
    healthy: bool = Field(description="Answered its last probe and its breaker is closed.")
    reachable: bool = Field(description="Answered its last probe.")
    breaker: str = Field(description="closed, open or half_open.")
    consecutive_failures: int
    draining: bool = Field(description="Takes no new jobs; running ones finish.")
    removing: bool = Field(description="Removed; goes away once its running jobs finish.")
    registered: bool = Field(description="Registered at run time (else configured).")
    node_classes: int = Field(description="Node classes in its cached /object_info.")
    object_info_refreshed_at: datetime | None
    last_probe_at: datetime | None
    last_error: str | None = Field(description="Why the last probe failed, if it did.")


class BackendList(BaseModel):
    backends: list[BackendOut]


class AddBackend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL of a ComfyUI server, e.g. http://gpu1:8188.")
    capacity: int | None = Field(
        default=None, ge=1, le=64, description="Slots; SAKUGA_BACKEND_CAPACITY when omitted."
    )


def view(backend: Backend) -> dict[str, Any]:
    return {
        "id": backend.id,
        "name": backend.url,
        "url": backend.client.base_url,
        "capacity": backend.capacity,
        "busy": backend.busy,
        "healthy": backend.healthy,
        "reachable": backend.reachable,
        "breaker": backend.breaker.state.value,
        "consecutive_failures": backend.breaker.failures,
        "draining": backend.draining,
        "removing": backend.removing,
        "registered": backend.registered,
        "node_classes": len(backend.object_info or {}),
        "object_info_refreshed_at": backend.refreshed_at,
        "last_probe_at": backend.last_probe_at,
        "last_error": backend.last_error,
    }


def _find(svc: Services, backend_id: str) -> Backend:
    backend = svc.backends.by_id(backend_id)
    if backend is None:
        known = ", ".join(b.id for b in svc.backends.backends.values()) or "none"
        raise NotFound(f"backend {backend_id!r} not found; ids: {known}")
    return backend


def _checked_url(url: str) -> str:
    accepted = "an http:// or https:// base URL of a ComfyUI server, e.g. http://gpu1:8188"
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
        httpx.URL(url)  # what the client will parse: control characters, bad hosts
    except (ValueError, httpx.InvalidURL):
        raise InvalidRequest("url", url, accepted) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("url", url, accepted)
    if parts.username or parts.password:
        raise InvalidRequest(
            "url", url, f"{accepted}, without credentials (they would show in listings)"
        )
    if parts.query or parts.fragment:
        raise InvalidRequest("url", url, f"{accepted}, without a query or fragment")
    if len(url) > MAX_URL:
        raise InvalidRequest("url", url, f"a URL of at most {MAX_URL} characters")
    return url


@router.get("", response_model=BackendList, responses=ERRORS)
async def list_backends(svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    """Every backend of this server with its slots, health, breaker and drain state."""
    return {"backends": [view(b) for b in svc.backends.backends.values()]}


@router.post("", status_code=201, response_model=BackendOut, responses=ERRORS)
async def add_backend(
    body: AddBackend, svc: Annotated[Services, Depends(services)]
) -> JSONResponse:
    """Register a ComfyUI server; it must answer ``/object_info`` first (else 422).

    It is kept in the database, so it is re-opened at every start (and adopted by the other
    sakuga processes sharing the database within one probe interval). 409 if already there.
    """
    backend = await svc.backends.add(_checked_url(body.url), body.capacity, svc.store)
    return JSONResponse(
        BackendOut.model_validate(view(backend)).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/api/v2/backends/{backend.id}"},
    )


@router.get("/{backend_id}", response_model=BackendOut, responses=ERRORS)
async def get_backend(
    backend_id: str, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return view(_find(svc, backend_id))


@router.post("/{backend_id}/drain", response_model=BackendOut, responses=ERRORS)
async def drain_backend(
    backend_id: str, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    """Send it no new jobs; jobs running there finish. Kept across restarts until resumed."""
    backend = _find(svc, backend_id)
    await svc.backends.drain(backend, svc.store)
    return view(backend)


@router.post("/{backend_id}/resume", response_model=BackendOut, responses=ERRORS)
async def resume_backend(
    backend_id: str, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    """Undo a drain: it takes new jobs again (once healthy)."""
    backend = _find(svc, backend_id)
    await svc.backends.drain(backend, svc.store, draining=False)
    return view(backend)


@router.delete(
    "/{backend_id}",
    status_code=204,
    responses={**ERRORS, 202: {"model": BackendOut, "description": "Removal pending."}},
)
async def remove_backend(backend_id: str, svc: Annotated[Services, Depends(services)]) -> Response:
    """Remove a registered backend: 204 when it was idle and is gone; 202 while its running
    jobs finish (it takes no new ones and goes away after them). A configured backend
    (``SAKUGA_BACKENDS``) answers 409: it would come back at the next start; drain it."""
    backend = _find(svc, backend_id)
    if await svc.backends.remove(backend, svc.store):
        return Response(status_code=204)
    return JSONResponse(
        BackendOut.model_validate(view(backend)).model_dump(mode="json"), status_code=202
    )
