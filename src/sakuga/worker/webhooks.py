"""The webhook deliverer: claims due outbox rows, signs them and posts them to their URL.

One owned task (``async with WebhookDeliverer(...)``) claims due deliveries with a lease and
runs each attempt as its own task, at most ``MAX_IN_FLIGHT`` at a time. A new delivery wakes
it at once through the notifier; polling every ``poll_s`` (or sooner, when a retry is due
sooner) is the backstop for deliveries written by other processes.

Each attempt re-checks the target against the SSRF rules *at delivery time*: the host is
resolved once, every address must pass, and the request goes to that very address (the
name is kept for ``Host`` and TLS), so a name that re-binds to a private address after the
job was submitted is refused too. Redirects are not followed; keep-alive is off so a TLS
connection made for one name is never reused for another on the same address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
from standardwebhooks import Webhook

from sakuga import __version__
from sakuga.domain.webhooks import (
    AllowList,
    Delivery,
    IPAddress,
    WebhookTarget,
    backoff_s,
    exhausted,
    parse_webhook_url,
    refusal,
)
from sakuga.errors import InvalidRequest
from sakuga.keyfile import load_or_create
from sakuga.notify import Notifier
from sakuga.settings import Settings
from sakuga.store import Store
from sakuga.worker.webhook_targets import allow_list, resolve

if TYPE_CHECKING:
    from sakuga.metrics import Metrics

log = logging.getLogger(__name__)

WAKE = "webhooks:new"
SECRET_FILE = "webhook-secret"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_IN_FLIGHT = 16
# A claimed delivery stays leased this long past its own deadline before another takes it.
LEASE_MARGIN_S = 30.0


# -- the signing secret ---------------------------------------------------------------------


def check_secret(secret: str) -> str:
    """Return ``secret`` if it is a usable Standard Webhooks key, else raise ValueError."""
    try:
        Webhook(secret)
    except Exception as exc:
        raise ValueError(
            "the webhook secret is not valid; use 'whsec_' followed by the base64 of "
            "24 to 64 random bytes (or unset it and one is generated)"
        ) from exc
    return secret


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def load_secret(settings: Settings) -> str:
    """``settings.webhook_secret``, else the one in ``<data_dir>/webhook-secret``.

    The file is created once (mode 0600) when missing; several processes sharing the data
    folder agree on it because it is published with an atomic link. Processes on several
    hosts must be given the same ``SAKUGA_WEBHOOK_SECRET`` instead.
    """
    if settings.webhook_secret:
        return check_secret(settings.webhook_secret)
    return check_secret(load_or_create(settings.data_dir / SECRET_FILE, new_secret))


# -- one attempt ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: delivered, or failed (``permanent``: never worth retrying)."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False


def _body(delivery: Delivery) -> str:
    return json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)


def signed_headers(signer: Webhook, delivery: Delivery, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers; ``webhook-id`` stays the same across retries."""
    return {
        "content-type": "application/json",
        "user-agent": f"sakuga/{__version__} (webhooks)",
        "webhook-id": delivery.id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signer.sign(delivery.id, at, body),
    }


async def attempt(
    http: httpx.AsyncClient,
    signer: Webhook,
    delivery: Delivery,
    allow: AllowList,
    timeout_s: float,
) -> Outcome:
    """Post ``delivery`` once, within ``timeout_s`` all told (resolving included)."""
    try:
        target = parse_webhook_url(delivery.url)
    except InvalidRequest as exc:
        return Outcome(False, error=exc.message, permanent=True)
    try:
        async with asyncio.timeout(timeout_s):
            if target.ip is not None:
                addresses: Sequence[IPAddress] = [target.ip]
            else:
                try:
                    addresses = await resolve(target.host, target.port, timeout_s)
                except InvalidRequest as exc:
                    return Outcome(False, error=exc.message)
            reason = refusal(target.host, addresses, allow)
            if reason is not None:
                return Outcome(False, error=f"refused: {reason}", permanent=True)
            body = _body(delivery)
            headers = signed_headers(signer, delivery, body, datetime.now(UTC))
            headers["host"] = target.host_header
            return await _post(http, target, addresses, headers, body.encode())
    except TimeoutError:
        return Outcome(False, error=f"no answer within {timeout_s:g} s")


async def _post(
    http: httpx.AsyncClient,
    target: WebhookTarget,
    addresses: Sequence[IPAddress],
    headers: dict[str, str],
    content: bytes,
) -> Outcome:
    """Connect to each checked address in turn (the first that accepts), never to the name."""
    last = "no address"
    url = httpx.URL(target.url)
    # TLS still checks the certificate against the name, though the socket goes to ``ip``.
    named_tls = target.scheme == "https" and target.ip is None
    extensions = {"sni_hostname": target.host} if named_tls else {}
    for ip in addresses:
        pinned = url.copy_with(host=str(ip), port=target.port)
        try:
            async with http.stream(
                "POST", pinned, headers=headers, content=content, extensions=extensions
            ) as response:
                code = response.status_code
        except httpx.ConnectError as exc:
            last = f"cannot connect to {ip}: {str(exc) or type(exc).__name__}"
            continue
        except httpx.HTTPError as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {str(exc) or 'no detail'}")
        if 200 <= code < 300:
            return Outcome(True, status_code=code)
        note = " (redirects are not followed)" if 300 <= code < 400 else ""
        return Outcome(False, status_code=code, error=f"HTTP {code}{note}")
    return Outcome(False, error=last)


# -- the deliverer --------------------------------------------------------------------------


class WebhookDeliverer:
    """Owns the claim loop and the attempts in flight; opened and closed by the service."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        worker_id: str,
        *,
        metrics: Metrics | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self.worker_id = worker_id
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.allow = allow_list(settings)
        self.secret = load_secret(settings)
        self.signer = Webhook(self.secret)
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._wake: asyncio.Event | None = None

    @property
    def lease_s(self) -> float:
        return self.settings.webhook_timeout_s + LEASE_MARGIN_S

    def _publish(self) -> None:
        self.notifier.publish(WAKE)

    async def __aenter__(self) -> WebhookDeliverer:
        timeout = self.settings.webhook_timeout_s
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._wake = self.notifier.subscribe(WAKE)
        self.store.outbox.listen(self._publish)
        self._task = asyncio.create_task(self._run(), name="sakuga-webhooks")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.store.outbox.unlisten(self._publish)
        tasks = [t for t in (self._task, *self._in_flight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        if self._wake is not None:
            self.notifier.unsubscribe(WAKE, self._wake)
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        assert self._wake is not None
        poll_s = self.settings.poll_s
        while True:
            self._wake.clear()
            free = self.max_in_flight - len(self._in_flight)
            wait_s = poll_s
            try:
                claimed = await self.store.outbox.claim(
                    self.worker_id, limit=free, lease_s=self.lease_s
                )
                for delivery in claimed:
                    task = asyncio.create_task(
                        self._deliver(delivery), name=f"webhook-{delivery.id}"
                    )
                    self._in_flight.add(task)
                    task.add_done_callback(self._done)
                if len(claimed) < free:
                    due = await self.store.outbox.next_due_s()
                    if due is not None:
                        wait_s = min(poll_s, due)
                else:
                    wait_s = poll_s  # full: a finished attempt sets the wake event
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is unreachable: try again after the poll interval
                log.exception("webhook claim failed")
            if wait_s > 0:
                await Notifier.wait_event(self._wake, wait_s)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._wake is not None:
            self._wake.set()

    async def _deliver(self, delivery: Delivery) -> None:
        assert self._http is not None
        settings = self.settings
        try:
            outcome = await attempt(
                self._http, self.signer, delivery, self.allow, settings.webhook_timeout_s
            )
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.outbox.release(delivery, self.worker_id))
            raise
        except Exception as exc:  # a bug, not the receiver: record it and retry later
            log.exception("webhook attempt crashed", extra={"delivery_id": delivery.id})
            outcome = Outcome(False, error=f"internal error: {type(exc).__name__}")
        try:
            await self._settle(delivery, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:  # the lease expires and another attempt follows
            log.exception("recording a webhook attempt failed", extra={"delivery_id": delivery.id})

    async def _settle(self, delivery: Delivery, outcome: Outcome) -> None:
        settings, outbox = self.settings, self.store.outbox
        extra = {
            "delivery_id": delivery.id,
            "job_id": delivery.job_id,
            "event": delivery.event_type,
            "attempt": delivery.attempts,
            "status_code": outcome.status_code,
        }
        if outcome.delivered:
            assert outcome.status_code is not None
            await outbox.delivered(delivery, self.worker_id, outcome.status_code)
            result = "delivered"
            log.info("webhook delivered", extra=extra)
        else:
            dead = outcome.permanent or exhausted(delivery.attempts, settings.webhook_attempts)
            retry_in = None
            if not dead:
                retry_in = backoff_s(
                    delivery.attempts, settings.webhook_base_s, settings.webhook_cap_s
                )
            await outbox.failed(
                delivery,
                self.worker_id,
                error=outcome.error or "failed",
                status_code=outcome.status_code,
                retry_in_s=retry_in,
            )
            result = "dead" if dead else "retry"
            log.warning(
                "webhook %s: %s", "dead" if dead else "will retry", outcome.error, extra=extra
            )
        if self.metrics is not None:
            self.metrics.webhook_delivery(result)
