"""``sakuga worker``: workers only, claiming jobs from the shared database (no API)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Annotated

import typer

from sakuga.cli.options import with_settings_options
from sakuga.logs import configure_logging
from sakuga.settings import Settings


def register(app: typer.Typer) -> None:
    app.command()(worker)


@with_settings_options()
def worker(
    settings: Settings,
    log_level: Annotated[str, typer.Option(envvar="SAKUGA_LOG_LEVEL")] = "info",
) -> None:
    """Run worker slots for SAKUGA_BACKENDS until SIGINT/SIGTERM; jobs come from the database."""
    if not settings.backends:
        raise typer.BadParameter(
            "a standalone worker needs ComfyUI backends: set SAKUGA_BACKENDS or --backends "
            "(the embedded engine runs inside `sakuga serve` instead)",
            param_hint="--backends",
        )
    configure_logging(log_level, settings.log_format)
    asyncio.run(_run(settings.model_copy(update={"workers": True})))


async def _run(settings: Settings) -> None:
    from sakuga.service import Service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Service(settings):
        typer.echo(f"sakuga worker ready (pid {os.getpid()})")
        await stop.wait()
        typer.echo("sakuga worker stopping: running jobs are handed back", err=True)
