"""The FastAPI application: routers, the error envelope, and the service lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sakuga import __version__
from sakuga.api import (
    assets,
    auth,
    backends,
    errors,
    events,
    health,
    jobs,
    metrics,
    templates,
    webhooks,
)
from sakuga.api.limits import BodyLimit, RateLimits
from sakuga.logs import install_request_ids
from sakuga.service import Service
from sakuga.settings import Settings

DESCRIPTION = """
sakuga's job API. Jobs and assets follow Comfy-Org's **Comfy API v2** contract, so the
official `comfy-sdk` client works unchanged; sakuga adds templates, health and extra job
fields (`queue_position`, `eta_s`, `attempts`, `backend`) beside it under `/api/v2/`.
Every error body is `{"error": {"code", "message", "details"}}`.
"""


def create_app(settings: Settings) -> FastAPI:
    """The API app; its lifespan opens the store, backends (or the embedded engine), workers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Service(settings) as service, RateLimits.from_settings(settings) as limits:
            app.state.services = service.services
            app.state.rate_limits = limits
            auth.announce_mode(settings)
            yield

    app = FastAPI(
        title="sakuga",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(
        BodyLimit,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    install_request_ids(app)  # outermost: every response and log line gets the id
    for module in (jobs, events, assets, templates, health, metrics, webhooks, backends):
        app.include_router(module.router)
    return app
