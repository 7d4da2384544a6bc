"""What every router needs, hung on ``app.state.services`` by the service at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from sakuga.api.auth import LOCAL_OWNER as LOCAL_OWNER  # re-exported
from sakuga.api.auth import principal
from sakuga.api.signing import UrlSigner
from sakuga.artifacts import Artifacts
from sakuga.domain.templates import TemplateLimits
from sakuga.metrics import Metrics
from sakuga.notify import Notifier
from sakuga.prompt_keys import PromptKeys
from sakuga.settings import Settings
from sakuga.store import Store
from sakuga.worker.backends import BackendPool


@dataclass
class Services:
    settings: Settings
    store: Store
    artifacts: Artifacts
    notifier: Notifier
    backends: BackendPool
    limits: TemplateLimits
    metrics: Metrics
    signer: UrlSigner
    prompt_keys: PromptKeys


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, one hop per request.
    result: Services = request.app.state.services
    return result


async def owner(request: Request) -> str:
    """The caller's tenant, from its API key (``"local"`` in development mode); or 401."""
    return (await principal(request)).owner


def base_url(request: Request) -> str:
    """Absolute origin (plus mount prefix) for links, from config or the request."""
    configured: str | None = request.app.state.services.settings.public_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")
