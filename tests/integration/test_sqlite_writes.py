"""SQLite: one process's writes queue on its writer thread, in order, instead of meeting
SQLite's busy timeout; reads go on while a write holds the lock (WAL)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from sakuga.store import db as store_db
from sakuga.store.db import Database

HOLD_S = 0.15  # each write holds SQLite's write lock this long
WRITES = 5


async def test_writes_of_one_process_queue_in_order_past_the_busy_timeout(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A busy timeout shorter than the queue of writes: writers that met it would fail.
    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    async with Database(sqlite_url) as db:
        await db.write(lambda conn: conn.execute(text("CREATE TABLE log (n INTEGER)")))

        def slow_write(n: int) -> Callable[[Connection], int]:
            def work(conn: Connection) -> int:
                conn.execute(text("INSERT INTO log (n) VALUES (:n)"), {"n": n})
                time.sleep(HOLD_S)  # the work of a long unit, in its database thread
                return n

            return work

        async with asyncio.timeout(10):
            done = await asyncio.gather(*(db.write(slow_write(n)) for n in range(WRITES)))
        assert done == list(range(WRITES))
        rows = await db.read(lambda conn: conn.execute(text("SELECT n FROM log")).all())
        assert [n for (n,) in rows] == list(range(WRITES))  # committed in the order asked


async def test_a_read_does_not_wait_for_a_write_in_progress(sqlite_url: str) -> None:
    async with Database(sqlite_url) as db:
        await db.write(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER)")))
        inside, release = threading.Event(), threading.Event()

        def blocking_write(conn: Connection) -> None:
            conn.execute(text("INSERT INTO t (n) VALUES (1)"))
            inside.set()
            release.wait(10)  # holds the write lock until the read below has answered

        writing = asyncio.create_task(db.write(blocking_write))
        try:
            async with asyncio.timeout(10):
                await asyncio.to_thread(inside.wait, 10)
                count = await db.read(lambda conn: conn.scalar(text("SELECT count(*) FROM t")))
            assert count == 0  # the write has not committed: the read saw the snapshot before
        finally:
            release.set()
            await writing
        assert await db.read(lambda conn: conn.scalar(text("SELECT count(*) FROM t"))) == 1
