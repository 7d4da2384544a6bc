"""A server killed mid-job and restarted re-attaches to the prompt; the engine runs it once."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fixtures.engine import EngineProcess
from tests.fixtures.servers import ServerProcess
from tests.integration.jobs_support import finish, long_job, submit, wait_status


@pytest.mark.timeout(90)
async def test_sigkilled_server_reattaches_on_restart(
    db_url: str,
    tmp_path: Path,
    engine_process: Callable[..., EngineProcess],
    server_process: Callable[..., ServerProcess],
) -> None:
    engine = engine_process("--step-s", "0.05")
    args = (
        "--backends", engine.url, "--database-url", db_url,
        "--data-dir", str(tmp_path / "data"), "--lease-s", "2", "--heartbeat-s", "0.5",
    )  # fmt: skip
    first = server_process(*args)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        job = await submit(http, long_job(steps=60))
        await wait_status(http, job["id"], "running")
    first.stop(signal.SIGKILL)

    second = server_process(*args)
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        final = await finish(http, job["id"])
    assert final["status"] == "succeeded", final["error"]
    prompts = {a["prompt_id"] for a in final["attempts"]}
    assert len(final["attempts"]) == 2 and len(prompts) == 1
    async with httpx.AsyncClient(base_url=engine.url, timeout=5) as http:
        history = (await http.get("/history")).json()
    assert list(history) == list(prompts)
    saved = list((engine.data_dir / "output").rglob("*.png"))
    assert len(saved) == 1


@pytest.mark.timeout(90)
async def test_sigterm_stops_cleanly_and_hands_the_job_over(
    tmp_path: Path,
    engine_process: Callable[..., EngineProcess],
    server_process: Callable[..., ServerProcess],
) -> None:
    engine = engine_process("--step-s", "0.05")
    args = (
        "--backends", engine.url, "--database-url", f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
        "--data-dir", str(tmp_path / "data"), "--lease-s", "30",
    )  # fmt: skip
    first = server_process(*args)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        job = await submit(http, long_job(steps=60))
        await wait_status(http, job["id"], "running")
    # uvicorn shuts down gracefully, then re-raises the signal: -15 is the clean exit.
    assert first.stop(signal.SIGTERM) in (0, -signal.SIGTERM)

    # The lease is 30 s: finishing well inside the test timeout proves it was released.
    second = server_process(*args)
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        final = await finish(http, job["id"])
    assert final["status"] == "succeeded", final["error"]
    assert len({a["prompt_id"] for a in final["attempts"]}) == 1
