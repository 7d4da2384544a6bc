"""``sakuga demo``: start the server on the embedded engine, render one image, show the path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from sakuga.cli.client import console, follow
from sakuga.cli.options import with_settings_options
from sakuga.cli.remote import Remote
from sakuga.settings import Settings

DEMO_PROMPT = "a paper lantern festival over a river at dusk"


def register(app: typer.Typer) -> None:
    app.command()(demo)


@with_settings_options(only={"data_dir", "database_url", "engine_step_s", "backends"})
def demo(
    settings: Settings,
    prompt: Annotated[str, typer.Option(help="What to draw.")] = DEMO_PROMPT,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 20,
    output_dir: Annotated[Path, typer.Option(help="Where to save the image.")] = Path(
        "sakuga-output"
    ),
) -> None:
    """Render one txt2img job end to end with no GPU and print where the image is."""
    if "database_url" not in settings.model_fields_set:
        # Keep the demo's database beside its data folder.
        settings.database_url = f"sqlite+aiosqlite:///{settings.data_dir / 'sakuga.db'}"

    from sakuga.api.app import create_app
    from sakuga.serving import UvicornServer

    async def run() -> list[Path]:
        async with UvicornServer(create_app(settings), port=0) as server:
            console.print(
                f"sakuga is serving on {server.url} with its embedded engine "
                "(a CPU stand-in renderer, not a diffusion model)"
            )
            return await asyncio.to_thread(_render, server.url, prompt, steps, output_dir)

    paths = asyncio.run(run())
    for path in paths:
        typer.echo(f"image saved to {path}")


def _render(url: str, prompt: str, steps: int, output_dir: Path) -> list[Path]:
    remote = Remote(url)
    try:
        job = remote.submit({"template": "txt2img", "params": {"prompt": prompt, "steps": steps}})
        console.print(f"job {job['id']} queued")
        final = follow(remote, job["id"])
        if final["status"] != "succeeded":
            raise typer.Exit(1)
        return [remote.download(o, output_dir).resolve() for o in final["outputs"]]
    finally:
        remote.close()
