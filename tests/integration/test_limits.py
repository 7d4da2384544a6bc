"""Limits touch writes only: per-key rate limits, the queued-jobs cap, body sizes, and a
store outage answering 503 — never 500."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from comfy_sdk import AsyncComfy

from sakuga.api.limits import RateLimits
from sakuga.store.db import ThreadRunner, sqlite_engine
from tests.fixtures.api import RunningApi, StartApi
from tests.integration.test_assets_api import png
from tests.integration.test_auth import error_code, new_key
from tests.integration.test_jobs_api import BLANK_WORKFLOW

JOB = {"workflow": BLANK_WORKFLOW}


async def submit(
    api: RunningApi, auth: dict[str, str], key: str | None = None, body: Any = None
) -> httpx.Response:
    headers = {**auth, "Idempotency-Key": key or str(uuid.uuid4())}
    return await api.http.post("/api/v2/jobs", json=body or JOB, headers=headers)


async def upload(api: RunningApi, auth: dict[str, str], data: bytes) -> httpx.Response:
    return await api.http.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "in.png"},
        files={"file": ("in.png", data, "image/png")},
        headers=auth,
    )


def limiter(api: RunningApi) -> RateLimits:
    app: Any = api.server.server.config.app
    limits: RateLimits = app.state.rate_limits
    return limits


async def own_jobs(api: RunningApi, auth: dict[str, str]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = (await api.http.get("/api/v2/jobs", headers=auth)).json()["jobs"]
    return jobs


# -- rate limits ----------------------------------------------------------------------------


async def test_submissions_over_the_rate_are_429_and_keep_the_idempotency_key(
    start_api: StartApi,
) -> None:
    api = await start_api(auth="on", workers=False, rate_limit="3/minute")
    alice, bob = await new_key(api), await new_key(api)
    for _ in range(3):
        assert (await submit(api, alice)).status_code == 201
    key = str(uuid.uuid4())
    limited = await submit(api, alice, key)
    assert limited.status_code == 429 and error_code(limited) == "rate_limited"
    retry_after = limited.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60
    assert "3 per 1 minute" in limited.json()["error"]["message"]

    # Another key has its own window; reads and cancel are never limited.
    assert (await submit(api, bob)).status_code == 201
    jobs = await own_jobs(api, alice)
    assert len(jobs) == 3
    for _ in range(5):
        assert (await api.http.get(f"/api/v2/jobs/{jobs[0]['id']}", headers=alice)).is_success
    cancel = await api.http.post(f"/api/v2/jobs/{jobs[0]['id']}/cancel", headers=alice)
    assert cancel.status_code == 200

    # Once the window has passed (cleared here instead of waiting a minute), the same
    # Idempotency-Key is still unused and succeeds.
    alice_id = (await api.services.store.keys.list())[0].id
    await limiter(api).limiter.clear(limiter(api).item, "submissions", alice_id)
    assert (await submit(api, alice, key)).status_code == 201
    assert (await submit(api, alice, key)).status_code == 422  # now it is used


async def test_comfy_sdk_retries_a_rate_limited_submit_with_the_same_key(
    start_api: StartApi, monkeypatch: Any
) -> None:
    """comfy-sdk waits Retry-After and re-sends the same Idempotency-Key: it must succeed."""
    api = await start_api(auth="on", workers=False, rate_limit="1/second")
    _record, secret = await api.services.store.keys.create(None, "read,submit")
    monkeypatch.setenv("COMFY_BASE_URL", api.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    async with AsyncComfy(api_key=secret, timeout=10) as client:
        first = await client.submit(client.workflows.from_json(BLANK_WORKFLOW))
        second = await client.submit(client.workflows.from_json(BLANK_WORKFLOW))
    assert first.id != second.id
    auth = {"Authorization": f"Bearer {secret}"}
    assert len(await own_jobs(api, auth)) == 2


async def test_uploads_have_their_own_rate_limit(start_api: StartApi) -> None:
    api = await start_api(auth="on", workers=False, rate_limit="2/minute")
    alice = await new_key(api)
    assert (await upload(api, alice, png((1, 1, 1)))).status_code == 201
    assert (await upload(api, alice, png((2, 2, 2)))).status_code == 201
    limited = await upload(api, alice, png((3, 3, 3)))
    assert limited.status_code == 429 and error_code(limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await submit(api, alice)).status_code == 201  # submissions: a separate bucket


# -- queued cap -----------------------------------------------------------------------------


async def test_a_full_queue_is_429_queue_full_and_keeps_the_idempotency_key(
    start_api: StartApi, db_url: str
) -> None:
    api = await start_api(auth="on", workers=False, max_queued_per_key=2, database_url=db_url)
    alice, bob = await new_key(api), await new_key(api)
    first = await submit(api, alice)
    assert first.status_code == 201
    assert (await submit(api, alice)).status_code == 201
    key = str(uuid.uuid4())
    full = await submit(api, alice, key)
    assert full.status_code == 429 and error_code(full) == "queue_full"
    assert full.headers["Retry-After"].isdigit()
    assert full.json()["error"]["details"] == {"queued": 2, "max_queued": 2}
    assert len(await own_jobs(api, alice)) == 2
    assert (await submit(api, bob)).status_code == 201  # the cap is per key

    canceled = await api.http.post(f"/api/v2/jobs/{first.json()['id']}/cancel", headers=alice)
    assert canceled.json()["status"] == "canceled"
    assert (await submit(api, alice, key)).status_code == 201


# -- body size ------------------------------------------------------------------------------


async def test_an_oversized_json_body_is_413_and_creates_nothing(start_api: StartApi) -> None:
    api = await start_api(auth="on", workers=False, max_body_bytes=4096)
    alice = await new_key(api)
    big = {"template": "txt2img", "params": {"prompt": "x" * 10_000}}
    refused = await submit(api, alice, body=big)
    assert refused.status_code == 413 and error_code(refused) == "payload_too_large"
    assert "4096 bytes" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"]["limit_bytes"] == 4096

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"template": "txt2img", "params": {"prompt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}'

    streamed = await api.http.post(
        "/api/v2/jobs", content=chunks(), headers={**alice, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413 and error_code(streamed) == "payload_too_large"
    assert "4096 bytes" in streamed.json()["error"]["message"]
    assert await own_jobs(api, alice) == []
    assert (await submit(api, alice)).status_code == 201  # a small body still passes


async def test_an_oversized_upload_is_413_and_stores_nothing(start_api: StartApi) -> None:
    api = await start_api(auth="on", workers=False, max_upload_bytes=2048)
    alice = await new_key(api)
    for size in (200_000, 3000):  # refused by the middleware; by the route (within overhead)
        data = bytes(size)
        refused = await upload(api, alice, data)
        assert refused.status_code == 413, refused.text
        assert error_code(refused) == "payload_too_large"
        assert "at most" in refused.json()["error"]["message"]
    assert not (api.settings.artifacts_dir / "blobs").exists()
    assert (await upload(api, alice, bytes(1000))).status_code == 201


# -- store outage ---------------------------------------------------------------------------


async def test_a_store_outage_is_503_with_retry_after(start_api: StartApi, tmp_path: Path) -> None:
    api = await start_api(workers=False)
    created = await submit(api, {})
    assert created.status_code == 201
    db = api.services.store.db
    original = db.runner
    broken = ThreadRunner(sqlite_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    db.runner = broken
    try:
        for method, path in [
            ("GET", f"/api/v2/jobs/{created.json()['id']}"),
            ("GET", "/api/v2/jobs"),
            ("POST", "/api/v2/jobs"),
        ]:
            response = await api.http.request(method, path, json=JOB)
            assert response.status_code == 503, (method, path, response.text)
            assert error_code(response) == "store_unavailable"
            assert response.headers["Retry-After"] == "1"
    finally:
        db.runner = original
        await broken.dispose()
    assert (await api.http.get(f"/api/v2/jobs/{created.json()['id']}")).status_code == 200


async def test_store_pool_exhaustion_is_503(start_api: StartApi) -> None:
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    api = await start_api(workers=False)
    jobs = api.services.store.jobs
    original = jobs.detail

    async def exhausted(*_args: Any, **_kwargs: Any) -> None:
        raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")

    jobs.detail = exhausted  # type: ignore[method-assign]
    try:
        response = await api.http.get("/api/v2/jobs/any")
    finally:
        jobs.detail = original  # type: ignore[method-assign]
    assert response.status_code == 503 and error_code(response) == "store_unavailable"
