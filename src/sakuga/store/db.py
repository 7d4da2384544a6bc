"""The database connection: engine from the URL, units of work, SQLite pragmas, the DB clock.

Every store method is one unit of work: a plain function of a synchronous ``Connection``
run by ``Database.read`` or ``Database.write`` in one transaction. On SQLite the whole
function runs in one hop to a database thread (pysqlite), instead of one hop per
statement through aiosqlite; on PostgreSQL it runs on asyncpg through SQLAlchemy's
``run_sync``, so no thread is involved.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from sqlalchemy import create_engine, event, literal_column
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Writes run on one thread; a few more let reads overlap a write (WAL).
SQLITE_READERS = 3
SQLITE_THREADS = SQLITE_READERS + 1

T = TypeVar("T")
Work = Callable[[Connection], T]


def aware(value: datetime | None) -> datetime | None:
    """Give a naive database datetime its UTC zone (SQLite drops it; the SDK rejects naive)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Runner(Protocol):
    """Runs one unit of work in one transaction on some engine."""

    async def run(self, work: Work[T], *, write: bool) -> T: ...

    async def dispose(self) -> None: ...


class ThreadRunner:
    """SQLite: the whole unit of work in one call to a database thread.

    Writes run on one thread, in the order they were asked for: SQLite has one writer at a
    time, and a second writer of this process would wait in SQLite's busy handler, which
    sleeps 1 to 100 ms between looks. Reads run on a few threads beside it (WAL: readers
    never wait for the writer). Writers of other processes still meet the busy timeout.
    Each thread keeps its own connection open between units of work (no pool checkout,
    and BEGIN goes straight to pysqlite): at a few statements per unit, that overhead
    was a fifth of the thread's time.
    """

    def __init__(self, engine: Engine, readers: int = SQLITE_READERS) -> None:
        self.engine = engine
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sakuga-db-write")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sakuga-db-read")
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._lock = threading.Lock()

    async def run(self, work: Work[T], *, write: bool) -> T:
        loop = asyncio.get_running_loop()
        executor = self._writer if write else self._readers
        return await loop.run_in_executor(executor, self._run, work, write)

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            stale, conn = conn, self.engine.connect()
            self._local.conn = conn
            with self._lock:
                if stale is not None and stale in self._opened:
                    self._opened.remove(stale)
                self._opened.append(conn)
            if stale is not None:
                stale.close()
        return conn

    def _run(self, work: Work[T], write: bool) -> T:
        conn = self._connection()
        raw: Any = conn.connection.driver_connection
        # IMMEDIATE takes the write lock up front so writers queue (busy timeout)
        # instead of failing on upgrade; a read gets one snapshot for all its queries.
        raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = work(conn)
            # SQLAlchemy's transaction (if the work ran a statement), then the BEGIN above.
            conn.commit()
            if raw.in_transaction:
                raw.commit()
        except BaseException:
            _roll_back(conn, raw)
            raise
        return result

    async def dispose(self) -> None:
        # Work already handed to a thread ends within the busy timeout; wait for it.
        for executor in (self._writer, self._readers):
            await asyncio.to_thread(executor.shutdown, True)
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self.engine.dispose()


def _roll_back(conn: Connection, raw: Any) -> None:
    """Roll the unit back; a connection that cannot end its transaction is not reused."""
    try:
        conn.rollback()
        if raw.in_transaction:
            raw.rollback()
    except (SQLAlchemyError, sqlite3.Error):
        log.warning("could not roll back; the database thread opens a new connection")
        conn.invalidate()


class AsyncRunner:
    """PostgreSQL: the unit of work on asyncpg via ``run_sync`` (no thread hops)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, work: Work[T], *, write: bool) -> T:
        async with self.engine.connect() as conn:
            await conn.begin()
            try:
                result = await conn.run_sync(work)
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()
            return result

    async def dispose(self) -> None:
        await self.engine.dispose()


class Database:
    """Owns the engine for one URL; ``async with Database(url) as db``."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.runner: Runner
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.runner = ThreadRunner(sqlite_engine(url))
        else:
            engine = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                connect_args={"timeout": 10, "command_timeout": 30},
            )
            self.runner = AsyncRunner(engine)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    async def dispose(self) -> None:
        """Close every connection (and, on SQLite, the database threads)."""
        await self.runner.dispose()

    async def read(self, work: Work[T]) -> T:
        """Run ``work(conn)`` as one read-only transaction."""
        return await self.runner.run(work, write=False)

    async def write(self, work: Work[T]) -> T:
        """Run ``work(conn)`` as one transaction; it commits unless ``work`` raises."""
        return await self.runner.run(work, write=True)

    def now_epoch(self) -> ColumnElement[float]:
        """The database clock as epoch seconds, for leases."""
        if self.is_sqlite:
            return literal_column("((julianday('now') - 2440587.5) * 86400.0)")
        return literal_column("extract(epoch from clock_timestamp())::float8")


def sqlite_engine(url: str) -> Engine:
    """A synchronous pysqlite engine for a ``sqlite[+driver]:///path`` URL."""
    parsed = make_url(url).set(drivername="sqlite")
    engine = create_engine(
        parsed,
        pool_size=SQLITE_THREADS,
        max_overflow=SQLITE_THREADS,
        # Each unit of work ends its own transaction, so rollback-on-return does nothing.
        pool_reset_on_return=None,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling would defeat BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()
