"""API keys: only the SHA-256 of a key is stored; the key itself is shown once, at creation.

A key looks like ``sk_<8-char prefix>_<43 random url-safe chars>``. The prefix is kept in
clear so ``sakuga keys list`` can tell keys apart; verification hashes the presented key and
looks the hash up, so no secret is ever compared byte by byte in Python.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, RowMapping

from sakuga.domain.scopes import parse_scopes
from sakuga.store import tables as t
from sakuga.store.db import Database, aware

KEY_PREFIX = "sk_"
PREFIX_CHARS = 8
SECRET_BYTES = 32  # token_urlsafe(32) gives 43 characters
VERIFY_CACHE_S = 2.0  # a revoked key stops working within this many seconds


@dataclass(frozen=True)
class ApiKey:
    """One stored key, without its secret."""

    id: str
    prefix: str
    name: str | None
    owner: str
    scopes: frozenset[str]
    webhook_url: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def hash_key(secret: str) -> str:
    """The stored form of a key: SHA-256 hex of the whole key string."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_secret() -> tuple[str, str]:
    prefix = secrets.token_urlsafe(PREFIX_CHARS)[:PREFIX_CHARS].replace("_", "x")
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def _record(row: Any) -> ApiKey:
    created = aware(row["created_at"])
    assert created is not None
    return ApiKey(
        id=row["id"],
        prefix=row["prefix"],
        name=row["name"],
        owner=row["owner"],
        scopes=frozenset(row["scopes"] or ()),
        webhook_url=row["webhook_url"],
        created_at=created,
        revoked_at=aware(row["revoked_at"]),
    )


class KeyStore:
    """The gateway for ``api_keys`` rows.

    ``verify`` keeps a short in-memory cache of hashes it has checked (hits and misses) so a
    busy client does not cost a query per request; entries live ``VERIFY_CACHE_S`` seconds,
    which bounds how long a key revoked by another process keeps working.
    """

    def __init__(self, db: Database, *, cache_s: float = VERIFY_CACHE_S) -> None:
        self.db = db
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def create(
        self,
        owner: str | None,
        scopes: str | Iterable[str],
        name: str | None = None,
        webhook_url: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (never stored). ``owner=None`` makes a new tenant."""
        scope_set = parse_scopes(scopes)
        prefix, secret = _new_secret()
        key_id = str(uuid.uuid4())
        row = {
            "id": key_id,
            "key_hash": hash_key(secret),
            "prefix": prefix,
            "name": name,
            "owner": owner or f"key-{key_id}",
            "scopes": sorted(scope_set),
            "webhook_url": webhook_url,
            "created_at": datetime.now(UTC),
            "revoked_at": None,
        }

        def work(conn: Connection) -> None:
            conn.execute(t.api_keys.insert().values(**row))

        await self.db.write(work)
        return _record(row), secret

    async def verify(self, secret: str) -> ApiKey | None:
        """The live (not revoked) key for this secret, or None."""
        digest = hash_key(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        query = select(t.api_keys).where(t.api_keys.c.key_hash == digest)

        def work(conn: Connection) -> RowMapping | None:
            return conn.execute(query).mappings().first()

        row = await self.db.read(work)
        key = None if row is None else _record(row)
        if key is not None and key.revoked:
            key = None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, key)
        return key

    async def list(self, owner: str | None = None) -> list[ApiKey]:
        """Every key (or one owner's), oldest first, revoked ones included."""
        query = select(t.api_keys).order_by(t.api_keys.c.created_at, t.api_keys.c.id)
        if owner is not None:
            query = query.where(t.api_keys.c.owner == owner)

        def work(conn: Connection) -> Sequence[RowMapping]:
            return conn.execute(query).mappings().all()

        rows = await self.db.read(work)
        return [_record(row) for row in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        query = select(t.api_keys).where(t.api_keys.c.id == key_id)

        def work(conn: Connection) -> RowMapping | None:
            return conn.execute(query).mappings().first()

        row = await self.db.read(work)
        return None if row is None else _record(row)

    async def revoke(self, key_id: str) -> bool:
        """Mark a key revoked; False if no live key has this id (unknown or already revoked)."""
        query = (
            update(t.api_keys)
            .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )

        def work(conn: Connection) -> bool:
            return bool(conn.execute(query).rowcount)

        revoked = await self.db.write(work)
        self._cache.clear()
        return revoked
