"""Client commands: ``submit``, ``jobs``, ``job``, ``cancel`` against a sakuga server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sakuga.cli.remote import ApiError, Remote

Server = Annotated[
    str,
    typer.Option("--server", envvar="SAKUGA_SERVER", help="Base URL of the sakuga server."),
]
DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL = {"succeeded", "failed", "canceled", "expired"}

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(jobs)
    app.command()(job)
    app.command()(cancel)


def _coerce(raw: str) -> Any:
    """``--param steps=20`` gives an int, ``cfg=7.5`` a float, anything else a string."""
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            continue
    return raw


def parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        params[name.strip()] = (
            value if name.strip() in {"prompt", "negative_prompt"} else _coerce(value)
        )
    return params


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    if isinstance(exc, ApiError) and exc.details:
        console.print_json(json.dumps(exc.details, default=str))
    return typer.Exit(1)


def submit(
    template: Annotated[str | None, typer.Option(help="Built-in template name.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Template parameter NAME=VALUE.")
    ] = None,
    workflow: Annotated[
        Path | None, typer.Option(help="API-format workflow JSON file.", exists=True)
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow progress and download outputs.")] = False,
    output_dir: Annotated[
        Path, typer.Option(envvar="SAKUGA_OUTPUT_DIR", help="Where --wait saves outputs.")
    ] = Path("sakuga-output"),
    server: Server = DEFAULT_SERVER,
) -> None:
    """Submit a template or workflow job; with --wait, show progress and save the outputs."""
    if (template is None) == (workflow is None):
        raise typer.BadParameter("give exactly one of --template or --workflow")
    body: dict[str, Any] = (
        {"template": template, "params": parse_params(param or [])}
        if template is not None
        else {"workflow": json.loads(workflow.read_text())}  # type: ignore[union-attr]
    )
    remote = Remote(server)
    try:
        created = remote.submit(body)
        console.print(f"job [bold]{created['id']}[/bold] {created['status']}")
        if not wait:
            typer.echo(created["id"])
            return
        final = follow(remote, created["id"])
        if final["status"] != "succeeded":
            error = final.get("error") or {}
            console.print(f"[red]{final['status']}[/red]: {error.get('message', '')}")
            raise typer.Exit(1)
        for output in final["outputs"]:
            typer.echo(str(remote.download(output, output_dir).resolve()))
    except (ApiError, httpx.HTTPError) as exc:
        raise _fail(exc) from exc
    finally:
        remote.close()


def follow(remote: Remote, job_id: str) -> dict[str, Any]:
    """Show a progress bar fed by the job's events; return the final job."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=1.0)
        for name, data in remote.events(job_id):
            if name == "status":
                position = data.get("queue_position")
                label = data["status"] + (f" (position {position})" if position else "")
                bar.update(task, description=label)
            elif name == "progress":
                step = data.get("step")
                detail = f" step {step}/{data.get('steps')}" if step is not None else ""
                node = data.get("current_node_class") or ""
                bar.update(task, completed=data["value"], description=f"running {node}{detail}")
            elif name == "output":
                bar.console.print(f"output {data['name']} ({data['size_bytes']} bytes)")
        final = remote.job(job_id)
        if final["status"] == "succeeded":
            bar.update(task, completed=1.0, description="succeeded")
    return final


def jobs(
    limit: Annotated[int, typer.Option(help="How many of the newest jobs.")] = 20,
    server: Server = DEFAULT_SERVER,
) -> None:
    """List the newest jobs."""
    remote = Remote(server)
    try:
        page = remote.jobs(limit)
    except (ApiError, httpx.HTTPError) as exc:
        raise _fail(exc) from exc
    finally:
        remote.close()
    table = Table("id", "status", "template", "created")
    for item in page["jobs"]:
        table.add_row(item["id"], item["status"], item.get("template") or "-", item["created_at"])
    Console().print(table)


def job(job_id: str, server: Server = DEFAULT_SERVER) -> None:
    """Print one job as JSON."""
    remote = Remote(server)
    try:
        typer.echo(json.dumps(remote.job(job_id), indent=2))
    except (ApiError, httpx.HTTPError) as exc:
        raise _fail(exc) from exc
    finally:
        remote.close()


def cancel(job_id: str, server: Server = DEFAULT_SERVER) -> None:
    """Cancel a job: a queued one never runs; a running one is interrupted."""
    remote = Remote(server)
    try:
        result = remote.cancel(job_id)
        typer.echo(f"{job_id} {result['status']}")
    except (ApiError, httpx.HTTPError) as exc:
        raise _fail(exc) from exc
    finally:
        remote.close()
