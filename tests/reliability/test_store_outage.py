"""PostgreSQL going away mid-flight: jobs finish once, reads answer 503 (never 500) meanwhile."""

from __future__ import annotations

import asyncpg
import pytest

from tests.fixtures.api import StartApi
from tests.fixtures.private_pg import PrivateCluster
from tests.integration.jobs_support import finish, long_job, submit, wait_status


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_postgres_restart_mid_job(private_pg: PrivateCluster, start_api: StartApi) -> None:
    api = await start_api(database_url=private_pg.url, engine_step_s=0.05)
    job = await submit(api.http, long_job(steps=60))
    await wait_status(api.http, job["id"], "running")

    private_pg.stop()
    during = await api.http.get(f"/api/v2/jobs/{job['id']}")
    assert during.status_code == 503, during.text
    assert during.json()["error"]["code"] == "store_unavailable"
    private_pg.start()

    final = await finish(api.http, job["id"])
    assert final["status"] == "succeeded", final["error"]
    assert len(final["outputs"]) == 1
    engine = api.services.backends.backends["embedded"].client
    history = await engine._json("GET", "/history")
    assert len(history) == 1  # the GPU work ran once


@pytest.mark.timeout(60)
async def test_killed_connections_are_survived(pg_url: str, start_api: StartApi) -> None:
    api = await start_api(database_url=pg_url, engine_step_s=0.05)
    job = await submit(api.http, long_job(steps=40))
    await wait_status(api.http, job["id"], "running")
    database = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres", timeout=10)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            database,
        )
    finally:
        await admin.close()
    assert killed >= 1
    final = await finish(api.http, job["id"])
    assert final["status"] == "succeeded", final["error"]
    assert len(final["outputs"]) == 1
