"""Alembic's migrations produce exactly the schema the code's tables describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from sakuga.store.db import Database
from sakuga.store.migrate import upgrade
from sakuga.store.tables import metadata


def _diff(sync_conn: Connection) -> list[object]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrations_match_the_models(db_url: str) -> None:
    async with Database(db_url) as db:
        await upgrade(db)  # the PostgreSQL clone is already migrated: this must be a no-op
        assert await db.read(_diff) == []


async def test_upgrade_is_idempotent(sqlite_url: str) -> None:
    async with Database(sqlite_url) as db:
        await upgrade(db)
        await upgrade(db)
        assert await db.read(_diff) == []
