"""Backend faults in this issue's scope: nothing hangs, every outcome is recorded honestly."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx

from tests.fixtures.api import StartApi
from tests.fixtures.engine import EngineFactory, EngineProcess
from tests.integration.jobs_support import finish, long_job, submit, wait_status


async def set_faults(url: str, **faults: object) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        response = await http.post("/sakuga/faults", json=faults)
        assert response.status_code == 200, response.text


async def test_silent_engine_job_completes_from_history(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.05) as engine:
        api = await start_api(
            backends=[engine.url], silence_timeout_s=0.5, history_poll_s=0.1, job_timeout_s=20
        )
        job = await submit(api.http, long_job(steps=30))
        await wait_status(api.http, job["id"], "running")
        await set_faults(engine.url, silent=True)
        final = await finish(api.http, job["id"])
        assert final["status"] == "succeeded", final["error"]
        assert len(final["outputs"]) == 1


async def test_dropped_websocket_job_still_completes(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.02) as engine:
        api = await start_api(backends=[engine.url], history_poll_s=0.1)
        await set_faults(engine.url, drop_ws=True)
        final = await finish(api.http, (await submit(api.http, long_job(steps=10)))["id"])
        assert final["status"] == "succeeded", final["error"]


async def test_node_failure_fails_the_job_with_the_backend_message(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as engine:
        api = await start_api(backends=[engine.url])
        await set_faults(engine.url, fail_node="VAEDecode")
        final = await finish(api.http, (await submit(api.http, long_job(steps=3)))["id"])
        assert final["status"] == "failed"
        error = final["error"]
        assert error["code"] == "node_execution_error"
        assert error["class_type"] == "VAEDecode" and error["node_id"]
        assert engine.url in error["message"]
        assert final["attempts"][0]["error"]["code"] == "node_execution_error"


async def test_killed_engine_fails_the_job_naming_the_backend(
    engine_process: Callable[..., EngineProcess], start_api: StartApi
) -> None:
    proc = engine_process("--step-s", "0.05")
    api = await start_api(
        backends=[proc.url],
        connect_timeout_s=1.0,
        history_poll_s=0.1,
        silence_timeout_s=1.0,
        retry_attempts=1,  # retries are tested on their own; here: no hang, honest error
    )
    job = await submit(api.http, long_job(steps=150))
    await wait_status(api.http, job["id"], "running")
    proc.stop(signal.SIGKILL)
    final = await finish(api.http, job["id"])
    assert final["status"] == "failed"
    assert proc.url in final["error"]["message"]
    assert final["error"]["code"] in {"backend_unreachable", "backend_lost"}


async def test_job_past_its_deadline_fails_and_frees_the_backend(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.05) as engine:
        api = await start_api(backends=[engine.url], job_timeout_s=1.0, retry_attempts=1)
        final = await finish(api.http, (await submit(api.http, long_job(steps=150)))["id"])
        assert final["status"] == "failed"
        assert final["error"]["code"] == "backend_timeout"
        assert "job_s=1.0" in final["error"]["message"]
        after = await finish(api.http, (await submit(api.http, long_job(steps=2)))["id"])
        assert after["status"] == "succeeded"
        # The prompt past its deadline was interrupted, not left to hold the engine.
        prompt_id = final["attempts"][0]["prompt_id"]
        async with httpx.AsyncClient(base_url=engine.url, timeout=5) as http:
            entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
        kinds = [message[0] for message in entry["status"]["messages"]]
        assert "execution_interrupted" in kinds


async def test_job_on_a_backend_silent_from_the_start_still_reports_running(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine(step_s=0.01) as engine:
        await set_faults(engine.url, silent=True)
        api = await start_api(backends=[engine.url], silence_timeout_s=0.3, history_poll_s=0.1)
        final = await finish(api.http, (await submit(api.http, long_job(steps=5)))["id"])
        assert final["status"] == "succeeded", final["error"]
        assert final["started_at"] is not None and len(final["outputs"]) == 1
