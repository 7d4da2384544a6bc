"""Every error leaves the API in one envelope: ``{"error": {code, message, details}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from sakuga.errors import SakugaError, StoreUnavailable
from sakuga.logs import request_id_headers

log = logging.getLogger(__name__)

_CODES_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def envelope(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}},
        status_code=status,
        headers=headers,
    )


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _sakuga_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SakugaError)
    headers = dict(getattr(exc, "headers", None) or {}) or None
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(max(1, int(retry_after)))}
    if exc.status >= 500:
        log.warning("request failed: %s", exc.message)
    return envelope(exc.status, exc.code, exc.message, exc.details, headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _location(tuple(first.get("loc", ())))
    message = f"{field}: {first.get('msg')}"
    details = {
        "field": field,
        "value": first.get("input") if _jsonable(first.get("input")) else None,
        "accepted": first.get("msg"),
        "errors": [
            {"field": _location(tuple(e.get("loc", ()))), "message": e.get("msg")} for e in errors
        ],
    }
    return envelope(422, "invalid_request", message, details)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
    return envelope(exc.status_code, code, str(exc.detail), None, dict(exc.headers or {}))


_OUTAGE_SQLSTATES = ("08", "53", "57P")


def is_store_outage(exc: BaseException) -> bool:
    """A database that is down, overloaded or locked (retry later), not a bug in a query."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError):
        return True  # pool exhausted; connection refused, lost or locked
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        # PostgreSQL: connection exception, too many connections / out of resources,
        # shutting down or starting up.
        state = str(getattr(exc.orig, "sqlstate", None) or "")
        return state.startswith(_OUTAGE_SQLSTATES)
    # asyncpg's connect raises the OS error itself (refused, reset) without a DBAPI wrapper.
    return isinstance(exc, ConnectionError)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    """Store overload or outage answers 503 ``store_unavailable`` with Retry-After, never 500."""
    if not is_store_outage(exc):
        return await _unexpected(request, exc)
    log.warning("store unavailable: %s", exc)
    unavailable = StoreUnavailable(
        "the job store is unavailable or overloaded; retry after a moment"
    )
    return await _sakuga_error(request, unavailable)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    # Often answered outside the request-id middleware: name the id the log line carries.
    return envelope(
        500,
        "internal_error",
        "internal error; the server log has the details",
        headers=request_id_headers(),
    )


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the envelope."""
    app.add_exception_handler(SakugaError, _sakuga_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sa_exc.SQLAlchemyError, _store_error)
    app.add_exception_handler(ConnectionError, _store_error)
    app.add_exception_handler(Exception, _unexpected)
