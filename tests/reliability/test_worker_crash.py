"""Workers SIGKILLed mid-job on PostgreSQL: nothing lost, nothing completed or run twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.engine import EngineProcess, start_cli, stop_process
from tests.fixtures.servers import ServerProcess
from tests.integration.jobs_support import TERMINAL, finish, long_job, submit

RESULTS = Path(os.environ.get("SAKUGA_RELIABILITY_OUT", "bench/results")) / "worker-crash.json"


@dataclass
class Worker:
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        process, _ = start_cli(["worker", *args], "sakuga worker ready")
        started.append(Worker(process))
        return started[-1]

    yield start
    for worker in started:
        stop_process(worker.process, signal.SIGKILL)


def shared_options(database_url: str, backend: str, tmp_path: Path) -> tuple[str, ...]:
    """Options every process of one deployment shares; short leases for fast takeovers."""
    return (
        "--database-url", database_url, "--backends", backend, "--data-dir", str(tmp_path / "d"),
        "--lease-s", "2", "--heartbeat-s", "0.5", "--poll-s", "0.2",
    )  # fmt: skip


async def jobs_state(http: httpx.AsyncClient, ids: list[str]) -> list[dict[str, object]]:
    return [(await http.get(f"/api/v2/jobs/{i}")).json() for i in ids]


def owner_pid(job: dict[str, object]) -> int | None:
    """The pid inside the worker id of the job's open attempt (``host-pid-hex``)."""
    attempts = job["attempts"]
    assert isinstance(attempts, list)
    open_attempts = [a for a in attempts if a["finished_at"] is None]
    if not open_attempts:
        return None
    return int(str(open_attempts[-1]["worker_id"]).rsplit("-", 2)[-2])


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigkilled_workers_lose_nothing(
    pg_url: str,
    tmp_path: Path,
    engine_process: Callable[..., EngineProcess],
    server_process: Callable[..., ServerProcess],
    workers: Callable[..., Worker],
) -> None:
    engine = engine_process("--step-s", "0.05")
    common = shared_options(pg_url, engine.url, tmp_path)
    api = server_process(*common, "--no-workers")
    pool = {w.pid: w for w in (workers(*common) for _ in range(3))}
    kills: list[float] = []
    recoveries: list[float] = []
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        ids = [(await submit(http, long_job(steps=20, prompt=f"job {i}")))["id"] for i in range(8)]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            states = await jobs_state(http, ids)
            if all(s["status"] in TERMINAL for s in states):
                break
            running = [s for s in states if s["status"] == "running" and owner_pid(s) in pool]
            if running and len(kills) < 4:
                victim = pool.pop(owner_pid(running[0]))  # type: ignore[arg-type]
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait(timeout=10)
                kills.append(time.monotonic())
                recoveries.append(await _recovery_s(http, str(running[0]["id"]), victim.pid))
                replacement = workers(*common)
                pool[replacement.pid] = replacement
            else:
                await asyncio.sleep(0.1)  # poll cadence of an outside observer, not a wait-for
        finals = await jobs_state(http, ids)

    async with httpx.AsyncClient(base_url=engine.url, timeout=5) as http:
        history = (await http.get("/history")).json()
    lost = [f["id"] for f in finals if f["status"] != "succeeded"]
    duplicates = [f["id"] for f in finals if len(f["outputs"]) != 1]  # type: ignore[arg-type]
    prompts = {a["prompt_id"] for f in finals for a in f["attempts"]}  # type: ignore[union-attr]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "jobs": len(ids),
                "kills": len(kills),
                "lost": len(lost),
                "duplicate_completions": len(duplicates),
                "engine_runs": len(history),
                "recovery_s": recoveries,
            },
            indent=2,
        )
    )
    assert len(kills) >= 2
    assert lost == [] and duplicates == []
    assert len(history) == len(ids) == len(prompts)  # each job ran exactly once on the GPU


async def _recovery_s(http: httpx.AsyncClient, job_id: str, dead_pid: int) -> float:
    """Seconds until another worker holds the killed worker's job (or it finished)."""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        job = (await http.get(f"/api/v2/jobs/{job_id}")).json()
        pid = owner_pid(job)
        if job["status"] in TERMINAL or (pid is not None and pid != dead_pid):
            return round(time.monotonic() - started, 3)
        await asyncio.sleep(0.05)  # observer's poll cadence
    raise AssertionError(f"job {job_id} was not taken over within 60 s")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigkilled_api_loses_nothing(
    pg_url: str,
    tmp_path: Path,
    engine_process: Callable[..., EngineProcess],
    server_process: Callable[..., ServerProcess],
    workers: Callable[..., Worker],
) -> None:
    engine = engine_process("--step-s", "0.05")
    common = shared_options(pg_url, engine.url, tmp_path)
    workers(*common)
    first = server_process(*common, "--no-workers")
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        ids = [(await submit(http, long_job(steps=10, prompt=f"j{i}")))["id"] for i in range(4)]
    first.stop(signal.SIGKILL)
    second = server_process(*common, "--no-workers")
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        finals = [await finish(http, i) for i in ids]
    assert [f["status"] for f in finals] == ["succeeded"] * 4
    async with httpx.AsyncClient(base_url=engine.url, timeout=5) as http:
        assert len((await http.get("/history")).json()) == 4
