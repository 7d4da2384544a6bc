"""``sakuga serve``: API + workers + (without backends) the embedded engine, in one process."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sakuga.cli.options import with_settings_options
from sakuga.logs import configure_logging
from sakuga.settings import Settings


def register(app: typer.Typer) -> None:
    app.command()(serve)


@with_settings_options()
def serve(
    settings: Settings,
    log_level: Annotated[
        str, typer.Option(envvar="SAKUGA_LOG_LEVEL", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run the job server until SIGINT/SIGTERM, then shut down cleanly."""
    # Server modules load here, so client commands (submit, jobs, ...) start fast.
    import uvicorn

    from sakuga.api.app import create_app
    from sakuga.serving import bind_socket

    configure_logging(log_level, settings.log_format)
    host = settings.host
    # Bind first so ``--port 0`` works and the announced URL is the real one.
    sock = bind_socket(host, settings.port)
    bound = sock.getsockname()[1]
    # log_config=None: uvicorn's own lines (access log included) go through our handler.
    config = uvicorn.Config(
        create_app(settings),
        log_level=log_level.lower(),
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    typer.echo(f"sakuga serving on http://{host}:{bound} (API docs at /docs)")
    sys.stdout.flush()
    uvicorn.Server(config).run(sockets=[sock])
