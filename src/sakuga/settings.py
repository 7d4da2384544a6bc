"""One typed settings object, read from ``SAKUGA_*`` environment variables.

Built by the entry point (never at import) and validated at start-up. Every field is also a
``sakuga serve`` option (see ``sakuga.cli.options``), so the two can never drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sakuga.domain.retry import RetryPolicy
from sakuga.domain.webhooks import AllowList


class Settings(BaseSettings):
    """Every knob of the server and workers; units are in the names."""

    model_config = SettingsConfigDict(env_prefix="SAKUGA_", extra="ignore")

    database_url: str = Field(
        "sqlite+aiosqlite:///./sakuga-data/sakuga.db",
        description="SQLAlchemy URL: SQLite (WAL; sqlite:/// and sqlite+aiosqlite:/// alike) "
        "or postgresql+asyncpg://…",
    )
    data_dir: Path = Field(Path("./sakuga-data"), description="Artifacts and engine files.")
    backends: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated ComfyUI URLs; empty runs the embedded engine.",
    )
    host: str = Field("127.0.0.1", description="Address the API binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API binds (0 = any free).")
    public_url: str | None = Field(None, description="Base of absolute links in responses.")

    engine_step_s: float = Field(0.05, ge=0, description="Embedded engine: seconds per step.")
    engine_port: int = Field(0, ge=0, le=65535, description="Embedded engine port (0 = any).")

    workers: bool = Field(True, description="Run workers in this process.")
    backend_capacity: int = Field(
        2, ge=1, le=64, description="Slots per backend: running + prefetched prompts."
    )
    lease_s: float = Field(30.0, gt=0, description="How long a claimed job's lease lasts.")
    heartbeat_s: float = Field(10.0, gt=0, description="How often a worker renews its lease.")
    poll_s: float = Field(1.0, gt=0, description="Backstop poll for work from other processes.")

    connect_timeout_s: float = Field(5.0, gt=0, description="Connecting to a backend.")
    silence_timeout_s: float = Field(
        30.0, gt=0, description="Websocket silence before polling /history."
    )
    job_timeout_s: float = Field(3600.0, gt=0, description="Deadline for a whole job.")
    history_poll_s: float = Field(1.0, gt=0, description="/history polling interval.")

    min_side_px: int = Field(64, ge=8, description="Template width/height minimum.")
    max_side_px: int = Field(2048, ge=8, description="Template width/height maximum.")
    max_aspect_ratio: float = Field(4.0, ge=1, description="Longest side / shortest side.")
    max_prompt_chars: int = Field(2000, ge=1, description="Template prompt length limit.")
    max_steps: int = Field(150, ge=1, description="Template sampler steps limit.")

    retention_s: int = Field(
        7 * 24 * 3600, gt=0, description="How long jobs and outputs stay retrievable."
    )
    sweep_s: float = Field(
        60.0, gt=0, description="Interval of the retention sweep (expired jobs, unused blobs)."
    )

    # Retries of transient failures (full-jitter exponential backoff).
    retry_attempts: int = Field(5, ge=1, description="Attempts per job, the first included.")
    retry_base_s: float = Field(2.0, ge=0, description="First retry delay (0 = no waits).")
    retry_cap_s: float = Field(300.0, ge=0, description="Longest single retry delay.")
    retry_budget_s: float = Field(
        3600.0, gt=0, description="Total time a job may spend retrying before it fails."
    )
    retry_elsewhere_s: float = Field(
        5.0,
        ge=0,
        description="How long a retry waits for another backend before the one it failed on.",
    )
    poison_strikes: int = Field(
        3, ge=1, description="Backend crashes or out-of-memory before a job fails as poison."
    )

    # Backend health.
    probe_s: float = Field(5.0, gt=0, description="Interval of backend health probes.")
    probe_timeout_s: float = Field(2.0, gt=0, description="Deadline of one health probe.")
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open a backend's circuit breaker."
    )
    breaker_reset_s: float = Field(
        30.0, gt=0, description="How long an open breaker waits before a trial probe."
    )

    # Auth and limits.
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys required: auto = whenever the bind is not loopback."
    )
    rate_limit: str = Field(
        "120/minute", description="Per-key limit on submissions and uploads (limits syntax)."
    )
    rate_limit_storage: str = Field("memory://", description="limits storage URL.")
    max_queued_per_key: int = Field(1000, ge=1, description="Queued jobs one key may have.")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="JSON body size limit.")
    max_upload_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="Asset upload size limit."
    )

    # Webhooks.
    webhook_attempts: int = Field(8, ge=1, description="Delivery attempts before dead-letter.")
    webhook_base_s: float = Field(5.0, ge=0, description="First webhook retry delay.")
    webhook_cap_s: float = Field(3600.0, ge=0, description="Longest webhook retry delay.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Deadline of one delivery.")
    webhook_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts or CIDRs webhooks may reach despite the private-address rule.",
    )
    webhook_secret: str | None = Field(
        None, description="Standard Webhooks signing secret (whsec_…); generated if unset."
    )

    # Signed output URLs.
    url_signing_key: str | None = Field(
        None, description="HMAC key for signed download URLs; generated if unset."
    )
    signed_url_ttl_s: int = Field(3600, gt=0, description="Lifetime of a signed URL.")

    log_format: Literal["json", "text"] = Field("json", description="Log line format.")

    @field_validator("backends", "webhook_allow", mode="before")
    @classmethod
    def _split_backends(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [str(part).strip().rstrip("/") for part in value if str(part).strip()]
        return value

    @field_validator("webhook_allow")
    @classmethod
    def _check_webhook_allow(cls, value: list[str]) -> list[str]:
        AllowList.parse(value)  # ValueError naming the entry that is no host, address or CIDR
        return value

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.retry_attempts,
            base_s=self.retry_base_s,
            cap_s=self.retry_cap_s,
            budget_s=self.retry_budget_s,
            poison_strikes=self.poison_strikes,
        )
