"""One typed settings object, read from ``SAKUGA_*`` environment variables.

Built by the entry point (never at import) and validated at start-up. Every field is also a
``sakuga serve`` option (see ``sakuga.cli.options``), so the two can never drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the server and workers; units are in the names."""

    model_config = SettingsConfigDict(env_prefix="SAKUGA_", extra="ignore")

    database_url: str = Field(
        "sqlite+aiosqlite:///./sakuga-data/sakuga.db",
        description="SQLAlchemy async URL: SQLite (WAL) or postgresql+asyncpg://…",
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

    @field_validator("backends", mode="before")
    @classmethod
    def _split_backends(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [str(part).strip().rstrip("/") for part in value if str(part).strip()]
        return value

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"
