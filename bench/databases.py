"""Fresh databases for each benchmark server: a SQLite file, or a new PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ADMIN_TIMEOUT_S = 10.0


def admin_dsn(url: str) -> str:
    """The asyncpg form of ``url``; raises ``ValueError`` unless it is PostgreSQL on loopback."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"--postgres wants a postgresql:// URL, got {url!r}")
    if (parsed.host or "127.0.0.1") not in LOOPBACK:
        raise ValueError(f"benchmarks only touch 127.0.0.1; got host {parsed.host!r}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


async def server_version(url: str) -> str:
    """``SHOW server_version`` of the PostgreSQL server at ``url``."""
    conn = await asyncpg.connect(admin_dsn(url), timeout=ADMIN_TIMEOUT_S)
    try:
        return str(await conn.fetchval("SHOW server_version", timeout=ADMIN_TIMEOUT_S))
    finally:
        await conn.close(timeout=ADMIN_TIMEOUT_S)


class Databases:
    """Empty databases: SQLite files under ``root``, or PostgreSQL ones created and dropped."""

    def __init__(self, root: Path, postgres_url: str | None = None) -> None:
        self.root = root
        self.postgres_url = postgres_url

    @property
    def kind(self) -> str:
        return "postgresql" if self.postgres_url else "sqlite"

    @asynccontextmanager
    async def fresh(self, label: str) -> AsyncIterator[str]:
        """A SQLAlchemy URL of a new, empty database for one scenario."""
        name = f"sakuga_bench_{label}_{uuid.uuid4().hex[:8]}"
        if self.postgres_url is None:
            path = self.root / name / "sakuga.db"
            path.parent.mkdir(parents=True)
            yield f"sqlite+aiosqlite:///{path}"
            return
        await self._admin(f'CREATE DATABASE "{name}"')
        try:
            base = make_url(self.postgres_url).set(drivername="postgresql+asyncpg", database=name)
            yield base.render_as_string(hide_password=False)
        finally:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, sql: str) -> None:
        assert self.postgres_url is not None
        conn = await asyncpg.connect(admin_dsn(self.postgres_url), timeout=ADMIN_TIMEOUT_S)
        try:
            await conn.execute(sql, timeout=ADMIN_TIMEOUT_S)
        finally:
            await conn.close(timeout=ADMIN_TIMEOUT_S)
