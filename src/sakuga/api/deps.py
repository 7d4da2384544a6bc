"""What every router needs, hung on ``app.state.services`` by the service at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from sakuga.artifacts import Artifacts
from sakuga.domain.templates import TemplateLimits
from sakuga.notify import Notifier
from sakuga.settings import Settings
from sakuga.store import Store
from sakuga.worker.backends import BackendPool

LOCAL_OWNER = "local"


@dataclass
class Services:
    settings: Settings
    store: Store
    artifacts: Artifacts
    notifier: Notifier
    backends: BackendPool
    limits: TemplateLimits


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def owner(_request: Request) -> str:
    """The caller's tenant; one local owner until API keys arrive (issue 3)."""
    return LOCAL_OWNER


def base_url(request: Request) -> str:
    """Absolute origin (plus mount prefix) for links, from config or the request."""
    configured: str | None = services(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")
