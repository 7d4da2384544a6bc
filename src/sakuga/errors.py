"""The exception root of sakuga and the one table that maps errors to HTTP status.

Every message names the bad value and what would be accepted. API handlers raise these;
``sakuga.api.errors`` turns them into the Comfy API v2 error envelope using ``status``.
"""

from __future__ import annotations

from typing import Any


class SakugaError(Exception):
    """Root of every error sakuga raises on purpose."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(SakugaError):
    """A request field is malformed; ``details`` names field, value and what is accepted."""

    code = "invalid_request"
    status = 422

    def __init__(self, field: str, value: Any, accepted: str, message: str | None = None) -> None:
        text = message or f"{field}: {value!r} is not accepted; {accepted}"
        super().__init__(text, details={"field": field, "value": value, "accepted": accepted})


class BadQuery(InvalidRequest):
    """A query parameter (cursor, limit, filter) is malformed."""

    status = 400


class MetadataInvalid(InvalidRequest):
    """Job labels break the Comfy API v2 rules."""

    code = "metadata_invalid"


class InvalidMetadataFilter(BadQuery):
    """A ``metadata[k]=v`` list filter is malformed."""

    code = "invalid_metadata_filter"


class WorkflowFormatUI(SakugaError):
    code = "workflow_format_ui"
    status = 422


class WorkflowInvalid(SakugaError):
    """The graph would fail on the backend. ``error`` and ``node_errors`` keep ComfyUI's shape."""

    code = "invalid_workflow"
    status = 422

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        message = str(error.get("message") or "workflow is invalid")
        reasons = [
            f"node {node_id} ({entry.get('class_type')}): "
            f"{err.get('message')}: {err.get('details')}"
            for node_id, entry in node_errors.items()
            for err in entry.get("errors", [])
        ]
        if reasons:
            message = f"{message}: " + "; ".join(reasons)
        elif error.get("details"):
            message = f"{message}: {error['details']}"
        super().__init__(message, details={"error": error, "node_errors": node_errors})
        self.error = error
        self.node_errors = node_errors


class MissingAsset(SakugaError):
    code = "missing_asset"
    status = 422


class IdempotencyKeyReuse(SakugaError):
    code = "idempotency_key_reuse"
    status = 422


class HashMismatch(SakugaError):
    code = "hash_mismatch"
    status = 409


class DeliveryNotDead(SakugaError):
    """Only a dead-lettered webhook delivery can be queued again."""

    code = "delivery_not_dead"
    status = 409


class NotFound(SakugaError):
    code = "not_found"
    status = 404


class BlobNotFound(NotFound):
    code = "blob_not_found"


class RangeNotSatisfiable(SakugaError):
    code = "range_not_satisfiable"
    status = 416


class NoBackendInfo(SakugaError):
    """No backend has answered /object_info yet, so a workflow cannot be checked."""

    code = "backend_unavailable"
    status = 503
    retry_after_s = 2


class BackendConflict(SakugaError):
    """A backend change that contradicts the pool (already there, configured, being removed)."""

    code = "backend_conflict"
    status = 409


class BackendNotRegistrable(InvalidRequest):
    """A URL given to register did not answer ``/object_info`` like a ComfyUI server."""

    code = "backend_unreachable"


class StoreUnavailable(SakugaError):
    code = "store_unavailable"
    status = 503
    retry_after_s = 1


# -- auth and limits (sakuga.api.auth, sakuga.api.limits) ----------------------------------


class Unauthorized(SakugaError):
    """No usable API key: missing, malformed, unknown or revoked."""

    code = "unauthorized"
    status = 401
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(SakugaError):
    """The key lacks a scope, or a signed URL is tampered with or expired."""

    code = "forbidden"
    status = 403


class PayloadTooLarge(SakugaError):
    code = "payload_too_large"
    status = 413


class RateLimited(SakugaError):
    """Too many submissions or uploads in the window; ``retry_after_s`` says when to retry."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_s: int, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class QueueFull(RateLimited):
    code = "queue_full"

    # A queued job takes at least seconds to start: asking sooner only gets refused again.
    RETRY_S = 5

    @classmethod
    def over_cap(cls, queued: int, cap: int) -> QueueFull:
        """The caller's key already has ``queued`` jobs waiting, ``cap`` allowed."""
        return cls(
            f"{queued} jobs of this key are already queued (the cap is {cap}); "
            "wait for some to start, or cancel some",
            retry_after_s=cls.RETRY_S,
            details={"queued": queued, "max_queued": cap},
        )


# -- backend (ComfyUI) errors: raised by sakuga.comfy, classified by the worker ------------


class BackendError(SakugaError):
    """A ComfyUI backend failed. ``transient`` says whether another attempt may succeed."""

    code = "backend_error"
    status = 502
    transient = True

    def __init__(self, backend: str, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(f"backend {backend}: {message}", details=details)
        self.backend = backend


class BackendUnreachable(BackendError):
    code = "backend_unreachable"


class BackendTimeout(BackendError):
    code = "backend_timeout"


class BackendLost(BackendError):
    """The backend forgot the prompt (restart or crash) before it finished."""

    code = "backend_lost"


class BackendRejected(BackendError):
    """The backend refused the prompt (400 or 200 with node_errors): permanent."""

    code = "invalid_workflow"
    transient = False


class ExecutionFailed(BackendError):
    """A node raised while the prompt ran. Out-of-memory is transient; the rest are not."""

    code = "node_execution_error"
    transient = False

    def __init__(
        self,
        backend: str,
        message: str,
        *,
        node_id: str | None = None,
        class_type: str | None = None,
        exception_type: str | None = None,
        traceback: list[str] | None = None,
        out_of_memory: bool = False,
    ) -> None:
        super().__init__(backend, message)
        self.node_id = node_id
        self.class_type = class_type
        self.exception_type = exception_type
        self.traceback = traceback or []
        self.transient = out_of_memory
        if out_of_memory:
            self.code = "out_of_memory"


class ExecutionInterrupted(BackendError):
    code = "interrupted"
    transient = False
