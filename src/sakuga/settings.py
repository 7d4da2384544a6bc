"""One typed settings object, read from ``SAKUGA_*`` environment variables.

Built by the entry point (never at import) and validated at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the server and workers; units are in the names."""

    model_config = SettingsConfigDict(env_prefix="SAKUGA_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./sakuga-data/sakuga.db"
    data_dir: Path = Path("./sakuga-data")
    backends: Annotated[list[str], NoDecode] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None

    # Embedded engine (used when ``backends`` is empty).
    engine_step_s: float = 0.05
    engine_port: int = 0

    # Workers.
    workers: bool = True
    backend_capacity: int = 2
    lease_s: float = 30.0
    heartbeat_s: float = 10.0
    sweep_s: float = 5.0
    poll_s: float = 1.0

    # ComfyUI client deadlines.
    connect_timeout_s: float = 5.0
    silence_timeout_s: float = 30.0
    job_timeout_s: float = 3600.0
    history_poll_s: float = 1.0

    # Template parameter bounds.
    min_side_px: int = 64
    max_side_px: int = 2048
    max_aspect_ratio: float = 4.0
    max_prompt_chars: int = 2000
    max_steps: int = 150

    # Retention of jobs and their outputs.
    retention_s: int = 7 * 24 * 3600

    @field_validator("backends", mode="before")
    @classmethod
    def _split_backends(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"
