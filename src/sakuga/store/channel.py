"""Wake-ups across processes on PostgreSQL: the notifier's keys over LISTEN/NOTIFY.

An API replica's new job wakes the workers of another process at once, a worker's progress
wakes the event streams served by another, and a cancel reaches the worker running the
job without waiting for its heartbeat. One dedicated asyncpg connection listens and sends;
keys published meanwhile go out together in one round trip. When the connection is down
nothing waits on it: the backstop polls still find every change, and it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from types import TracebackType
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from sakuga.notify import Notifier

log = logging.getLogger(__name__)

CHANNEL = "sakuga_wakeups"
CONNECT_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 5.0
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0
# What a lost or unreachable database raises; the channel then retries later.
CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# One round trip carries every key published since the last one.
_SEND = f"SELECT pg_notify('{CHANNEL}', key) FROM unnest($1::text[]) AS key"


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` (SQLAlchemy) as the ``postgresql://…`` asyncpg connects to."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgChannel:
    """``async with PgChannel(url, notifier)``: forwards the notifier's keys both ways."""

    def __init__(self, url: str, notifier: Notifier) -> None:
        self.dsn = asyncpg_dsn(url)
        self.notifier = notifier
        # Our own keys come back too; the token tells them apart.
        self.token = uuid.uuid4().hex[:12]
        self._pending: list[str] = []
        self._queued: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sessions = 0  # connections that got as far as listening
        self._listened = False
        self._session_changed = asyncio.Condition()

    async def __aenter__(self) -> PgChannel:
        self.notifier.forward_to(self.send)
        self._task = asyncio.create_task(self._run(), name="sakuga-pg-channel")
        # Serve with wake-ups on when the database allows; without them polls still work.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self.listening()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.notifier.forward_to(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def listening(self, beyond: int = 0) -> int:
        """Wait until a session numbered above ``beyond`` listens; returns its number."""
        async with self._session_changed:
            await self._session_changed.wait_for(lambda: self._listened and self.sessions > beyond)
            return self.sessions

    def send(self, key: str) -> None:
        """Queue ``key`` for the other processes (duplicates since the last send merge)."""
        if key not in self._queued:
            self._queued.add(key)
            self._pending.append(key)
            self._wake.set()

    async def _run(self) -> None:
        delay = RETRY_MIN_S
        while True:
            try:
                await self._session()
            except CONNECTION_ERRORS as exc:
                if self._listened:  # it worked until now: retry soon
                    delay = RETRY_MIN_S
                self._listened = False
                log.warning("cross-process wake-ups paused (%s); retrying in %g s", exc, delay)
                await asyncio.sleep(delay)  # reconnect backoff; polls cover the gap
                delay = min(delay * 2, RETRY_MAX_S)

    async def _session(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_S)
        # A lost connection wakes the sender, which then gives up this session.
        conn.add_termination_listener(lambda _conn: self._wake.set())
        try:
            await conn.add_listener(CHANNEL, self._received)
            # Keys queued while no one listened are stale: the polls have seen them.
            self._pending, self._queued = [], set()
            self._listened = True
            self.server_pid: int = conn.get_server_pid()
            self.sessions += 1
            async with self._session_changed:
                self._session_changed.notify_all()
            log.info("cross-process wake-ups on (PostgreSQL LISTEN %s)", CHANNEL)
            while True:
                await self._wake.wait()
                self._wake.clear()
                if conn.is_closed():
                    raise ConnectionError("the LISTEN connection was closed")
                keys, self._pending, self._queued = self._pending, [], set()
                if keys:
                    payloads = [f"{self.token} {key}" for key in keys]
                    await conn.execute(_SEND, payloads, timeout=SEND_TIMEOUT_S)
        finally:
            with contextlib.suppress(*CONNECTION_ERRORS):  # already broken
                await asyncio.wait_for(conn.close(), SEND_TIMEOUT_S)

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        token, _, key = payload.partition(" ")
        if token != self.token and key:
            self.notifier.deliver(key)
