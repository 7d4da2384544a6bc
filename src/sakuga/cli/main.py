"""The ``sakuga`` command: server, engine, database and client commands."""

from __future__ import annotations

import typer

from sakuga.cli import client, db, demo, engine, keys, serve, worker

app = typer.Typer(
    name="sakuga",
    help="A production job server for ComfyUI. Every option also reads a SAKUGA_* variable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
serve.register(app)
worker.register(app)
demo.register(app)
engine.register(app)
db.register(app)
keys.register(app)
client.register(app)

if __name__ == "__main__":
    app()
