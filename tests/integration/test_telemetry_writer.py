"""Attempt telemetry on both stores: written on the lease's own attempt, after the outcome;
attempts that end together commit in one transaction."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from sakuga.domain.jobs import JobStatus
from sakuga.store import Store
from sakuga.store.leases import Lease
from tests.integration.test_store import new_job


def figures(free: int) -> dict[str, Any]:
    return {"device": "cpu", "before": {"vram_free": free}, "after": {"vram_free": free - 1}}


async def finished_leases(store: Store, count: int) -> list[Lease]:
    """``count`` jobs claimed, each with its attempt, and finished (the lease released)."""
    leases = []
    for _ in range(count):
        await store.writer.submit(new_job())
        claimed = await store.leases.claim("w1", "http://b", lease_s=30, record=True)
        assert claimed is not None
        assert await store.leases.finish(claimed.lease, JobStatus.SUCCEEDED, run_ms=1)
        leases.append(claimed.lease)
    return leases


async def telemetry_of(store: Store, lease: Lease) -> dict[str, Any] | None:
    job = await store.jobs.get(lease.job_id, None)
    assert job is not None
    return job.attempts[-1].telemetry


async def test_attempts_ending_together_commit_their_telemetry_together(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Store(db_url) as store:
        leases = await finished_leases(store, 5)
        writes = 0
        real_write = store.db.write

        async def counted(work: Any) -> Any:
            nonlocal writes
            writes += 1
            return await real_write(work)

        monkeypatch.setattr(store.db, "write", counted)  # counts units; the store is real
        async with asyncio.timeout(10):
            await asyncio.gather(
                *(store.telemetry.write(lease, figures(100 + n)) for n, lease in enumerate(leases))
            )
        assert writes == 1
        for n, lease in enumerate(leases):
            assert await telemetry_of(store, lease) == figures(100 + n)


async def test_telemetry_lands_only_on_the_attempt_this_worker_recorded(db_url: str) -> None:
    async with Store(db_url) as store:
        (lease,) = await finished_leases(store, 1)
        async with asyncio.timeout(10):
            await store.telemetry.write(replace(lease, worker_id="someone-else"), figures(7))
            assert await telemetry_of(store, lease) is None
            await store.telemetry.write(lease, figures(8))
        assert await telemetry_of(store, lease) == figures(8)
