"""Webhooks end to end: a real receiver on loopback, the real server, the outbox in the store."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sakuga.domain.jobs import JobStatus
from sakuga.domain.webhooks import AllowList, Delivery, DeliveryStatus
from sakuga.serving import UvicornServer
from sakuga.store import NewJob, Store
from sakuga.store import tables as t
from sakuga.worker.webhooks import SECRET_FILE, attempt
from tests.fixtures.api import RunningApi, StartApi
from tests.integration.jobs_support import finish, long_job, submit, wait_status

# Status to answer for (webhook-id, how many times that id arrived); None hangs.
Answer = Callable[[str, int], int | None]
ALLOW_LOOPBACK: dict[str, Any] = {"webhook_allow": ["127.0.0.1"], "webhook_base_s": 0.0}


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """A webhook endpoint under uvicorn; records every request it gets."""

    answer: Answer
    url: str = ""
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def hook(self, request: Request) -> Response:
        got = Received(await request.body(), dict(request.headers))
        self.received.append(got)
        self.arrived.set()
        status = self.answer(got.headers.get("webhook-id", ""), self.count(got.id))
        if status is None:  # hang until the test ends (bounded, so shutdown never stalls)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.release.wait()
            status = 200
        return Response(status_code=status)

    def count(self, webhook_id: str) -> int:
        return sum(1 for r in self.received if r.id == webhook_id)

    def events(self, secret: str) -> list[dict[str, Any]]:
        """Every received body, each verified against its Standard Webhooks signature."""
        verifier = Webhook(secret)
        return [verifier.verify(r.body, r.headers) for r in self.received]

    async def wait_for(self, check: Callable[[], bool], timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                self.arrived.clear()
                await self.arrived.wait()


StartReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def receiver() -> AsyncIterator[StartReceiver]:
    """Factory: ``await receiver(answer)``; servers stop at teardown, hangs released first."""
    async with AsyncExitStack() as stack:

        async def start(answer: Answer = lambda _id, _n: 200) -> Receiver:
            rec = Receiver(answer)
            app = Starlette(routes=[Route("/hook", rec.hook, methods=["POST"])])
            server = await stack.enter_async_context(UvicornServer(app))
            stack.callback(rec.release.set)
            rec.url = f"{server.url}/hook"
            return rec

        yield start


def secret_of(api: RunningApi) -> str:
    return (api.settings.data_dir / SECRET_FILE).read_text().strip()


async def deliveries(
    api: RunningApi, job_id: str, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The job's deliveries once ``until`` holds (polled: settling happens after the POST)."""
    async with asyncio.timeout(15):
        while True:
            response = await api.http.get(f"/api/v2/jobs/{job_id}/webhooks")
            assert response.status_code == 200, response.text
            rows: list[dict[str, Any]] = response.json()["deliveries"]
            if until(rows):
                return rows
            await asyncio.sleep(0.05)


def settled(count: int, status: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda rows: len(rows) == count and all(r["status"] == status for r in rows)


def quick_job(url: str) -> dict[str, Any]:
    return {**long_job(steps=2, prompt="webhook"), "webhook_url": url}


# -- delivery ---------------------------------------------------------------------------------


async def test_succeeded_job_delivers_signed_events(
    receiver: StartReceiver, start_api: StartApi
) -> None:
    """running then succeeded, each signed (Standard Webhooks) and shown as delivered."""
    rec = await receiver()
    api = await start_api(**ALLOW_LOOPBACK)
    job = await submit(api.http, quick_job(rec.url))
    done = await finish(api.http, job["id"])
    assert done["status"] == "succeeded"

    rows = await deliveries(api, job["id"], settled(2, "delivered"))
    assert [r["event_type"] for r in rows] == ["job.running", "job.succeeded"]
    assert all(r["attempts"] == 1 and r["last_status_code"] == 200 for r in rows)
    assert all(r["next_attempt_at"] is None and r["delivered_at"] for r in rows)

    secret_file = api.settings.data_dir / SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_of(api).startswith("whsec_")
    events = rec.events(secret_of(api))  # raises if any signature does not verify
    succeeded = [e for e in events if e["type"] == "job.succeeded"]
    assert len(succeeded) == 1
    data = succeeded[0]["data"]
    assert data["id"] == job["id"] and data["status"] == "succeeded"
    assert data["completed_at"] and data["error"] is None
    assert [o["id"] for o in data["outputs"]] == [o["id"] for o in done["outputs"]]
    assert "url" not in data["outputs"][0]
    assert {r.id for r in rec.received} == {r["id"] for r in rows}
    assert rec.received[0].headers["content-type"] == "application/json"

    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 43).verify(rec.received[0].body, rec.received[0].headers)

    listed = (await api.http.get("/api/v2/webhooks/deliveries?status=delivered")).json()
    assert {d["id"] for d in listed["deliveries"]} == {r["id"] for r in rows}
    pending = (await api.http.get("/api/v2/webhooks/deliveries?status=pending")).json()
    assert pending["deliveries"] == []


async def test_configured_secret_signs_deliveries(
    receiver: StartReceiver, start_api: StartApi
) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    rec = await receiver()
    api = await start_api(webhook_secret=secret, **ALLOW_LOOPBACK)
    job = await submit(api.http, quick_job(rec.url))
    await finish(api.http, job["id"])
    await deliveries(api, job["id"], settled(2, "delivered"))
    assert len(rec.events(secret)) == 2
    assert not (api.settings.data_dir / SECRET_FILE).exists()


async def test_failing_receiver_is_retried_until_it_answers_2xx(
    receiver: StartReceiver, start_api: StartApi
) -> None:
    """500, 500, then 200: delivered after 3 attempts, the same webhook-id every time."""
    rec = await receiver(lambda _id, n: 500 if n <= 2 else 200)
    api = await start_api(webhook_attempts=5, **ALLOW_LOOPBACK)
    job = await submit(api.http, quick_job(rec.url))
    await finish(api.http, job["id"])
    rows = await deliveries(api, job["id"], settled(2, "delivered"))
    assert [r["attempts"] for r in rows] == [3, 3]
    assert all(rec.count(r["id"]) == 3 for r in rows)
    assert len(rec.events(secret_of(api))) == 6  # every attempt is signed afresh


async def test_receiver_that_always_fails_goes_dead_and_can_be_retried(
    receiver: StartReceiver, start_api: StartApi
) -> None:
    healthy = False
    rec = await receiver(lambda _id, _n: 200 if healthy else 500)
    api = await start_api(webhook_attempts=3, **ALLOW_LOOPBACK)
    job = await submit(api.http, quick_job(rec.url))
    await finish(api.http, job["id"])
    rows = await deliveries(api, job["id"], settled(2, "dead"))
    assert all(r["attempts"] == 3 and r["max_attempts"] == 3 for r in rows)
    assert all(r["last_status_code"] == 500 and r["last_error"] == "HTTP 500" for r in rows)
    assert all(rec.count(r["id"]) == 3 for r in rows)

    first = (await api.http.get("/api/v2/webhooks/deliveries?status=dead&limit=1")).json()
    assert len(first["deliveries"]) == 1 and first["next_cursor"]
    rest = (
        await api.http.get(
            "/api/v2/webhooks/deliveries",
            params={"status": "dead", "limit": 1, "cursor": first["next_cursor"]},
        )
    ).json()
    assert len(rest["deliveries"]) == 1 and "next_cursor" not in rest
    assert {first["deliveries"][0]["id"], rest["deliveries"][0]["id"]} == {r["id"] for r in rows}

    healthy = True
    dead = next(r for r in rows if r["event_type"] == "job.succeeded")
    again = await api.http.post(f"/api/v2/webhooks/deliveries/{dead['id']}/retry")
    assert again.status_code == 200, again.text
    assert again.json()["status"] in {"pending", "delivered"}
    rows = await deliveries(api, job["id"], lambda rs: any(r["status"] == "delivered" for r in rs))
    redelivered = next(r for r in rows if r["id"] == dead["id"])
    assert redelivered["status"] == "delivered" and redelivered["attempts"] == 1
    assert rec.count(dead["id"]) == 4

    twice = await api.http.post(f"/api/v2/webhooks/deliveries/{dead['id']}/retry")
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "delivery_not_dead"
    unknown = await api.http.post(f"/api/v2/webhooks/deliveries/{uuid.uuid4()}/retry")
    assert unknown.status_code == 404
    bad_cursor = await api.http.get("/api/v2/webhooks/deliveries?cursor=nope")
    assert bad_cursor.status_code == 400


async def test_receiver_that_hangs_times_out_as_a_failed_attempt(
    receiver: StartReceiver, start_api: StartApi
) -> None:
    rec = await receiver(lambda _id, _n: None)
    api = await start_api(webhook_timeout_s=0.5, webhook_attempts=2, **ALLOW_LOOPBACK)
    job = await submit(api.http, quick_job(rec.url))
    await finish(api.http, job["id"])
    started = time.monotonic()
    rows = await deliveries(api, job["id"], settled(2, "dead"))
    assert time.monotonic() - started < 10
    assert all(r["attempts"] == 2 and r["last_status_code"] is None for r in rows)
    assert all("no answer within 0.5 s" in r["last_error"] for r in rows)


async def test_canceled_queued_job_delivers_job_canceled(
    receiver: StartReceiver, start_api: StartApi
) -> None:
    rec = await receiver()
    api = await start_api(backend_capacity=1, **ALLOW_LOOPBACK)
    blocker = await submit(api.http, long_job(steps=150))
    await wait_status(api.http, blocker["id"], "running")
    waiting = await submit(api.http, quick_job(rec.url))
    canceled = (await api.http.post(f"/api/v2/jobs/{waiting['id']}/cancel")).json()
    assert canceled["status"] == "canceled"
    rows = await deliveries(api, waiting["id"], settled(1, "delivered"))
    assert rows[0]["event_type"] == "job.canceled"
    [event] = rec.events(secret_of(api))
    assert event["type"] == "job.canceled" and event["data"]["status"] == "canceled"
    assert event["data"]["started_at"] is None
    await api.http.post(f"/api/v2/jobs/{blocker['id']}/cancel")


async def test_job_without_webhook_sends_nothing(start_api: StartApi) -> None:
    api = await start_api(**ALLOW_LOOPBACK)
    job = await submit(api.http, long_job(steps=2))
    await finish(api.http, job["id"])
    rows = (await api.http.get(f"/api/v2/jobs/{job['id']}/webhooks")).json()
    assert rows == {"deliveries": []}
    missing = await api.http.get(f"/api/v2/jobs/{uuid.uuid4()}/webhooks")
    assert missing.status_code == 404


async def test_a_keys_default_webhook_is_used_and_deliveries_stay_with_their_owner(
    receiver: StartReceiver, start_api: StartApi
) -> None:
    rec = await receiver()
    api = await start_api(auth="on", **ALLOW_LOOPBACK)
    _key, secret = await api.services.store.keys.create(None, "read,submit", webhook_url=rec.url)
    mine = {"Authorization": f"Bearer {secret}"}
    _other, other_secret = await api.services.store.keys.create(None, "read,submit")
    theirs = {"Authorization": f"Bearer {other_secret}"}

    created = await api.http.post("/api/v2/jobs", json=long_job(steps=2), headers=mine)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    await rec.wait_for(lambda: len(rec.received) == 2)
    assert {e["data"]["id"] for e in rec.events(secret_of(api))} == {job_id}

    async with asyncio.timeout(15):
        while True:
            listed = await api.http.get("/api/v2/webhooks/deliveries", headers=mine)
            rows = listed.json()["deliveries"]
            if len(rows) == 2 and all(r["status"] == "delivered" for r in rows):
                break
            await asyncio.sleep(0.05)
    hidden = await api.http.get(f"/api/v2/jobs/{job_id}/webhooks", headers=theirs)
    assert hidden.status_code == 404
    assert (await api.http.get("/api/v2/webhooks/deliveries", headers=theirs)).json() == {
        "deliveries": []
    }
    retry = await api.http.post(
        f"/api/v2/webhooks/deliveries/{rows[0]['id']}/retry", headers=theirs
    )
    assert retry.status_code == 404
    assert (await api.http.get("/api/v2/webhooks/deliveries")).status_code == 401
    registry = api.services.metrics.registry
    counted = registry.get_sample_value("sakuga_webhook_deliveries_total", {"outcome": "delivered"})
    assert counted == 2


# -- SSRF ---------------------------------------------------------------------------------------

REFUSED = [
    "http://127.0.0.1/hook",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://localhost/",
    "http://[::ffff:127.0.0.1]/",
    "http://0177.0.0.1/",
    "http://2130706433/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://user:pw@example.com/",
    "ftp://example.com/",
    "http://[example.com]/",
    "http://nonexistent.invalid/",
]


async def test_submit_refuses_webhook_urls_that_reach_private_addresses(
    start_api: StartApi,
) -> None:
    """422 naming webhook_url, the value and what is accepted; no job is created."""
    api = await start_api()
    for url in REFUSED:
        response = await api.http.post("/api/v2/jobs", json=quick_job(url))
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request", url
        assert error["details"]["field"] == "webhook_url", url
        assert error["details"]["value"] == url
        assert "SAKUGA_WEBHOOK_ALLOW" in error["details"]["accepted"]
    count = select(func.count()).select_from(t.jobs)
    assert await api.services.store.db.read(lambda conn: conn.scalar(count)) == 0


async def test_allow_list_admits_a_private_webhook(start_api: StartApi) -> None:
    api = await start_api(webhook_allow=["127.0.0.1", "10.0.0.0/8"])
    for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/"):
        response = await api.http.post("/api/v2/jobs", json=quick_job(url))
        assert response.status_code == 201, response.text
    refused = await api.http.post("/api/v2/jobs", json=quick_job("http://192.168.0.1/"))
    assert refused.status_code == 422


async def test_delivery_time_check_refuses_a_name_that_now_resolves_private(
    receiver: StartReceiver,
) -> None:
    """The host is resolved again for each attempt (DNS rebinding): a loopback answer is
    refused for good unless allowed, and an allowed one is reached at the checked address."""
    rec = await receiver()
    port = int(rec.url.rsplit(":", 1)[1].split("/")[0])
    url = f"http://localhost:{port}/hook"
    delivery = Delivery(
        id=str(uuid.uuid4()),
        seq=1,
        job_id="j",
        owner="o",
        url=url,
        event_type="job.succeeded",
        payload={"type": "job.succeeded", "data": {}},
        status=DeliveryStatus.PENDING,
        attempts=1,
        next_attempt_at=None,
        created_at=datetime.now(UTC),
    )
    signer = Webhook("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    async with httpx.AsyncClient(trust_env=False) as http:
        refused = await attempt(http, signer, delivery, AllowList(), 2.0)
        assert not refused.delivered and refused.permanent
        assert refused.error is not None and "loopback" in refused.error
        assert rec.received == []
        allowed = await attempt(http, signer, delivery, AllowList.parse(["localhost"]), 2.0)
    assert allowed.delivered and allowed.status_code == 200
    assert rec.received[0].headers["host"] == f"localhost:{port}"


# -- the outbox in the store ------------------------------------------------------------------


def new_job(**kw: Any) -> NewJob:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "owner": "local",
        "workflow": {"1": {"class_type": "EmptyImage", "inputs": {}}},
        "fingerprint": "f",
        "eligible_backends": (),
    }
    fields.update(kw)
    return NewJob(**fields)


async def test_outbox_row_commits_with_each_state_change(db_url: str) -> None:
    """Read right after each change (as a process killed then would leave it)."""
    async with Store(db_url) as store:
        hooked = new_job(webhook_url="https://hooks.example/x")
        plain = new_job()
        await store.writer.submit(hooked)
        await store.writer.submit(plain)
        claimed = await store.leases.claim("w1", "b1", 30.0)
        assert claimed is not None and claimed[0].id == hooked.id
        lease = claimed[1]
        await store.leases.start_attempt(lease, backend="b1", prompt_id="p", client_id="c")
        assert await store.leases.mark_running(lease)
        rows = await store.outbox.for_job(hooked.id, None)
        assert [(r.event_type, r.status, r.seq, r.attempts) for r in rows] == [
            ("job.running", DeliveryStatus.PENDING, 1, 0)
        ]
        assert await store.leases.finish(lease, JobStatus.SUCCEEDED)
        rows = await store.outbox.for_job(hooked.id, None)
        assert [r.event_type for r in rows] == ["job.running", "job.succeeded"]
        assert rows[1].payload["data"]["status"] == "succeeded"
        assert rows[1].url == "https://hooks.example/x" and rows[1].owner == "local"

        await store.jobs.request_cancel(plain.id, None)
        assert await store.outbox.for_job(plain.id, None) == []


async def test_outbox_failure_rolls_back_the_state_change(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> str:
        raise RuntimeError("outbox write failed")

    async with Store(sqlite_url) as store:
        job = new_job(webhook_url="https://hooks.example/x")
        await store.writer.submit(job)
        monkeypatch.setattr("sakuga.store.jobs.enqueue_for_job", broken)
        with pytest.raises(RuntimeError, match="outbox write failed"):
            await store.jobs.request_cancel(job.id, None)
        after = await store.jobs.get(job.id)
        assert after is not None and after.status is JobStatus.QUEUED


async def test_outbox_claims_are_leased_fenced_and_dead_lettered(db_url: str) -> None:
    async with Store(db_url) as store:
        jobs = [new_job(webhook_url="https://hooks.example/x") for _ in range(4)]
        for job in jobs:
            await store.writer.submit(job)
            await store.jobs.request_cancel(job.id, None)
        one, two = await asyncio.gather(
            store.outbox.claim("d1", limit=3, lease_s=30.0),
            store.outbox.claim("d2", limit=3, lease_s=30.0),
        )
        assert len(one) + len(two) == 4
        assert not {d.id for d in one} & {d.id for d in two}
        assert await store.outbox.claim("d3", limit=5, lease_s=30.0) == []
        mine = (one + two)[0]
        holder = "d1" if mine.id in {d.id for d in one} else "d2"
        assert mine.attempts == 1
        assert not await store.outbox.delivered(mine, "intruder", 200)  # fenced by lease
        assert await store.outbox.failed(
            mine, holder, error="HTTP 500", status_code=500, retry_in_s=0.0
        )
        [again] = await store.outbox.claim("d3", limit=5, lease_s=30.0)
        assert again.id == mine.id and again.attempts == 2
        assert await store.outbox.failed(
            again, "d3", error="HTTP 500", status_code=500, retry_in_s=None
        )
        dead = await store.outbox.page(None, status=DeliveryStatus.DEAD, limit=10)
        assert [d.id for d in dead] == [mine.id] and dead[0].last_error == "HTTP 500"
        requeued = await store.outbox.requeue(mine.id, None)
        assert requeued is not None and requeued.status is DeliveryStatus.PENDING
        assert requeued.attempts == 0
        assert await store.outbox.requeue(mine.id, "someone-else") is None
