"""Limits on writes: request body size, per-key rate limits, and a cap on queued jobs.

Reads are never limited (API-V2 §10.1: comfy-sdk aborts a run on any non-200 while polling
or streaming). A 429 on submit is raised before the job exists, so the request's
``Idempotency-Key`` stays unused and comfy-sdk's retry with the same key succeeds.

- ``BodyLimit``: pure ASGI middleware; JSON and other bodies up to ``max_body_bytes``,
  ``multipart/form-data`` (uploads) up to ``max_upload_bytes``. A declared
  ``Content-Length`` over the limit is refused before reading; chunked bodies are counted as
  they stream. Either way: 413 ``payload_too_large`` naming the limit.
- ``RateLimits``: a moving window per API key (``settings.rate_limit``, storage from
  ``settings.rate_limit_storage``, e.g. ``memory://`` or ``redis://host``); submissions and
  uploads are separate buckets of the same rate. Over it: 429 ``rate_limited``.
- ``submit_allowed``: also caps an owner's queued jobs at ``max_queued_per_key``
  (429 ``queue_full``). The cap is checked, not reserved, so a burst of concurrent
  submissions can pass it by a few jobs.
"""

from __future__ import annotations

import asyncio
import math
import time
from types import TracebackType
from typing import Annotated, Any

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sakuga.api.auth import Principal, require_scope
from sakuga.api.errors import envelope
from sakuga.errors import RateLimited
from sakuga.settings import Settings

# A multipart body carries part headers and boundaries besides the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Before answering 413, read and drop a modest overage so a client still writing its body
# reads the answer instead of a reset connection (nginx's "lingering close"). Anything
# bigger, or a client waiting on "Expect: 100-continue", is answered at once.
DRAIN_MAX_BYTES = 8 * 1024 * 1024
DRAIN_S = 5.0


# -- body size ------------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit.

    An ``HTTPException`` so FastAPI's body parsing re-raises it instead of answering 400;
    the error handlers turn it into the 413 ``payload_too_large`` envelope.
    """

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodyLimit:
    """Refuse request bodies over their limit with 413 before the route sees them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, content_type: str) -> tuple[int, str, str]:
        """(byte limit, what it limits, the setting that sets it) for a content type."""
        if content_type.lower().startswith("multipart/form-data"):
            limit = self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
            return limit, "an upload", "max_upload_bytes"
        return self.max_body_bytes, "a request body", "max_body_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, what, setting = self.limit_for(headers.get("content-type", ""))
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            expects_continue = "100-continue" in headers.get("expect", "").lower()
            if int(declared) <= DRAIN_MAX_BYTES and not expects_continue:
                await _drain(receive, int(declared))
            message = _too_large(what, limit, setting, f"Content-Length is {int(declared)}")
            response = envelope(
                413,
                "payload_too_large",
                message,
                {"limit_bytes": limit, "content_length": int(declared), "setting": setting},
                {"Connection": "close"},
            )
            await response(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_MAX_BYTES)
                    raise BodyTooLarge(
                        _too_large(what, limit, setting, "the body streamed past it")
                    )
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # read outside FastAPI's handlers (e.g. in a middleware)
            if started:
                raise
            response = envelope(413, "payload_too_large", str(exc.detail), {"limit_bytes": limit})
            await response(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Receive and drop up to ``budget`` more body bytes, for at most ``DRAIN_S``."""
    try:
        async with asyncio.timeout(DRAIN_S):
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


def _too_large(what: str, limit: int, setting: str, seen: str) -> str:
    return (
        f"{what} may be at most {limit} bytes ({seen}); "
        f"send less, or raise SAKUGA_{setting.upper()} on the server"
    )


# -- rate limits ----------------------------------------------------------------------------


def _async_storage_url(url: str) -> str:
    return url if url.startswith("async+") else f"async+{url}"


class RateLimits:
    """``async with RateLimits(rate, storage_url)``: moving-window limits per identity."""

    def __init__(self, rate: str, storage_url: str) -> None:
        try:
            self.item: RateLimitItem = parse(rate)
        except ValueError as exc:
            raise ValueError(
                f"rate_limit {rate!r} is not understood; use e.g. '120/minute' or '10/second'"
            ) from exc
        self.storage = storage_from_string(_async_storage_url(storage_url))
        self.limiter = MovingWindowRateLimiter(self.storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(settings.rate_limit, settings.rate_limit_storage)

    async def __aenter__(self) -> RateLimits:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The in-memory storage runs a short expiry task; do not leave it pending.
        timer: Any = getattr(self.storage, "timer", None)
        if timer is not None and not timer.done():
            timer.cancel()

    async def hit(self, bucket: str, identity: str) -> None:
        """Count one request, or raise 429 ``rate_limited`` with the seconds to wait."""
        if await self.limiter.hit(self.item, bucket, identity):
            return
        stats = await self.limiter.get_window_stats(self.item, bucket, identity)
        wait_s = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"rate limit of {self.item} for {bucket} exceeded; retry in {wait_s} s",
            retry_after_s=wait_s,
            details={"limit": str(self.item), "bucket": bucket, "retry_after_s": wait_s},
        )


def _rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


def _identity(who: Principal) -> str:
    return who.key_id or f"owner:{who.owner}"


async def submit_allowed(
    request: Request, who: Annotated[Principal, Depends(require_scope("submit"))]
) -> Principal:
    """Dependency of ``POST /jobs``: submit scope, then the rate limit.

    The queued-jobs cap is enforced by the insert itself (``NewJob.max_queued``), in the
    same transaction, so a burst cannot pass it.
    """
    await _rate_limits(request).hit("submissions", _identity(who))
    return who


async def upload_allowed(
    request: Request, who: Annotated[Principal, Depends(require_scope("submit"))]
) -> Principal:
    """Dependency of asset uploads: submit scope, then the rate limit."""
    await _rate_limits(request).hit("uploads", _identity(who))
    return who
