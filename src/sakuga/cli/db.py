"""``sakuga db upgrade``: apply the schema migrations."""

from __future__ import annotations

import asyncio

import typer

from sakuga.cli.options import with_settings_options
from sakuga.settings import Settings

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


@db_app.command("upgrade")
@with_settings_options(only={"database_url"})
def upgrade_cmd(settings: Settings) -> None:
    """Bring the database schema to the latest version (also done on every start)."""
    from sakuga.store.db import Database
    from sakuga.store.migrate import upgrade

    async def run() -> None:
        async with Database(settings.database_url) as database:
            await upgrade(database)

    asyncio.run(run())
    typer.echo(f"database at {settings.database_url} is up to date")
