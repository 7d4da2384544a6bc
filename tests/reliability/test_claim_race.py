"""Many workers racing for one job get exactly one claim, over many trials, on both stores."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

import pytest

from sakuga.store import NewJob, Store

TRIALS = 100
RACERS = 6


@pytest.mark.timeout(120)
async def test_exactly_one_claim_per_job(db_url: str) -> None:
    async with AsyncExitStack() as stack:
        # One Store (engine + connection pool) per racer: separate connections, as separate
        # worker processes would have.
        stores = [await stack.enter_async_context(Store(db_url)) for _ in range(RACERS)]
        doubles = 0
        for trial in range(TRIALS):
            job = NewJob(
                id=str(uuid.uuid4()),
                owner="race",
                workflow={},
                fingerprint="f",
                eligible_backends=(),
            )
            await stores[0].writer.submit(job)
            claims = await asyncio.gather(
                *(s.leases.claim(f"w{i}-{trial}", "b", lease_s=30) for i, s in enumerate(stores))
            )
            won = [c for c in claims if c is not None]
            doubles += len(won) != 1
            assert len(won) == 1, f"trial {trial}: {len(won)} claims"
            assert won[0][0].id == job.id
        assert doubles == 0


@pytest.mark.timeout(120)
async def test_racing_claims_never_overfill_a_backend_s_slots(db_url: str) -> None:
    # Worker processes share a backend's slots (the claim counts every process's leases):
    # racing for its last slot, exactly one wins, however many jobs wait.
    async with AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(Store(db_url)) for _ in range(RACERS)]
        trials = TRIALS // 4
        for _ in range(trials + RACERS):  # more jobs wait than any trial could take
            await stores[0].writer.submit(
                NewJob(
                    id=str(uuid.uuid4()),
                    owner="race",
                    workflow={},
                    fingerprint="f",
                    eligible_backends=(),
                )
            )
        for trial in range(trials):
            backend = f"http://b{trial}"  # a fresh backend with one free slot per trial
            claims = await asyncio.gather(
                *(
                    s.leases.claim(f"w{i}", backend, lease_s=30, capacity=1, record=True)
                    for i, s in enumerate(stores)
                )
            )
            won = [c for c in claims if c is not None]
            assert len(won) == 1, f"trial {trial}: {len(won)} claims for one slot"
