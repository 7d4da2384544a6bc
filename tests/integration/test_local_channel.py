"""Wake-ups across processes on SQLite: two notifiers, each with its own datagram socket
for the same database file, stand for two sakuga processes on one machine. The end-to-end
test (an API process waking a worker process) is in ``test_channel.py``, on both stores."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sakuga.notify import NEW_JOB, Notifier, job_key
from sakuga.store.local_channel import LocalChannel, sqlite_file

DELIVERY_S = 5.0


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[LocalChannel, LocalChannel]]:
    db_file = tmp_path / "sakuga.db"
    async with (
        LocalChannel(db_file, Notifier()) as one,
        LocalChannel(db_file, Notifier()) as two,
    ):
        assert one.listening and two.listening
        yield one, two


async def test_a_key_published_in_one_process_wakes_the_other(
    pair: tuple[LocalChannel, LocalChannel],
) -> None:
    one, two = pair
    for sender, receiver in ((one, two), (two, one)):
        woken = receiver.notifier.subscribe(job_key("j1"))
        sender.notifier.publish(job_key("j1"))
        assert await Notifier.wait_event(woken, DELIVERY_S)
        receiver.notifier.unsubscribe(job_key("j1"), woken)


async def test_many_keys_at_once_all_arrive(pair: tuple[LocalChannel, LocalChannel]) -> None:
    one, two = pair
    keys = [job_key(f"job-{n:05d}-{'x' * 40}") for n in range(2000)]  # several datagrams
    woken = [two.notifier.subscribe(key) for key in keys]
    for key in keys:
        one.notifier.publish(key)
    async with asyncio.timeout(DELIVERY_S):
        for event in woken:
            await event.wait()


async def test_a_process_that_joins_later_hears_the_next_key(tmp_path: Path) -> None:
    db_file = tmp_path / "sakuga.db"
    async with LocalChannel(db_file, Notifier()) as first:
        first.notifier.publish(job_key("before"))  # its flush reads the folder, alone
        flushed = asyncio.get_running_loop().create_future()
        # Callbacks run in order: once this one has run, so has the flush queued before it.
        asyncio.get_running_loop().call_soon(flushed.set_result, None)
        await flushed
        async with LocalChannel(db_file, Notifier()) as later:
            woken = later.notifier.subscribe(NEW_JOB)
            first.notifier.publish(NEW_JOB)
            assert await Notifier.wait_event(woken, DELIVERY_S)


async def test_a_process_does_not_hear_its_own_keys_or_another_databases(
    pair: tuple[LocalChannel, LocalChannel], tmp_path: Path
) -> None:
    one, two = pair
    async with LocalChannel(tmp_path / "other.db", Notifier()) as elsewhere:
        theirs = elsewhere.notifier.subscribe(NEW_JOB)
        own = one.notifier.subscribe(NEW_JOB)
        heard = two.notifier.subscribe(NEW_JOB)
        one.notifier.publish(NEW_JOB)
        assert own.is_set()  # the publish woke its own process directly
        own.clear()
        assert await Notifier.wait_event(heard, DELIVERY_S)
        # One flush sends to every peer at once, so what was sent has arrived by now.
        assert not theirs.is_set() and not own.is_set()


async def test_the_socket_of_a_process_that_died_is_cleared_away(
    pair: tuple[LocalChannel, LocalChannel],
) -> None:
    one, two = pair
    # A process killed before it could clean up leaves its socket file behind.
    dead = one.dir / "dead0000dead0000.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    leftover.bind(str(dead))
    leftover.close()
    assert dead.exists()

    woken = two.notifier.subscribe(NEW_JOB)
    one.notifier.publish(NEW_JOB)
    assert await Notifier.wait_event(woken, DELIVERY_S)  # the live peer still hears it
    assert not dead.exists()


async def test_leaving_removes_the_socket_and_the_last_one_out_its_folder(
    tmp_path: Path,
) -> None:
    first = LocalChannel(tmp_path / "sakuga.db", Notifier())
    second = LocalChannel(tmp_path / "sakuga.db", Notifier())
    async with first:
        async with second:
            assert first.path.exists() and second.path.exists()
        assert not second.path.exists() and first.dir.exists()
    assert not first.path.exists() and not first.dir.exists()


def test_only_a_database_file_gets_a_channel(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite+aiosqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("sqlite://") is None
