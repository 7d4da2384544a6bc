"""Webhook targets: the allow-list, bounded DNS resolution and the SSRF check of a URL.

Used at submit (a refused URL is a 422 before the job exists) and again by the deliverer
at every attempt, so a name that re-binds to a private address later is refused too.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from sakuga.domain.webhooks import ACCEPTED as URL_ACCEPTED
from sakuga.domain.webhooks import (
    AllowList,
    IPAddress,
    WebhookTarget,
    parse_webhook_url,
    refusal,
)
from sakuga.errors import InvalidRequest
from sakuga.settings import Settings

RESOLVE_TIMEOUT_S = 5.0


@functools.lru_cache(maxsize=8)
def _allow_list(entries: tuple[str, ...]) -> AllowList:
    return AllowList.parse(entries)


def allow_list(settings: Settings) -> AllowList:
    """The parsed ``webhook_allow`` (raises ValueError naming a bad entry)."""
    return _allow_list(tuple(settings.webhook_allow))


async def resolve(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """Every address ``host`` resolves to, within ``timeout_s``; InvalidRequest otherwise."""
    try:
        async with asyncio.timeout(timeout_s):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
    except TimeoutError as exc:
        raise InvalidRequest(
            "webhook_url", host, URL_ACCEPTED, f"resolving {host!r} took over {timeout_s:g} s"
        ) from exc
    except OSError as exc:
        raise InvalidRequest(
            "webhook_url", host, URL_ACCEPTED, f"host {host!r} does not resolve ({exc})"
        ) from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


@dataclass(frozen=True)
class Resolved:
    target: WebhookTarget
    addresses: tuple[IPAddress, ...]


async def check_webhook_url(
    url: str, allow: AllowList, *, timeout_s: float = RESOLVE_TIMEOUT_S
) -> Resolved:
    """Parse, resolve and SSRF-check a webhook URL; raises 422 ``InvalidRequest`` on refusal."""
    target = parse_webhook_url(url)
    if target.ip is not None:
        addresses: Sequence[IPAddress] = [target.ip]
    else:
        try:
            addresses = await resolve(target.host, target.port, timeout_s)
        except InvalidRequest as exc:
            raise InvalidRequest("webhook_url", url, URL_ACCEPTED, exc.message) from exc
    reason = refusal(target.host, addresses, allow)
    if reason is not None:
        raise InvalidRequest(
            "webhook_url", url, URL_ACCEPTED, f"webhook_url {url!r} is refused: {reason}"
        )
    return Resolved(target, tuple(addresses))
