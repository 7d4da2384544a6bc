"""Retention: jobs past expires_at are expired or deleted, and blobs only they used go."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from sakuga.artifacts import Artifacts, content_hash
from sakuga.domain.jobs import JobStatus
from sakuga.domain.webhooks import DeliveryStatus
from sakuga.metrics import Metrics
from sakuga.notify import Notifier
from sakuga.store import NewJob, Store
from sakuga.store import tables as t
from sakuga.worker.sweeper import Sweeper

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {}}}


def _new_job(**kw: Any) -> NewJob:
    return NewJob(
        id=str(uuid.uuid4()),
        owner="o",
        workflow=WORKFLOW,
        fingerprint="f",
        eligible_backends=(),
        **kw,
    )


def _asset(digest: str, job_id: str | None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "owner": "o",
        "hash": digest,
        "size_bytes": 1,
        "content_type": "image/png",
        "file_path": "a.png",
        "tags": [],
        "job_id": job_id,
        "node_id": "9" if job_id else None,
        "kind": "image" if job_id else "file",
        "created_at": datetime.now(UTC),
    }


async def _finished_with_output(store: Store, artifacts: Artifacts, content: bytes) -> str:
    """A job that ran and stored one output blob; returns its id."""
    job = _new_job()
    await store.writer.submit(job)
    claimed = await store.leases.claim("w", "http://b", 30, record=True)
    assert claimed is not None and claimed.job.id == job.id
    digest = artifacts.put(content)
    assert await store.leases.add_output(claimed.lease, _asset(digest, job.id))
    assert await store.leases.finish(claimed.lease, JobStatus.SUCCEEDED)
    return job.id


def _past(job_ids: list[str]) -> Any:
    def work(conn: Connection) -> None:
        conn.execute(
            update(t.jobs)
            .where(t.jobs.c.id.in_(job_ids))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    return work


async def test_finished_jobs_past_retention_are_deleted_with_the_blobs_only_they_used(
    db_url: str, tmp_path: Path
) -> None:
    artifacts = Artifacts(tmp_path)
    metrics = Metrics()
    async with Store(db_url) as store:
        sweeper = Sweeper(store, artifacts, Notifier(), every_s=60, blob_grace_s=0, metrics=metrics)
        alone = await _finished_with_output(store, artifacts, b"only this job's picture")
        shared = await _finished_with_output(store, artifacts, b"a picture also uploaded")
        uploaded = _asset(artifacts.put(b"a picture also uploaded"), None)
        await store.assets.insert(uploaded)
        kept = await _finished_with_output(store, artifacts, b"a job still retrievable")
        await store.db.write(_past([alone, shared]))

        swept = await sweeper.sweep()

        assert (swept.expired, swept.deleted, swept.blobs_removed) == (0, 2, 1)
        counted = {
            kind: metrics.registry.get_sample_value(
                "sakuga_retention_removed_total", {"kind": kind}
            )
            for kind in ("expired_jobs", "deleted_jobs", "blobs")
        }
        assert counted == {"expired_jobs": 0, "deleted_jobs": 2, "blobs": 1}
        assert await store.jobs.get(alone) is None and await store.jobs.get(shared) is None
        assert await store.jobs.get(kept) is not None

        def left(conn: Connection) -> tuple[list[str], list[str | None]]:
            attempts = list(conn.scalars(select(t.attempts.c.job_id)))
            assets = list(conn.scalars(select(t.assets.c.job_id)))
            return attempts, assets

        attempts, assets = await store.db.read(left)
        assert attempts == [kept] and sorted(assets, key=str) == sorted([kept, None], key=str)
        assert not artifacts.exists(content_hash(b"only this job's picture"))
        assert artifacts.exists(uploaded["hash"])  # an upload still uses it
        assert artifacts.exists(content_hash(b"a job still retrievable"))
        assert (await sweeper.sweep()).deleted == 0


async def test_a_queued_job_past_retention_expires_never_runs_and_its_webhook_says_so(
    db_url: str, tmp_path: Path
) -> None:
    async with Store(db_url) as store:
        sweeper = Sweeper(store, Artifacts(tmp_path), Notifier(), every_s=60)
        hooked = _new_job(webhook_url="https://hooks.example/x")
        await store.writer.submit(hooked)
        await store.db.write(_past([hooked.id]))

        swept = await sweeper.sweep()

        assert (swept.expired, swept.deleted) == (1, 0)
        job = await store.jobs.get(hooked.id)
        assert job is not None and job.status is JobStatus.EXPIRED and job.terminal
        assert await store.leases.claim("w", "http://b", 30) is None
        [delivery] = await store.outbox.for_job(hooked.id, None)
        assert delivery.event_type == "job.expired"

        # Kept until its webhook is settled (delivered or dead), then deleted.
        def delivered(conn: Connection) -> None:
            conn.execute(update(t.webhook_deliveries).values(status=DeliveryStatus.DELIVERED.value))

        await store.db.write(delivered)
        assert (await sweeper.sweep()).deleted == 1
        assert await store.jobs.get(hooked.id) is None


async def test_a_blob_in_recent_use_or_used_again_meanwhile_is_kept(
    db_url: str, tmp_path: Path
) -> None:
    artifacts = Artifacts(tmp_path)
    async with Store(db_url) as store:
        digest = artifacts.put(b"bytes nobody references")
        # Written moments ago: inside the grace period an upload may still be recording it.
        sweeper = Sweeper(store, artifacts, Notifier(), every_s=60)
        assert await sweeper.release_blob(digest) == "recent"
        assert artifacts.exists(digest)

        # An upload records its row while the sweep holds the blob aside: it goes back.
        sweeper = Sweeper(store, artifacts, Notifier(), every_s=60, blob_grace_s=0)
        real = store.retention.referenced
        asked = 0

        async def referenced(value: str) -> bool:
            nonlocal asked
            asked += 1
            if asked == 2:  # the second look, after the blob was moved aside
                await store.assets.insert(_asset(value, None))
            return await real(value)

        store.retention.referenced = referenced  # type: ignore[method-assign]
        assert await sweeper.release_blob(digest) == "in use"
        assert asked == 2 and artifacts.exists(digest)


async def test_a_deleted_upload_s_blob_goes_once_nothing_uses_it_and_its_grace_passed(
    db_url: str, tmp_path: Path
) -> None:
    artifacts = Artifacts(tmp_path)
    async with Store(db_url) as store:
        alone = _asset(artifacts.put(b"uploaded once"), None)
        twice = _asset(artifacts.put(b"uploaded twice"), None)
        again = {**_asset(twice["hash"], None), "file_path": "b.png"}
        for row in (alone, twice, again):
            await store.assets.insert(row)
        for row in (alone, twice):
            assert await store.assets.delete(row["id"], "o")

        # Written just now: inside the grace period both stay, and are looked at again.
        waiting = Sweeper(store, artifacts, Notifier(), every_s=60)
        assert (await waiting.sweep()).blobs_removed == 0
        assert artifacts.exists(alone["hash"]) and artifacts.exists(twice["hash"])

        swept = await Sweeper(store, artifacts, Notifier(), every_s=60, blob_grace_s=0).sweep()
        assert swept.blobs_removed == 1
        assert not artifacts.exists(alone["hash"])
        assert artifacts.exists(twice["hash"])  # the other upload of the same bytes uses it
        assert await store.retention.released(datetime.now(UTC)) == []
