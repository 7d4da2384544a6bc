"""The store on both SQLite and PostgreSQL: create, claim with a lease, finish, cancel."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Connection

from sakuga.domain.jobs import JobStatus
from sakuga.errors import IdempotencyKeyReuse, QueueFull
from sakuga.store import NewJob, Store
from sakuga.store import tables as t
from sakuga.store.jobs import Placement

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {}}}


def new_job(**kw: object) -> NewJob:
    fields: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "owner": "local",
        "workflow": WORKFLOW,
        "fingerprint": "f",
        "eligible_backends": (),
    }
    fields.update(kw)
    return NewJob(**fields)  # type: ignore[arg-type]


async def test_submitted_job_is_queued_with_position(db_url: str) -> None:
    async with Store(db_url) as store:
        first, second = new_job(), new_job()
        await store.writer.submit(first)
        await store.writer.submit(second)
        detail = await store.jobs.detail(second.id)
        assert detail is not None and detail.job.status is JobStatus.QUEUED
        assert detail.job.created_at.tzinfo is not None
        assert detail.queue_position == 2


async def test_concurrent_submissions_commit_in_batches(db_url: str) -> None:
    async with Store(db_url) as store:
        batch = [new_job() for _ in range(50)]
        await asyncio.gather(*(store.writer.submit(n) for n in batch))
        listed = await store.jobs.page(None, limit=100)
        assert {j.id for j in listed} == {n.id for n in batch}


async def test_queued_cap_holds_for_a_concurrent_burst(db_url: str) -> None:
    async with Store(db_url) as store:
        burst = [new_job(max_queued=5) for _ in range(20)] + [new_job(owner="bob", max_queued=5)]
        results = await asyncio.gather(
            *(store.writer.submit(n) for n in burst), return_exceptions=True
        )
        placed = [r for r in results if isinstance(r, Placement)]
        refused = [r for r in results if isinstance(r, QueueFull)]
        assert len(placed) == 6 and len(refused) == 15  # 5 of local's, bob's one
        assert refused[0].details == {"queued": 5, "max_queued": 5}
        assert len(await store.jobs.page("local", limit=100, status=JobStatus.QUEUED)) == 5
        positions = sorted(p.queue_position for p in placed)
        assert positions == [1, 2, 3, 4, 5, 6]


async def test_idempotency_key_is_single_use(db_url: str) -> None:
    async with Store(db_url) as store:
        first = new_job(idempotency_key="k1")
        await store.writer.submit(first)
        others = [new_job(idempotency_key="k1"), new_job(idempotency_key="k2")]
        results = await asyncio.gather(
            *(store.writer.submit(n) for n in others), return_exceptions=True
        )
        assert isinstance(results[0], IdempotencyKeyReuse)
        assert results[0].details == {"job_id": first.id}
        assert isinstance(results[1], Placement)  # where the new job stands in the queue
        assert results[1].queue_position == 2


async def test_claim_is_exclusive_and_lease_guards_writes(db_url: str) -> None:
    async with Store(db_url) as store:
        job = new_job()
        await store.writer.submit(job)
        claims = await asyncio.gather(
            *(store.leases.claim(f"w{i}", "http://b", lease_s=30) for i in range(5))
        )
        won = [c for c in claims if c is not None]
        assert len(won) == 1
        claimed, lease, _ = won[0]
        assert claimed.id == job.id and lease.attempt == 1
        assert await store.leases.start_attempt(
            lease, backend="http://b", prompt_id="p", client_id="c"
        )
        assert await store.leases.mark_running(lease)
        stale = type(lease)(lease.job_id, "intruder", lease.attempt)
        assert not await store.leases.finish(stale, JobStatus.SUCCEEDED)
        assert await store.leases.finish(lease, JobStatus.SUCCEEDED, run_ms=10)
        done = await store.jobs.get(job.id)
        assert done is not None and done.status is JobStatus.SUCCEEDED
        assert [a.prompt_id for a in done.attempts] == ["p"]


async def test_a_claim_can_record_the_attempt_in_its_transaction(db_url: str) -> None:
    async with Store(db_url) as store:
        job = new_job()
        await store.writer.submit(job)
        claimed = await store.leases.claim("w1", "http://b", lease_s=-1, record=True)
        assert claimed is not None and claimed[1].prompt is not None
        prompt_id, client_id = claimed[1].prompt
        recorded = await store.jobs.get(job.id)
        assert recorded is not None and recorded.backend == "http://b"
        assert [(a.prompt_id, a.client_id) for a in recorded.attempts] == [(prompt_id, client_id)]
        # The first worker's lease expired with its attempt unfinished: the successor gets
        # no new attempt from its claim, so it can re-attach to that prompt.
        again = await store.leases.claim("w2", "http://b", lease_s=30, record=True)
        assert again is not None and again[1].prompt is None
        assert [a.prompt_id for a in again[0].attempts] == [prompt_id]


async def test_a_backend_s_slots_are_shared_by_every_worker_process(db_url: str) -> None:
    # Two stores on one database stand for two worker processes sharing backend b.
    async with Store(db_url) as one, Store(db_url) as two:
        for _ in range(3):
            await one.writer.submit(new_job())
        assert await one.leases.claim("w1", "http://b", 30, capacity=2, record=True)
        assert await two.leases.claim("w2", "http://b", 30, capacity=2, record=True)
        # Both slots are leased, one by each process: a third claim waits for one to free.
        assert await two.leases.claim("w2", "http://b", 30, capacity=2, record=True) is None
        assert await one.leases.claim("w1", "http://other", 30, capacity=2) is not None


async def test_a_claim_says_whether_more_jobs_wait_for_the_backend(db_url: str) -> None:
    # ``more`` spares the dispatcher a claim that would find the queue empty; a backend
    # whose slots this claim filled still has work waiting for its next free slot.
    async with Store(db_url) as store:
        for _ in range(3):
            await store.writer.submit(new_job())
        first = await store.leases.claim("w1", "http://b", 30, capacity=1, record=True)
        assert first is not None and first.more
        assert await store.leases.claim("w1", "http://b", 30, capacity=1, record=True) is None
        second = await store.leases.claim("w1", "http://b", 30, capacity=3, record=True)
        assert second is not None and second.more
        third = await store.leases.claim("w1", "http://b", 30, capacity=3, record=True)
        assert third is not None and not third.more


async def test_expired_lease_is_taken_over(db_url: str) -> None:
    async with Store(db_url) as store:
        job = new_job()
        await store.writer.submit(job)
        first = await store.leases.claim("w1", "http://b", lease_s=-1)
        assert first is not None
        second = await store.leases.claim("w2", "http://b", lease_s=30)
        assert second is not None and second[1].attempt == 2
        assert await store.leases.heartbeat(first[1], 30) is None
        assert await store.leases.heartbeat(second[1], 30) is False


async def test_cancel_queued_job_never_claimed(db_url: str) -> None:
    async with Store(db_url) as store:
        job = new_job()
        await store.writer.submit(job)
        canceled = await store.jobs.request_cancel(job.id, "local")
        assert canceled is not None and canceled.job.status is JobStatus.CANCELED
        assert await store.leases.claim("w1", "http://b", lease_s=30) is None


@pytest.mark.parametrize("backend, claimable", [("http://a", True), ("http://z", False)])
async def test_claim_honours_eligible_backends(db_url: str, backend: str, claimable: bool) -> None:
    async with Store(db_url) as store:
        await store.writer.submit(new_job(eligible_backends=("http://a", "http://b")))
        assert (await store.leases.claim("w", backend, lease_s=30) is not None) is claimable


async def test_idempotency_key_is_free_again_after_24_hours(db_url: str) -> None:
    async with Store(db_url) as store:
        old = new_job(idempotency_key="daily")
        await store.writer.submit(old)

        def age(conn: Connection) -> None:
            conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == old.id)
                .values(created_at=t.jobs.c.created_at - timedelta(hours=25))
            )

        await store.db.write(age)
        fresh = new_job(idempotency_key="daily")
        await store.writer.submit(fresh)
        assert (await store.jobs.get(fresh.id)) is not None
        again = new_job(idempotency_key="daily")
        with pytest.raises(IdempotencyKeyReuse):
            await store.writer.submit(again)


async def test_units_of_work_that_run_nothing_or_fail_leave_no_transaction_open(
    db_url: str,
) -> None:
    # SQLite's database threads keep their connection between units of work: a unit that
    # ran no statement, or raised, must still end its transaction there.
    class Boom(Exception):
        pass

    def fail(conn: Connection) -> None:
        conn.execute(update(t.jobs).values(status="failed"))
        raise Boom

    async with Store(db_url) as store:
        job = new_job()
        await store.writer.submit(job)
        for _ in range(3):  # nine units on SQLite's four threads: each connection is reused
            assert await store.db.write(lambda conn: None) is None
            assert await store.db.read(lambda conn: None) is None
            with pytest.raises(Boom):
                await store.db.write(fail)
        detail = await store.jobs.detail(job.id)
        assert detail is not None and detail.job.status is JobStatus.QUEUED
        assert await store.leases.claim("w1", "http://b", lease_s=30) is not None


async def test_a_failed_attempt_of_a_job_being_canceled_is_not_queued_again(db_url: str) -> None:
    # canceling may only end: a transient failure that races a cancel request must not put
    # the job back in the queue (the worker records the cancel instead).
    async with Store(db_url) as store:
        canceled, retried = new_job(), new_job()
        leases = []
        for job in (canceled, retried):
            await store.writer.submit(job)
            claimed = await store.leases.claim("w1", "http://b", lease_s=30, record=True)
            assert claimed is not None and claimed.job.id == job.id
            assert await store.leases.mark_running(claimed.lease)
            leases.append(claimed.lease)
        assert await store.jobs.request_cancel(canceled.id, "local") is not None
        error = {"code": "backend_unreachable", "message": "gone"}
        again = {"error": error, "delay_s": 0.0, "strike": False, "progress": None}

        assert await store.leases.reschedule(leases[0], **again) == "canceling"
        assert await store.leases.reschedule(leases[1], **again) == "queued"
        assert await store.leases.reschedule(leases[1], **again) == "lost"
        for job, status in ((canceled, JobStatus.CANCELING), (retried, JobStatus.QUEUED)):
            stored = await store.jobs.get(job.id)
            assert stored is not None and stored.status is status


async def test_outputs_given_with_the_outcome_commit_with_it_or_not_at_all(db_url: str) -> None:
    async with Store(db_url) as store:
        job = new_job()
        await store.writer.submit(job)
        claimed = await store.leases.claim("w1", "http://b", lease_s=30, record=True)
        assert claimed is not None
        row = {
            "id": str(uuid.uuid4()),
            "owner": "local",
            "hash": "0" * 64,
            "size_bytes": 1,
            "content_type": "image/png",
            "file_path": "out.png",
            "tags": ["output"],
            "job_id": job.id,
            "node_id": "9",
            "kind": "image",
            "created_at": datetime.now(UTC),
        }
        stale = type(claimed.lease)(job.id, "intruder", claimed.lease.attempt)
        assert not await store.leases.finish(stale, JobStatus.SUCCEEDED, outputs=[row])
        before = await store.jobs.detail(job.id, "local", attempts=False, eta=False)
        assert before is not None and before.outputs == []
        assert await store.leases.finish(claimed.lease, JobStatus.SUCCEEDED, outputs=[row])
        after = await store.jobs.detail(job.id, "local", attempts=False, eta=False)
        assert after is not None and after.job.status is JobStatus.SUCCEEDED
        assert [o["id"] for o in after.outputs] == [row["id"]]
