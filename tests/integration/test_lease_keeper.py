"""The lease keeper on both stores: it extends the lease, sees a cancel request, and stops
when another worker owns the job."""

from __future__ import annotations

import asyncio

from sakuga.notify import Notifier, cancel_key
from sakuga.store import Store
from sakuga.store.leases import Lease
from sakuga.worker.lease_keeper import keep_lease
from tests.integration.test_store import new_job


async def _claimed(store: Store) -> Lease:
    await store.writer.submit(new_job())
    claimed = await store.leases.claim("w1", "http://b", lease_s=30)
    assert claimed is not None
    assert await store.leases.mark_running(claimed[1])
    return claimed[1]


async def test_a_cancel_published_in_this_process_is_seen_at_once(db_url: str) -> None:
    async with Store(db_url) as store:
        lease = await _claimed(store)
        notifier, seen = Notifier(), asyncio.Queue[None]()

        async def on_cancel() -> None:
            seen.put_nowait(None)

        # An hour between heartbeats: only the wake-up can bring the cancel in time.
        keeper = asyncio.create_task(
            keep_lease(
                store.leases, notifier, lease, heartbeat_s=3600, lease_s=30, on_cancel=on_cancel
            )
        )
        try:
            await store.jobs.request_cancel(lease.job_id, None)
            notifier.publish(cancel_key(lease.job_id))
            async with asyncio.timeout(5):
                await seen.get()
            assert not keeper.done()  # canceling is not losing the lease
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)


async def test_heartbeats_extend_the_lease_and_carry_a_cancel_made_elsewhere(
    db_url: str,
) -> None:
    async with Store(db_url) as store:
        lease = await _claimed(store)
        seen = asyncio.Event()

        async def on_cancel() -> None:
            seen.set()

        # Canceled by another process: no wake-up reaches this one; the heartbeat reads it.
        await store.jobs.request_cancel(lease.job_id, None)
        keeper = asyncio.create_task(
            keep_lease(
                store.leases, Notifier(), lease, heartbeat_s=0.05, lease_s=30, on_cancel=on_cancel
            )
        )
        try:
            async with asyncio.timeout(5):
                await seen.wait()
            # The lease still belongs to this worker: another worker cannot take the job.
            assert await store.leases.claim("w2", "http://b", lease_s=30) is None
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)


async def test_the_keeper_returns_when_another_worker_owns_the_job(db_url: str) -> None:
    async with Store(db_url) as store:
        await store.writer.submit(new_job())
        first = await store.leases.claim("w1", "http://b", lease_s=-1)  # expired at once
        assert first is not None
        taken = await store.leases.claim("w2", "http://b", lease_s=30)
        assert taken is not None and taken[0].id == first[0].id

        async def on_cancel() -> None:
            raise AssertionError("no cancel was requested")

        async with asyncio.timeout(5):
            await keep_lease(
                store.leases,
                Notifier(),
                first[1],
                heartbeat_s=0.01,
                lease_s=30,
                on_cancel=on_cancel,
            )
        assert await store.leases.heartbeat(taken[1], 30) is False  # w2's lease stands
