"""``sakuga engine``: the embedded ComfyUI stand-in as its own process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from sakuga.engine.options import DEFAULT_CHECKPOINTS, PREVIEW_METHODS, EngineOptions, Faults


def register(app: typer.Typer) -> None:
    """Add the ``engine`` command to the ``sakuga`` CLI."""
    app.command(name="engine")(engine)


def _announce(url: str) -> None:
    # Tests that start the engine with --port 0 read the port from this exact line.
    print(f"sakuga engine listening on {url}", flush=True)


def engine(
    host: Annotated[
        str, typer.Option(envvar="SAKUGA_ENGINE_HOST", help="Address to bind.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="SAKUGA_ENGINE_PORT", help="Port to bind; 0 picks a free one.")
    ] = 8188,
    step_s: Annotated[
        float,
        typer.Option(envvar="SAKUGA_ENGINE_STEP_S", min=0.0, help="Seconds per sampler step."),
    ] = 0.05,
    checkpoints: Annotated[
        str,
        typer.Option(envvar="SAKUGA_ENGINE_CHECKPOINTS", help="Comma-separated checkpoint names."),
    ] = ",".join(DEFAULT_CHECKPOINTS),
    data_dir: Annotated[
        Path,
        typer.Option(envvar="SAKUGA_ENGINE_DATA_DIR", help="Folder for input/, output/, temp/."),
    ] = Path("./sakuga-data/engine"),
    preview_method: Annotated[
        str,
        typer.Option(
            envvar="SAKUGA_ENGINE_PREVIEW_METHOD",
            help=f"Default sampler previews: {', '.join(PREVIEW_METHODS)}.",
        ),
    ] = "none",
    fail_node: Annotated[
        str | None,
        typer.Option(envvar="SAKUGA_ENGINE_FAIL_NODE", help="Fault: this class_type raises."),
    ] = None,
    oom: Annotated[
        bool, typer.Option(envvar="SAKUGA_ENGINE_OOM", help="Fault: samplers run out of memory.")
    ] = False,
    crash_at_step: Annotated[
        int | None,
        typer.Option(
            envvar="SAKUGA_ENGINE_CRASH_AT_STEP", min=1, help="Fault: exit hard at this step."
        ),
    ] = None,
    silent: Annotated[
        bool, typer.Option(envvar="SAKUGA_ENGINE_SILENT", help="Fault: send no websocket frames.")
    ] = False,
    drop_ws: Annotated[
        bool,
        typer.Option(envvar="SAKUGA_ENGINE_DROP_WS", help="Fault: close sockets at prompt start."),
    ] = False,
    latency_s: Annotated[
        float,
        typer.Option(envvar="SAKUGA_ENGINE_LATENCY_S", min=0.0, help="Fault: delay every reply."),
    ] = 0.0,
    hang: Annotated[
        bool,
        typer.Option(envvar="SAKUGA_ENGINE_HANG", help="Fault: samplers hang until interrupted."),
    ] = False,
) -> None:
    """Run the CPU stand-in for ComfyUI (deterministic pictures, not a diffusion model)."""
    names = tuple(name.strip() for name in checkpoints.split(",") if name.strip())
    faults = Faults(
        fail_node=fail_node,
        oom=oom,
        crash_at_step=crash_at_step,
        silent=silent,
        drop_ws=drop_ws,
        latency_s=latency_s,
        hang=hang,
    )
    try:
        options = EngineOptions(
            data_dir=data_dir,
            checkpoints=names,
            step_s=step_s,
            preview_method=preview_method,
            faults=faults,
        )
    except ValueError as exc:
        print(f"sakuga engine: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    from sakuga.engine.server import run_engine  # loaded only when the engine runs

    try:
        run_engine(options, host, port, on_ready=_announce)
    except OSError as exc:
        print(
            f"sakuga engine: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose another --port, or 0 for any free port",
            file=sys.stderr,
        )
        raise typer.Exit(1) from exc
