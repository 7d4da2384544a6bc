"""Wake-ups across processes on PostgreSQL: two notifiers, each with its own LISTEN
connection to the same database, stand for two sakuga processes. The end-to-end test runs
on both stores (SQLite's channel: ``test_local_channel.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest

from sakuga.engine.server import EngineServer
from sakuga.notify import NEW_JOB, Notifier, job_key
from sakuga.service import Service
from sakuga.store.channel import CHANNEL, PgChannel, asyncpg_dsn
from tests.fixtures import api as api_fixtures
from tests.fixtures.api import StartApi
from tests.integration.jobs_support import finish, submit

DELIVERY_S = 5.0


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[tuple[PgChannel, PgChannel]]:
    async with PgChannel(pg_url, Notifier()) as one, PgChannel(pg_url, Notifier()) as two:
        assert one.sessions == 1 and two.sessions == 1  # entering waits for LISTEN
        yield one, two


async def test_a_key_published_in_one_process_wakes_the_other(
    pair: tuple[PgChannel, PgChannel],
) -> None:
    one, two = pair
    for sender, receiver in ((one, two), (two, one)):
        woken = receiver.notifier.subscribe(job_key("j1"))
        sender.notifier.publish(job_key("j1"))
        assert await Notifier.wait_event(woken, DELIVERY_S)
        receiver.notifier.unsubscribe(job_key("j1"), woken)


async def test_a_process_ignores_its_own_keys_coming_back(
    pair: tuple[PgChannel, PgChannel],
) -> None:
    one, _ = pair
    woken = one.notifier.subscribe(NEW_JOB)
    one._received(None, 0, CHANNEL, f"{one.token} {NEW_JOB}")
    assert not woken.is_set()  # its publish already woke it locally
    one._received(None, 0, CHANNEL, f"someone-else {NEW_JOB}")
    assert woken.is_set()


async def test_the_channel_listens_again_after_its_connection_is_killed(
    pair: tuple[PgChannel, PgChannel], pg_url: str
) -> None:
    one, two = pair
    admin = await asyncpg.connect(asyncpg_dsn(pg_url), timeout=DELIVERY_S)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", two.server_pid)
    finally:
        await admin.close()
    async with asyncio.timeout(15):
        await two.listening(beyond=1)
    woken = two.notifier.subscribe(NEW_JOB)
    one.notifier.publish(NEW_JOB)
    assert await Notifier.wait_event(woken, DELIVERY_S)


async def test_a_job_from_an_api_process_wakes_a_worker_process_at_once(
    start_api: StartApi, db_url: str, engine: EngineServer, tmp_path: Path
) -> None:
    # The worker "process" (its own Service, notifier and channel: LISTEN on PostgreSQL,
    # a datagram socket on SQLite) polls only once a minute: the job can only finish this
    # soon if the API's NEW_JOB reached it.
    api = await start_api(database_url=db_url, workers=False, backends=[engine.url])
    worker_settings = api_fixtures.test_settings(
        tmp_path, db_url, backends=[engine.url], poll_s=60.0
    )
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(Service(worker_settings))
        created = await submit(api.http, {"template": "blank", "params": {}})
        async with asyncio.timeout(20):
            final = await finish(api.http, created["id"])
    assert final["status"] == "succeeded"
