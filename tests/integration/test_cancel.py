"""Cancel: a queued job never reaches the engine; a running one is interrupted alone."""

from __future__ import annotations

import httpx

from tests.fixtures.api import StartApi
from tests.fixtures.engine import EngineFactory
from tests.integration.jobs_support import finish, long_job, submit, wait_status


async def engine_prompt_ids(url: str) -> set[str]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        history = (await http.get("/history")).json()
        queue = (await http.get("/queue")).json()
    queued = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
    return set(history) | queued


async def test_cancel_queued_job_never_runs(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.05) as engine:
        api = await start_api(backends=[engine.url], backend_capacity=1)
        running = await submit(api.http, long_job(steps=150))
        await wait_status(api.http, running["id"], "running")
        waiting = await submit(api.http, long_job(steps=2, prompt="never"))
        assert waiting["queue_position"] == 1

        canceled = (await api.http.post(f"/api/v2/jobs/{waiting['id']}/cancel")).json()
        assert canceled["status"] == "canceled"
        again = (await api.http.post(f"/api/v2/jobs/{waiting['id']}/cancel")).json()
        assert again["status"] == "canceled"

        stopping = (await api.http.post(f"/api/v2/jobs/{running['id']}/cancel")).json()
        assert stopping["status"] in {"canceling", "canceled"}
        final = await finish(api.http, running["id"])
        assert final["status"] == "canceled"

        never = (await api.http.get(f"/api/v2/jobs/{waiting['id']}")).json()
        assert never["attempts"] == [] and never["started_at"] is None
        seen = await engine_prompt_ids(engine.url)
        assert seen == {a["prompt_id"] for a in final["attempts"]}


async def test_cancel_prefetched_job_removes_it_from_the_backend_queue(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.05) as engine:
        api = await start_api(backends=[engine.url], backend_capacity=2)
        first = await submit(api.http, long_job(steps=150))
        await wait_status(api.http, first["id"], "running")
        second = await submit(api.http, long_job(steps=5, prompt="prefetched"))
        # The second slot hands it to the backend's own queue while the first runs.
        while not (await api.http.get(f"/api/v2/jobs/{second['id']}")).json()["attempts"]:
            await api.services.notifier.wait(f"job:{second['id']}", 0.5)
        await api.http.post(f"/api/v2/jobs/{second['id']}/cancel")
        final = await finish(api.http, second["id"])
        assert final["status"] == "canceled"
        await api.http.post(f"/api/v2/jobs/{first['id']}/cancel")
        assert (await finish(api.http, first["id"]))["status"] == "canceled"
        async with httpx.AsyncClient(base_url=engine.url, timeout=5) as http:
            history = (await http.get("/history")).json()
        assert final["attempts"][0]["prompt_id"] not in history


async def test_cancel_running_job_leaves_other_backend_untouched(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.05) as one, make_engine(step_s=0.05) as two:
        api = await start_api(backends=[one.url, two.url], backend_capacity=1)
        victim = await submit(api.http, long_job(steps=150, prompt="victim"))
        bystander = await submit(api.http, long_job(steps=40, prompt="bystander"))
        await wait_status(api.http, victim["id"], "running")
        await wait_status(api.http, bystander["id"], "running")

        response = await api.http.post(f"/api/v2/jobs/{victim['id']}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] in {"canceling", "canceled"}

        canceled = await finish(api.http, victim["id"])
        survived = await finish(api.http, bystander["id"])
        assert canceled["status"] == "canceled"
        assert canceled["progress"]["value"] < 1.0
        assert survived["status"] == "succeeded" and len(survived["outputs"]) == 1
        assert canceled["backend"] != survived["backend"]


async def test_cancel_finished_job_is_a_no_op(start_api: StartApi) -> None:
    api = await start_api()
    job = await submit(api.http, long_job(steps=2))
    done = await finish(api.http, job["id"])
    response = await api.http.post(f"/api/v2/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == done["status"] == "succeeded"


async def test_cancel_unknown_job_is_404(start_api: StartApi) -> None:
    api = await start_api()
    response = await api.http.post("/api/v2/jobs/nope/cancel")
    assert response.status_code == 404
