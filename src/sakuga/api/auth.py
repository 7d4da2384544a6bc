"""Who is calling: API keys (``Authorization: Bearer sk_…``), scopes, and the dev mode.

Auth is *on* when ``settings.auth == "on"``, or ``"auto"`` (the default) and the server binds
a non-loopback address. With auth off — development only, reachable from this machine
alone — every request is the single owner ``"local"`` with every scope.

Routers depend on ``require_scope("read" | "submit" | "admin")``; ``sakuga.api.deps.owner``
derives the tenant from the same principal, so every query stays filtered by owner.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sakuga.domain.scopes import SCOPES
from sakuga.errors import Forbidden, Unauthorized
from sakuga.settings import Settings

__all__ = [
    "LOCAL_OWNER",
    "SCOPES",
    "Forbidden",
    "Principal",
    "Scope",
    "Unauthorized",
    "announce_mode",
    "auth_enabled",
    "check_scope",
    "is_loopback",
    "principal",
    "require_scope",
]

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"
Scope = Literal["read", "submit", "admin"]


@dataclass(frozen=True)
class Principal:
    """The caller of one request.

    ``key_id`` is None in development mode (auth off). ``owner`` is the tenant every query
    filters by. ``webhook_url`` is the key's default webhook, used for jobs submitted without
    their own ``webhook_url`` (read by the webhooks module).
    """

    key_id: str | None
    owner: str
    scopes: frozenset[str]
    webhook_url: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


DEV_PRINCIPAL = Principal(key_id=None, owner=LOCAL_OWNER, scopes=frozenset(SCOPES))


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; anything else (0.0.0.0, names, ::) is not."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def auth_enabled(mode: str, host: str) -> bool:
    """Whether keys are required: ``on``; ``off``; ``auto`` = the bind is not loopback."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return not is_loopback(host)


def announce_mode(settings: Settings) -> None:
    """Log at start-up whether keys are required, so an open server is never a surprise."""
    if auth_enabled(settings.auth, settings.host):
        log.info("API keys required (auth=%s, bind %s)", settings.auth, settings.host)
    elif is_loopback(settings.host):
        log.warning(
            "development mode: no API keys, every request is owner %r with every scope; "
            "reachable from this machine only (bind %s)",
            LOCAL_OWNER,
            settings.host,
        )
    else:
        log.warning(
            "auth=off on non-loopback bind %s: ANYONE who can reach it has every scope",
            settings.host,
        )


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


def bearer_token(request: Request) -> str | None:
    """The key from ``Authorization: Bearer <key>``; None when absent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("Authorization header is malformed; send 'Authorization: Bearer sk_…'")
    return token


async def principal(request: Request) -> Principal:
    """The request's principal; raises 401 ``unauthorized`` when a key is needed and bad."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    settings = _settings(request)
    if not auth_enabled(settings.auth, settings.host):
        result = DEV_PRINCIPAL
    else:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized("an API key is required; send 'Authorization: Bearer sk_…'")
        keys = request.app.state.services.store.keys
        key = await keys.verify(token)
        if key is None:
            raise Unauthorized("the API key is unknown or revoked")
        result = Principal(
            key_id=key.id, owner=key.owner, scopes=key.scopes, webhook_url=key.webhook_url
        )
    request.state.principal = result
    return result


async def check_scope(request: Request, scope: Scope) -> Principal:
    """The principal if it holds ``scope``; 401 without a usable key, 403 without the scope."""
    who = await principal(request)
    if not who.has(scope):
        have = ", ".join(sorted(who.scopes)) or "none"
        raise Forbidden(
            f"this route needs the {scope!r} scope; the API key has: {have}",
            details={"required_scope": scope, "scopes": sorted(who.scopes)},
        )
    return who


# Only for the OpenAPI document (the "Authorize" button in /docs); never raises itself.
_bearer = HTTPBearer(auto_error=False, description="An API key: sk_<prefix>_<secret>")


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency giving the principal, or raising 403 ``forbidden`` without ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}")

    async def dependency(
        request: Request, _docs: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        return await check_scope(request, scope)

    dependency.__name__ = f"require_{scope}"
    return dependency
