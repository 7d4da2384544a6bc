"""Asset records: uploads and job outputs over content-addressed blobs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from sakuga.store import tables as t
from sakuga.store.db import Database, aware


def _record(row: Any) -> dict[str, Any]:
    record = dict(row)
    record["created_at"] = aware(record["created_at"])
    return record


class AssetStore:
    """The gateway for asset rows; owner is on every query."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, asset: dict[str, Any]) -> None:
        async with self.db.begin() as conn:
            await conn.execute(t.assets.insert().values(**asset))

    async def get(self, asset_id: str, owner: str | None) -> dict[str, Any] | None:
        query = select(t.assets).where(t.assets.c.id == asset_id)
        if owner is not None:
            query = query.where(t.assets.c.owner == owner)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _record(row)

    async def by_hash(self, digest: str, owner: str | None) -> dict[str, Any] | None:
        """The owner's newest asset over this blob."""
        query = select(t.assets).where(t.assets.c.hash == digest)
        if owner is not None:
            query = query.where(t.assets.c.owner == owner)
        query = query.order_by(t.assets.c.created_at.desc()).limit(1)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _record(row)

    async def by_file_path(self, file_path: str, owner: str | None) -> dict[str, Any] | None:
        """The owner's newest uploaded asset named ``file_path`` (API-V2 §10.12)."""
        query = select(t.assets).where(
            t.assets.c.file_path == file_path, t.assets.c.job_id.is_(None)
        )
        if owner is not None:
            query = query.where(t.assets.c.owner == owner)
        query = query.order_by(t.assets.c.created_at.desc()).limit(1)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _record(row)

    async def delete(self, asset_id: str, owner: str | None) -> bool:
        query = delete(t.assets).where(t.assets.c.id == asset_id)
        if owner is not None:
            query = query.where(t.assets.c.owner == owner)
        async with self.db.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)
