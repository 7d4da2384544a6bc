"""``sakuga keys create|list|revoke``: API keys, straight in the database.

The key is printed once, on stdout, at creation; only its SHA-256 is stored, so it can never
be shown again (revoke it and create another if it is lost).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from sakuga.cli.options import with_settings_options
from sakuga.domain.scopes import SCOPES, parse_scopes
from sakuga.domain.webhooks import parse_webhook_url
from sakuga.errors import SakugaError
from sakuga.settings import Settings

if TYPE_CHECKING:
    from sakuga.store.keys import ApiKey, KeyStore

T = TypeVar("T")

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _with_keys(settings: Settings, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    # The store loads only when a keys command runs, so other commands start fast.
    from sakuga.store.db import Database
    from sakuga.store.keys import KeyStore
    from sakuga.store.migrate import upgrade

    async def run() -> T:
        async with Database(settings.database_url) as database:
            await upgrade(database)  # a fresh database gets its tables (also done on start)
            return await work(KeyStore(database))

    return asyncio.run(run())


@keys_app.command("create")
@with_settings_options(only={"database_url"})
def create(
    settings: Settings,
    scope: Annotated[
        str,
        typer.Option("--scope", help=f"Comma-separated scopes from: {', '.join(SCOPES)}."),
    ] = "read,submit",
    name: Annotated[str | None, typer.Option("--name", help="A label for listings.")] = None,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="Tenant to share with other keys; default: a new tenant of its own.",
        ),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option("--webhook-url", help="Default webhook for jobs submitted with this key."),
    ] = None,
) -> None:
    """Create a key and print it (stdout) once; it cannot be shown again."""
    try:
        scopes = parse_scopes(scope)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from exc
    if webhook_url is not None:
        try:
            parse_webhook_url(webhook_url)
        except SakugaError as exc:
            raise typer.BadParameter(exc.message, param_hint="--webhook-url") from exc
    if owner is not None and not 1 <= len(owner) <= 64:
        raise typer.BadParameter(f"{owner!r} must be 1 to 64 characters", param_hint="--owner")

    async def work(keys: KeyStore) -> tuple[ApiKey, str]:
        return await keys.create(owner, scopes, name=name, webhook_url=webhook_url)

    record, secret = _with_keys(settings, work)
    typer.echo(secret)
    typer.echo(
        f"created key {record.id} (sk_{record.prefix}…, owner {record.owner}, scopes "
        f"{','.join(sorted(record.scopes))}); it cannot be shown again, store it now",
        err=True,
    )


@keys_app.command("list")
@with_settings_options(only={"database_url"})
def list_keys(
    settings: Settings,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this tenant's keys.")] = None,
) -> None:
    """List keys (never their secrets): id, prefix, scopes, owner, name, status."""

    async def work(keys: KeyStore) -> list[ApiKey]:
        return await keys.list(owner)

    found = _with_keys(settings, work)
    if not found:
        typer.echo("no API keys", err=True)
        return
    typer.echo("id\tprefix\tscopes\towner\tname\tcreated\tstatus")
    for key in found:
        status = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        typer.echo(
            f"{key.id}\tsk_{key.prefix}\t{','.join(sorted(key.scopes))}\t{key.owner}\t"
            f"{key.name or '-'}\t{key.created_at:%Y-%m-%d %H:%M}\t{status}"
        )


@keys_app.command("revoke")
@with_settings_options(only={"database_url"})
def revoke(
    settings: Settings,
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key id from 'keys list'.")],
) -> None:
    """Revoke a key; servers refuse it within seconds."""

    async def work(keys: KeyStore) -> bool:
        return await keys.revoke(key_id)

    if not _with_keys(settings, work):
        typer.echo(f"error: no active key with id {key_id!r}; see 'sakuga keys list'", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
