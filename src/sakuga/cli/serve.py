"""``sakuga serve``: API + workers + (without backends) the embedded engine, in one process."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Annotated

import typer
import uvicorn

from sakuga.api.app import create_app
from sakuga.cli.options import (
    Backends,
    Capacity,
    DatabaseUrl,
    DataDir,
    EngineStep,
    HeartbeatS,
    JobTimeout,
    LeaseS,
    SilenceTimeout,
    build_settings,
)


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    host: Annotated[str, typer.Option(envvar="SAKUGA_HOST", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SAKUGA_PORT", help="Port to bind.")] = 8000,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    backends: Backends = None,
    engine_step_s: EngineStep = None,
    backend_capacity: Capacity = None,
    lease_s: LeaseS = None,
    heartbeat_s: HeartbeatS = None,
    job_timeout_s: JobTimeout = None,
    silence_timeout_s: SilenceTimeout = None,
    workers: Annotated[
        bool, typer.Option(envvar="SAKUGA_WORKERS", help="Run workers in this process.")
    ] = True,
    log_level: Annotated[str, typer.Option(envvar="SAKUGA_LOG_LEVEL")] = "info",
) -> None:
    """Run the job server until SIGINT/SIGTERM, then shut down cleanly."""
    settings = build_settings(
        host=host,
        port=port,
        database_url=database_url,
        data_dir=data_dir,
        backends=backends,
        engine_step_s=engine_step_s,
        backend_capacity=backend_capacity,
        lease_s=lease_s,
        heartbeat_s=heartbeat_s,
        job_timeout_s=job_timeout_s,
        silence_timeout_s=silence_timeout_s,
        workers=workers,
    )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # Bind first so ``--port 0`` works and the announced URL is the real one.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections wait in the backlog while start-up finishes
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), log_level=log_level.lower(), timeout_graceful_shutdown=10
    )
    typer.echo(f"sakuga serving on http://{host}:{bound} (API docs at /docs)")
    sys.stdout.flush()
    uvicorn.Server(config).run(sockets=[sock])
