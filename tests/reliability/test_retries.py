"""Classified failures: transient ones heal by retry, permanent ones fail at once, poison stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlparse

import httpx
import pytest

from tests.fixtures.api import StartApi
from tests.fixtures.engine import EngineFactory, EngineProcess
from tests.integration.jobs_support import finish, long_job, submit


async def set_faults(url: str, **faults: object) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        assert (await http.post("/sakuga/faults", json=faults)).status_code == 200


async def engine_prompts(url: str) -> dict[str, dict[str, object]]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        history: dict[str, dict[str, object]] = (await http.get("/history")).json()
    return history


@pytest.mark.timeout(90)
async def test_backend_crash_mid_run_heals_by_retry(
    engine_process: Callable[..., EngineProcess], start_api: StartApi
) -> None:
    crashing = engine_process("--step-s", "0.05", "--crash-at-step", "5")
    port = str(urlparse(crashing.url).port)
    api = await start_api(
        backends=[crashing.url],
        connect_timeout_s=0.5,
        silence_timeout_s=0.5,
        history_poll_s=0.1,
        retry_attempts=30,
        retry_base_s=0.2,
        retry_cap_s=0.5,
    )
    job = await submit(api.http, long_job(steps=20))
    await asyncio.to_thread(crashing.process.wait, 30)
    # The backend comes back on the same address, as a restarted ComfyUI would.
    engine_process("--port", port, "--step-s", "0.01")
    final = await finish(api.http, job["id"])
    assert final["status"] == "succeeded", final["error"]
    first = final["attempts"][0]
    assert first["error"]["code"] in {"backend_unreachable", "backend_lost"}
    assert crashing.url in first["error"]["message"]
    assert len(final["attempts"]) >= 2


async def test_permanent_error_fails_at_once(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as engine:
        api = await start_api(backends=[engine.url], retry_attempts=5)
        await set_faults(engine.url, fail_node="KSampler")
        final = await finish(api.http, (await submit(api.http, long_job(steps=3)))["id"])
        assert final["status"] == "failed"
        assert len(final["attempts"]) == 1
        assert final["error"]["class_type"] == "KSampler"


async def test_repeated_out_of_memory_fails_as_poison(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as engine:
        api = await start_api(backends=[engine.url], retry_attempts=10, poison_strikes=3)
        await set_faults(engine.url, oom=True)
        final = await finish(api.http, (await submit(api.http, long_job(steps=3)))["id"])
        assert final["status"] == "failed"
        assert final["error"]["code"] == "poison"
        assert "out of memory" in final["error"]["message"].lower()
        codes = [a["error"]["code"] for a in final["attempts"]]
        assert codes == ["out_of_memory"] * 3
        assert len(await engine_prompts(engine.url)) == 3


async def test_out_of_memory_retries_on_another_backend(
    make_engine: EngineFactory, start_api: StartApi
) -> None:
    async with make_engine() as sick, make_engine() as healthy:
        await set_faults(sick.url, oom=True)
        api = await start_api(
            backends=[sick.url, healthy.url], backend_capacity=1, retry_base_s=0.0
        )
        jobs = [await submit(api.http, long_job(steps=3, prompt=f"job {i}")) for i in range(4)]
        finals = [await finish(api.http, j["id"]) for j in jobs]
        assert all(f["status"] == "succeeded" for f in finals), [f["attempts"] for f in finals]
        for final in finals:
            assert final["attempts"][-1]["backend"] == healthy.url
            failed = [a for a in final["attempts"] if a["error"]]
            assert all(a["backend"] == sick.url for a in failed)
