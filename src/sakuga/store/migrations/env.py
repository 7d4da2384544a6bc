"""Alembic environment: runs on the connection sakuga hands over (see sakuga.store.migrate)."""

from __future__ import annotations

from alembic import context

from sakuga.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `sakuga db upgrade` (sakuga.store.migrate)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
