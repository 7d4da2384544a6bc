"""sakuga's extra job fields and read routes: ETA, metadata labels, idempotency, readiness."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from sakuga.store import tables as t
from tests.fixtures.api import RunningApi, StartApi
from tests.fixtures.engine import EngineFactory
from tests.integration.jobs_support import finish, long_job, submit, wait_status
from tests.integration.test_jobs_api import BLANK_WORKFLOW


async def test_eta_appears_after_three_measured_runs(start_api: StartApi) -> None:
    api = await start_api(backend_capacity=1, engine_step_s=0.02)
    body = long_job(steps=5)
    for _ in range(3):
        first = await submit(api.http, body)
        assert first["eta_s"] is None
        await finish(api.http, first["id"])
    blocker = await submit(api.http, long_job(steps=150, prompt="blocker"))
    await wait_status(api.http, blocker["id"], "running")
    waiting = await submit(api.http, body)
    assert waiting["queue_position"] == 1
    assert waiting["eta_s"] is not None and waiting["eta_s"] > 0
    await api.http.post(f"/api/v2/jobs/{blocker['id']}/cancel")


async def test_metadata_labels_filter_the_list(api: RunningApi) -> None:
    await submit(api.http, {"workflow": BLANK_WORKFLOW, "metadata": {"book": "a"}})
    wanted = await submit(api.http, {"workflow": BLANK_WORKFLOW, "metadata": {"book": "b"}})
    page = (await api.http.get("/api/v2/jobs", params={"metadata[book]": "b"})).json()
    assert [j["id"] for j in page["jobs"]] == [wanted["id"]]
    assert page["jobs"][0]["metadata"] == {"book": "b"}


async def test_idempotency_key_is_single_use_over_http(api: RunningApi) -> None:
    headers = {"Idempotency-Key": "order-42"}
    body: dict[str, Any] = {"workflow": BLANK_WORKFLOW}
    first = await api.http.post("/api/v2/jobs", json=body, headers=headers)
    assert first.status_code == 201
    again = await api.http.post("/api/v2/jobs", json=body, headers=headers)
    assert again.status_code == 422
    error = again.json()["error"]
    assert error["code"] == "idempotency_key_reuse"
    assert error["details"]["job_id"] == first.json()["id"]


async def test_rejected_submission_does_not_consume_the_key(api: RunningApi) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    bad = await api.http.post(
        "/api/v2/jobs", json={"template": "txt2img", "params": {}}, headers=headers
    )
    assert bad.status_code == 422
    good = await api.http.post(
        "/api/v2/jobs", json={"template": "txt2img", "params": {"prompt": "ok"}}, headers=headers
    )
    assert good.status_code == 201


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_readyz_fails_fast_when_no_backend_answers(start_api: StartApi) -> None:
    api = await start_api(backends=[f"http://127.0.0.1:{closed_port()}"], connect_timeout_s=1)
    assert (await api.http.get("/healthz")).status_code == 200
    started = time.monotonic()
    ready = await api.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"store": True, "backend": False}
    assert time.monotonic() - started < 2.0  # bounded (250 ms budget), never a hang
    health = (await api.http.get("/api/v2/health")).json()
    assert health["backends"][0]["reachable"] is False


async def test_submit_without_backend_info_is_503_with_retry_after(start_api: StartApi) -> None:
    api = await start_api(backends=[f"http://127.0.0.1:{closed_port()}"], connect_timeout_s=0.5)
    response = await api.http.post("/api/v2/jobs", json={"workflow": BLANK_WORKFLOW})
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert response.json()["error"]["code"] == "backend_unavailable"


async def test_openapi_describes_the_job_routes(api: RunningApi) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    for path in ("/api/v2/jobs", "/api/v2/jobs/{job_id}", "/api/v2/jobs/{job_id}/events"):
        assert path in spec["paths"]
    assert (await api.http.get("/docs")).status_code == 200


async def test_partner_key_reaches_the_backend_and_is_never_stored(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.05) as engine:
        api = await start_api(backends=[engine.url])
        body = {**long_job(steps=60), "extra_data": {"api_key_comfy_org": "partner-secret"}}
        job = await submit(api.http, body)
        await wait_status(api.http, job["id"], "running")
        running = engine.state.queue.running  # the engine strips it from /queue and /history
        assert running is not None
        assert running.sensitive == {"api_key_comfy_org": "partner-secret"}
        await api.http.post(f"/api/v2/jobs/{job['id']}/cancel")
        await finish(api.http, job["id"])
        rows = await api.services.store.db.read(
            lambda conn: conn.execute(select(t.jobs)).mappings().all()
        )
        assert "partner-secret" not in repr([dict(r) for r in rows])
        shown = (await api.http.get(f"/api/v2/jobs/{job['id']}")).text
        assert "partner-secret" not in shown


async def test_extra_data_is_a_closed_object(api: RunningApi) -> None:
    body = {"workflow": BLANK_WORKFLOW, "extra_data": {"client_id": "mine"}}
    response = await api.http.post("/api/v2/jobs", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "extra_data.client_id"


async def test_bad_labels_and_filters_use_their_own_error_codes(api: RunningApi) -> None:
    body = {"workflow": BLANK_WORKFLOW, "metadata": {"ok": "1", "bad key": "x"}}
    response = await api.http.post("/api/v2/jobs", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "metadata_invalid"
    assert response.json()["error"]["details"]["field"] == "metadata.bad key"
    listed = await api.http.get("/api/v2/jobs", params={"metadata[bad key]": "x"})
    assert listed.status_code == 400
    assert listed.json()["error"]["code"] == "invalid_metadata_filter"


async def test_a_job_past_its_retention_is_gone(api: RunningApi) -> None:
    job = await submit(api.http, {"workflow": BLANK_WORKFLOW})
    await finish(api.http, job["id"])

    def expire(conn: Connection) -> None:
        conn.execute(
            update(t.jobs)
            .where(t.jobs.c.id == job["id"])
            .values(expires_at=t.jobs.c.created_at - timedelta(seconds=1))
        )

    await api.services.store.db.write(expire)
    assert (await api.http.get(f"/api/v2/jobs/{job['id']}")).status_code == 404
    assert (await api.http.get(f"/api/v2/jobs/{job['id']}/workflow")).status_code == 404
    listed = (await api.http.get("/api/v2/jobs")).json()["jobs"]
    assert job["id"] not in [j["id"] for j in listed]


async def test_the_server_s_retention_sweep_deletes_a_job_past_its_retention(
    start_api: StartApi,
) -> None:
    api = await start_api(sweep_s=0.05)
    job = await submit(api.http, {"workflow": BLANK_WORKFLOW})
    await finish(api.http, job["id"])
    store = api.services.store

    def expire(conn: Connection) -> None:
        conn.execute(
            update(t.jobs)
            .where(t.jobs.c.id == job["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    await store.db.write(expire)
    # The sweep runs on its own schedule and announces nothing: look until it ran.
    deadline = time.monotonic() + 5
    while await store.jobs.get(job["id"]) is not None:
        assert time.monotonic() < deadline, "the sweep did not delete the expired job"
        await asyncio.sleep(0.05)
