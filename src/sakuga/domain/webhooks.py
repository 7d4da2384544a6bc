"""Webhooks, the pure parts: event payloads, the retry schedule and the SSRF address rules.

No I/O here. Resolving a host and posting to it live in ``sakuga.worker.webhooks``; this
module decides what is sent, when the next attempt is due, and which addresses may be
reached at all (OWASP SSRF baseline: loopback, private, link-local, metadata, shared,
multicast and reserved ranges are refused unless the operator's allow-list names them).
"""

from __future__ import annotations

import enum
import ipaddress
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sakuga.domain.jobs import JobStatus
from sakuga.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_CHARS = 2048

# -- events ---------------------------------------------------------------------------------

EVENT_BY_STATUS: dict[JobStatus, str] = {
    JobStatus.RUNNING: "job.running",
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELED: "job.canceled",
    JobStatus.EXPIRED: "job.expired",
}
EVENT_TYPES: frozenset[str] = frozenset(EVENT_BY_STATUS.values())


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Delivery:
    """One outbox row: an event for one job, on its way to one URL.

    ``attempts`` counts attempts made (a claim counts one); ``next_attempt_at`` is when the
    next one is due (pending only); ``seq`` orders a job's events, 1 for its first.
    """

    id: str
    seq: int
    job_id: str
    owner: str
    url: str
    event_type: str
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None
    last_status_code: int | None = None


def event_for(status: JobStatus) -> str | None:
    """The event a job entering ``status`` reports; None for queued and canceling."""
    return EVENT_BY_STATUS.get(status)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def job_payload(
    event_type: str,
    job: Mapping[Any, Any],
    outputs: Sequence[Mapping[Any, Any]],
    at: datetime,
) -> dict[str, Any]:
    """The JSON body of one event (Standard Webhooks shape: ``type``, ``timestamp``, ``data``).

    ``job`` is a ``jobs`` row (or the same fields), ``outputs`` its asset rows. Only what the
    job's owner may already read goes out, and no links: outputs are listed by id, to be
    fetched through the authenticated API. The error's traceback stays on the job.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}; one of {sorted(EVENT_TYPES)}")
    error = job.get("error")
    data: dict[str, Any] = {
        "id": job["id"],
        "status": job["status"],
        "created_at": _iso(job.get("created_at")),
        "started_at": _iso(job.get("started_at")),
        "completed_at": _iso(job.get("completed_at")),
        "updated_at": _iso(job.get("updated_at")),
        "error": None
        if not error
        else {k: error.get(k) for k in ("code", "message", "node_id", "class_type")},
        "metadata": dict(job.get("metadata") or {}),
        "template": job.get("template"),
        "attempts": int(job.get("attempt_count") or 0),
        "outputs": [
            {
                "id": row["id"],
                "node_id": row.get("node_id"),
                "name": row.get("file_path"),
                "type": row.get("kind"),
                "content_type": row.get("content_type"),
                "size_bytes": row.get("size_bytes"),
                "hash": row.get("hash"),
            }
            for row in outputs
        ],
    }
    return {"type": event_type, "timestamp": _iso(at), "data": data}


# -- retry schedule -------------------------------------------------------------------------


def backoff_s(
    failures: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap_s, base_s * 2**(failures-1))].

    ``failures`` counts failed attempts so far (1 after the first). ``base_s = 0`` removes
    every wait (tests). ``rand`` returns a float in [0, 1).
    """
    if failures < 1:
        return 0.0
    ceiling = min(cap_s, base_s * 2.0 ** min(failures - 1, 62))
    return max(0.0, ceiling * rand())


def exhausted(attempts: int, max_attempts: int) -> bool:
    """Whether a delivery that has failed ``attempts`` times goes to the dead letters."""
    return attempts >= max_attempts


# -- SSRF: address classes ------------------------------------------------------------------


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Checked in order; the first class that matches names the refusal.
_CLASSES: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    # Cloud instance metadata: AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba.
    ("metadata", _nets("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")),
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("link-local", _nets("169.254.0.0/16", "fe80::/10")),
    ("shared", _nets("100.64.0.0/10")),
    (
        "private",
        _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10"),
    ),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    (
        "reserved",
        _nets(
            "192.0.0.0/24",
            "192.0.2.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "240.0.0.0/4",
            "100::/64",
            "2001::/23",
            "2001:db8::/32",
        ),
    ),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), else None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be reached (``"loopback"``, ``"metadata"``…), or None if public."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        return classify(inner)
    for name, networks in _CLASSES:
        if any(ip.version == net.version and ip in net for net in networks):
            return name
    if not ip.is_global:
        return "reserved"
    return None


# -- SSRF: the operator's allow-list --------------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks webhooks may reach although they are not public.

    Entries are host names (``hooks.internal``, ``*.internal`` for any subdomain), addresses
    (``127.0.0.1``, ``::1``) or networks (``10.0.0.0/8``, ``fd00::/8``). A host name entry
    permits whatever that name resolves to.
    """

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Raises ValueError naming the first entry that is neither a host nor a CIDR."""
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().strip("[]").lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry[2:] if entry.startswith("*.") else entry
            if not _valid_hostname(name) or _numeric_host(name):
                raise ValueError(
                    f"webhook allow-list entry {raw!r} is not a host name, address or network; "
                    "use e.g. hooks.internal, *.internal, 127.0.0.1 or 10.0.0.0/8"
                )
            if entry.startswith("*."):
                suffixes.append("." + name)
            else:
                hosts.add(name)
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks))

    def permits(self, host: str, ip: IPAddress | None = None) -> bool:
        """Whether the entry list names ``host`` or a network holding ``ip``."""
        name = host.lower().rstrip(".")
        if name in self.hosts or any(name.endswith(s) for s in self.suffixes):
            return True
        if ip is None:
            return False
        candidates: list[IPAddress] = [ip]
        inner = embedded_ipv4(ip)
        if inner is not None:
            candidates.append(inner)
        return any(
            c.version == net.version and c in net for c in candidates for net in self.networks
        )


# -- SSRF: the URL itself -------------------------------------------------------------------

ACCEPTED = (
    "an http:// or https:// URL without credentials whose host resolves to public addresses; "
    "loopback, private, link-local, shared and metadata addresses need SAKUGA_WEBHOOK_ALLOW"
)

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def _valid_hostname(name: str) -> bool:
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in labels)


def _numeric_host(name: str) -> bool:
    """A name whose last label is a number: an IPv4 address in some legacy spelling."""
    return bool(_NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]))


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed webhook URL: ``host`` is lower-case, IDNA-encoded, without brackets."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def _refuse(url: str, reason: str, field: str = "webhook_url") -> InvalidRequest:
    return InvalidRequest(
        field, url, ACCEPTED, message=f"{field} {url!r} is refused: {reason}; use {ACCEPTED}"
    )


def parse_webhook_url(url: str, field: str = "webhook_url") -> WebhookTarget:
    """Check the URL's shape; raises ``InvalidRequest`` naming ``field`` and what is accepted.

    Refuses other schemes, credentials, control characters and whitespace, bad ports,
    bracketed names such as ``[example.com]`` and numeric hosts in legacy spellings
    (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) that resolvers would read as addresses.
    """
    if not isinstance(url, str) or not url:
        raise _refuse(str(url), "it is empty", field)
    if len(url) > MAX_URL_CHARS:
        raise _refuse(url[:64] + "…", f"it is longer than {MAX_URL_CHARS} characters", field)
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise _refuse(url, "it contains whitespace or control characters", field)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise _refuse(url, f"it is not a valid URL ({exc})", field) from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse(url, f"scheme {parts.scheme or '(none)'!r} is not http or https", field)
    if "@" in parts.netloc:
        raise _refuse(url, "it carries credentials (user@ or user:password@)", field)
    if not host:
        raise _refuse(url, "it has no host", field)
    if port == 0:
        raise _refuse(url, "port 0 is not a port", field)
    ip: IPAddress | None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None:
        try:
            host = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError as exc:
            raise _refuse(url, f"host {host!r} is not a valid name", field) from exc
        host = host.rstrip(".")
        if _numeric_host(host):
            raise _refuse(url, f"host {host!r} is a numeric address in a legacy spelling", field)
        if not _valid_hostname(host):
            raise _refuse(url, f"host {host!r} is not a valid name", field)
    elif isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise _refuse(url, "IPv6 zone identifiers are not accepted", field)
    default = 443 if scheme == "https" else 80
    return WebhookTarget(url=url, scheme=scheme, host=host, port=port or default, ip=ip)


def refusal(host: str, addresses: Sequence[IPAddress], allow: AllowList) -> str | None:
    """Why ``host`` (resolved to ``addresses``) must not be reached, or None when it may.

    Every address must pass: a name that resolves to one public and one private address is
    refused, since the connection could land on either.
    """
    if not addresses:
        return f"host {host!r} resolves to no address"
    for ip in addresses:
        kind = classify(ip)
        if kind is not None and not allow.permits(host, ip):
            shown = host if host == str(ip) else f"{host!r} resolves to {ip}"
            return f"{shown}, a {kind} address (allow it with SAKUGA_WEBHOOK_ALLOW)"
    return None
