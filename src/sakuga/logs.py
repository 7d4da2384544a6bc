"""Structured logs: one JSON object per line (or readable text), with the run's context.

Every line names what it is about when that is known: ``job_id``, ``attempt`` and
``backend`` from ``log_context`` (a worker wraps each attempt in one), ``request_id`` from
the HTTP request being served (``X-Request-Id``, via asgi-correlation-id). Fields passed as
``extra={...}`` are kept as they are. The entry point calls ``configure_logging`` once.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "install_request_ids",
    "log_context",
    "request_id_headers",
]

LogFormat = Literal["json", "text"]

# The fields that say what a line is about, in the order they are printed.
CONTEXT_FIELDS = ("job_id", "attempt", "backend", "request_id")

REQUEST_ID_HEADER = "X-Request-Id"
# comfy-sdk copies this one onto its exceptions (API-V2 "Optional response headers").
COMFY_REQUEST_ID_HEADER = "X-Comfy-Request-Id"
# A caller's own id is kept when it is this safe to print and to echo; otherwise we mint one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,200}")

# Libraries that log every HTTP request at INFO: only their warnings, unless debugging.
_CHATTY = ("httpx", "httpcore")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("sakuga_log_context", default=_EMPTY)

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (None values skipped) to every log line inside the block.

    Nested blocks add to the outer ones; tasks started inside inherit the fields.
    """
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    """The fields ``log_context`` and the current request give a line logged here."""
    fields = dict(_context.get())
    request_id = correlation_id.get()
    if request_id:
        fields.setdefault("request_id", request_id)
    return fields


class ContextFilter(logging.Filter):
    """Copies the context fields onto each record; values given as ``extra`` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_context().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _RECORD_ATTRS and k not in CONTEXT_FIELDS and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO-8601, UTC), ``level``, ``logger``, ``message``,
    the context fields that are known, any ``extra`` fields, and ``exc_info`` as text."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        payload.update(_extras(record))
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc_info"] = record.exc_text
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO logger message [job_id=… attempt=1 backend=…]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {
            k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None
        }
        fields.update(_extras(record))
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # keep a traceback below the context
        context = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{first} [{context}]{newline}{rest}"


def configure_logging(level: str | int = "info", fmt: LogFormat = "json") -> None:
    """Send every logger's lines to stderr in ``fmt``; calling again replaces our handler.

    Handlers others installed on the root logger (a test's capture handler) are left alone.
    httpx's per-request INFO lines are kept only at ``debug``.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sakuga", False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(sys.stderr)
    handler._sakuga = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    debugging = root.level <= logging.DEBUG
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if debugging else logging.WARNING)


# -- request ids --------------------------------------------------------------------------


def valid_request_id(value: str) -> bool:
    """A caller's ``X-Request-Id`` is kept when it is 1 to 200 printable id characters."""
    return _REQUEST_ID.fullmatch(value) is not None


def request_id_headers() -> dict[str, str]:
    """The current request's id as response headers (for responses built outside the
    middleware, such as the unhandled-error envelope); empty outside a request."""
    request_id = correlation_id.get()
    if not request_id:
        return {}
    return {REQUEST_ID_HEADER: request_id, COMFY_REQUEST_ID_HEADER: request_id}


class _EchoComfyRequestId:
    """Echo the request id as ``X-Comfy-Request-Id`` too (comfy-sdk reads that name).

    Sits just inside ``CorrelationIdMiddleware``, which appends ``X-Request-Id`` on the
    way out: a copy a handler already set (``request_id_headers``) is dropped here so the
    response carries exactly one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start" and (request_id := correlation_id.get()):
                headers = MutableHeaders(scope=message)
                del headers[REQUEST_ID_HEADER]
                if COMFY_REQUEST_ID_HEADER not in headers:
                    headers.append(COMFY_REQUEST_ID_HEADER, request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


def install_request_ids(app: Any) -> None:
    """Give every request an id: the caller's ``X-Request-Id`` when well formed, else a new
    one; echoed as ``X-Request-Id`` and ``X-Comfy-Request-Id``; on every line it logs."""
    app.add_middleware(_EchoComfyRequestId)
    app.add_middleware(
        CorrelationIdMiddleware, header_name=REQUEST_ID_HEADER, validator=valid_request_id
    )
