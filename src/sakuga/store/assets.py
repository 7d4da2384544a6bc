"""Asset records: uploads and job outputs over content-addressed blobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, RowMapping

from sakuga.store import tables as t
from sakuga.store.db import Database, aware
from sakuga.store.retention import release_blobs


def _record(row: Any) -> dict[str, Any]:
    record = dict(row)
    record["created_at"] = aware(record["created_at"])
    return record


class AssetStore:
    """The gateway for asset rows; owner is on every query."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, asset: dict[str, Any]) -> None:

        def work(conn: Connection) -> None:
            conn.execute(t.assets.insert().values(**asset))

        await self.db.write(work)

    async def get(self, asset_id: str, owner: str | None) -> dict[str, Any] | None:
        query = select(t.assets).where(t.assets.c.id == asset_id)
        if owner is not None:
            query = query.where(t.assets.c.owner == owner)

        def work(conn: Connection) -> RowMapping | None:
            return conn.execute(query).mappings().first()

        row = await self.db.read(work)
        return None if row is None else _record(row)

    async def by_hash(self, digest: str, owner: str | None) -> dict[str, Any] | None:
        """The owner's newest asset over this blob."""
        query = select(t.assets).where(t.assets.c.hash == digest)
        if owner is not None:
            query = query.where(t.assets.c.owner == owner)
        query = query.order_by(t.assets.c.created_at.desc()).limit(1)

        def work(conn: Connection) -> RowMapping | None:
            return conn.execute(query).mappings().first()

        row = await self.db.read(work)
        return None if row is None else _record(row)

    async def by_file_path(self, file_path: str, owner: str | None) -> dict[str, Any] | None:
        """The owner's newest uploaded asset named ``file_path`` (API-V2 §10.12)."""
        query = select(t.assets).where(
            t.assets.c.file_path == file_path, t.assets.c.job_id.is_(None)
        )
        if owner is not None:
            query = query.where(t.assets.c.owner == owner)
        query = query.order_by(t.assets.c.created_at.desc()).limit(1)

        def work(conn: Connection) -> RowMapping | None:
            return conn.execute(query).mappings().first()

        row = await self.db.read(work)
        return None if row is None else _record(row)

    async def delete(self, asset_id: str, owner: str | None) -> bool:
        """Delete the asset row; its blob is released (the retention sweep removes it once
        no other asset uses it)."""
        query = delete(t.assets).where(t.assets.c.id == asset_id).returning(t.assets.c.hash)
        if owner is not None:
            query = query.where(t.assets.c.owner == owner)

        def work(conn: Connection) -> bool:
            digest = conn.scalar(query)
            if digest is None:
                return False
            release_blobs(conn, [digest], datetime.now(UTC))
            return True

        return await self.db.write(work)
