"""Server options shared by ``serve`` and ``demo``: each maps to a Settings field and env var."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sakuga.settings import Settings

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="SAKUGA_DATABASE_URL", help="SQLAlchemy async URL."),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="SAKUGA_DATA_DIR", help="Database, artifacts, engine files."),
]
Backends = Annotated[
    str | None,
    typer.Option(
        "--backends",
        envvar="SAKUGA_BACKENDS",
        help="Comma-separated ComfyUI URLs; empty runs the embedded engine.",
    ),
]
EngineStep = Annotated[
    float | None,
    typer.Option("--engine-step-s", envvar="SAKUGA_ENGINE_STEP_S", help="Embedded sampler step."),
]
Capacity = Annotated[
    int | None,
    typer.Option(
        "--backend-capacity",
        envvar="SAKUGA_BACKEND_CAPACITY",
        help="Slots per backend (running + prefetched prompts).",
    ),
]
LeaseS = Annotated[
    float | None,
    typer.Option("--lease-s", envvar="SAKUGA_LEASE_S", help="Job lease length in seconds."),
]
HeartbeatS = Annotated[
    float | None,
    typer.Option("--heartbeat-s", envvar="SAKUGA_HEARTBEAT_S", help="Lease heartbeat interval."),
]
JobTimeout = Annotated[
    float | None,
    typer.Option("--job-timeout-s", envvar="SAKUGA_JOB_TIMEOUT_S", help="Whole-job deadline."),
]
SilenceTimeout = Annotated[
    float | None,
    typer.Option(
        "--silence-timeout-s",
        envvar="SAKUGA_SILENCE_TIMEOUT_S",
        help="Websocket silence before falling back to /history polling.",
    ),
]


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options the user typed on top."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(values.get("backends"), str):
        values["backends"] = [u.strip() for u in values["backends"].split(",") if u.strip()]
    return Settings(**values)
