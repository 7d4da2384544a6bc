"""What a run leaves behind for an operator: backend telemetry on each attempt, log lines
naming the job, attempt and backend, and a request id on every response and its log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sakuga.comfy.client import ComfyClient
from sakuga.logs import ContextFilter, JsonFormatter
from sakuga.worker.telemetry import (
    AFTER_WINDOW_S,
    Readings,
    Sampler,
    device_figures,
    sample,
    telemetry_record,
)
from tests.fixtures.api import RunningApi
from tests.integration.jobs_support import finish, long_job, submit

VRAM = {"vram_total", "vram_free", "torch_vram_total", "torch_vram_free"}


class Capture(logging.Handler):
    """JSON lines as the server's own handler would write them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []
        self.addFilter(ContextFilter())
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def json_logs() -> Iterator[Capture]:
    """Capture INFO lines from every logger through the root logger."""
    root = logging.getLogger()
    capture, level = Capture(), root.level
    root.addHandler(capture)
    root.setLevel(logging.INFO)
    yield capture
    root.removeHandler(capture)
    root.setLevel(level)


def engine_url(api: RunningApi) -> str:
    return api.services.backends.backends["embedded"].client.base_url


async def attempts_with_telemetry(api: RunningApi, job_id: str) -> list[dict[str, Any]]:
    """The job's attempts once the last one has its telemetry (written after the outcome)."""
    deadline = time.monotonic() + 5.0
    while True:
        attempts: list[dict[str, Any]] = (await api.http.get(f"/api/v2/jobs/{job_id}")).json()[
            "attempts"
        ]
        if attempts and attempts[-1]["telemetry"] is not None:
            return attempts
        assert time.monotonic() < deadline, attempts
        await asyncio.sleep(0.05)


# -- telemetry ------------------------------------------------------------------------------


async def test_attempts_carry_vram_before_and_after_from_system_stats(api: RunningApi) -> None:
    final = await finish(api.http, (await submit(api.http, long_job(steps=3)))["id"])
    assert final["status"] == "succeeded"
    (attempt,) = await attempts_with_telemetry(api, final["id"])
    telemetry = attempt["telemetry"]
    assert telemetry["device"] == "cpu"  # the embedded engine's one device
    for moment in ("before", "after"):
        figures = telemetry[moment]
        assert set(figures) == VRAM
        assert figures["vram_total"] > 0
        assert 0 <= figures["vram_free"] <= figures["vram_total"]


async def test_a_failed_attempt_keeps_its_telemetry(api: RunningApi) -> None:
    async with httpx.AsyncClient(base_url=engine_url(api), timeout=5) as http:
        await http.post("/sakuga/faults", json={"fail_node": "VAEDecode"})
    final = await finish(api.http, (await submit(api.http, long_job(steps=2)))["id"])
    assert final["status"] == "failed"
    (attempt,) = await attempts_with_telemetry(api, final["id"])
    assert attempt["error"]["code"] == "node_execution_error"
    assert attempt["telemetry"]["after"]["vram_total"] > 0


def stats_client(handler: Any) -> ComfyClient:
    return ComfyClient("http://gpu.test", transport=httpx.MockTransport(handler))


async def test_a_backend_without_system_stats_gives_no_figure() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="no such route")

    async with stats_client(broken) as client:
        assert await sample(client, timeout_s=1.0) is None
        sampler = Sampler(client, Readings(), timeout_s=1.0, fresh_s=5.0)
        sampler.start()
        assert await sampler.result(time.monotonic() - AFTER_WINDOW_S) is None


async def test_a_hanging_system_stats_is_abandoned_at_its_deadline() -> None:
    async def hanging(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json={})

    async with stats_client(hanging) as client:
        started = time.monotonic()
        sampler = Sampler(client, Readings(), timeout_s=0.1, fresh_s=5.0)
        sampler.start()
        assert await sampler.result(time.monotonic() - AFTER_WINDOW_S) is None
        assert time.monotonic() - started < 1.0


async def test_attempts_ending_together_share_one_after_reading() -> None:
    # A fake backend (MockTransport) because the test counts the requests it receives.
    asked: list[float] = []

    def stats(request: httpx.Request) -> httpx.Response:
        asked.append(time.monotonic())
        device = {"name": "cuda:0", "vram_total": 8, "vram_free": len(asked)}
        return httpx.Response(200, json={"devices": [device]})

    async with stats_client(stats) as client:
        readings = Readings()
        ended = time.monotonic()
        first, second = await asyncio.gather(
            readings.after(client, ended, 1.0, window_s=0.05),
            readings.after(client, ended + 0.01, 1.0, window_s=0.05),
        )
        assert len(asked) == 1 and first == second and first is not None
        assert asked[0] >= ended + 0.05  # taken after the window, so after both ended
        # An attempt that ends after that reading gets a fresh one.
        later = await readings.after(client, time.monotonic(), 1.0, window_s=0.0)
        assert len(asked) == 2 and later is not None and later["vram_free"] == 2


async def test_a_recent_probe_reading_is_the_before_figure() -> None:
    readings = Readings()
    readings.record({"devices": [{"name": "cuda:0", "vram_total": 8, "vram_free": 5}]})
    assert readings.recent(5.0) == {"name": "cuda:0", "vram_total": 8, "vram_free": 5}
    assert readings.recent(0.0) is None  # older than allowed


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (
            {"devices": [{"name": "cuda:0 RTX", "vram_total": 8, "vram_free": 3, "x": 1}]},
            {"name": "cuda:0 RTX", "vram_total": 8, "vram_free": 3},
        ),
        ({"devices": [{"name": "cpu", "vram_total": "8"}]}, {"name": "cpu"}),
        ({"devices": []}, None),
        ({"system": {}}, None),
        (["not", "a", "dict"], None),
    ],
)
def test_device_figures_keep_the_first_device_numbers(stats: Any, expected: Any) -> None:
    assert device_figures(stats) == expected


def test_the_record_names_the_device_and_keeps_a_missing_side_empty() -> None:
    before = {"name": "cuda:0", "vram_free": 5}
    assert telemetry_record(before, None) == {
        "device": "cuda:0",
        "before": {"vram_free": 5},
        "after": None,
    }
    assert telemetry_record(None, None) is None


# -- logs -----------------------------------------------------------------------------------


async def test_every_line_of_a_run_names_its_job_attempt_and_backend(
    api: RunningApi, json_logs: Capture
) -> None:
    ok = await finish(api.http, (await submit(api.http, long_job(steps=2)))["id"])
    async with httpx.AsyncClient(base_url=engine_url(api), timeout=5) as http:
        await http.post("/sakuga/faults", json={"fail_node": "VAEDecode"})
    bad = await finish(api.http, (await submit(api.http, long_job(steps=2)))["id"])

    for job, status in ((ok, "succeeded"), (bad, "failed")):
        lines = [line for line in json_logs.lines if line.get("job_id") == job["id"]]
        assert any(line["message"] == f"job {status}" for line in lines), lines
        for line in lines:
            assert line["attempt"] == 1 and line["backend"] == "embedded", line
    (outcome,) = [line for line in json_logs.lines if line["message"] == "job succeeded"]
    assert outcome["logger"] == "sakuga.worker.runner"
    assert outcome["execution_s"] > 0 and outcome["queue_s"] >= 0
    failed = [line for line in json_logs.lines if line.get("job_id") == bad["id"]]
    assert any(line["level"] == "WARNING" for line in failed)


# -- request ids ----------------------------------------------------------------------------


async def test_every_response_carries_a_request_id(api: RunningApi) -> None:
    first = await api.http.get("/api/v2/templates")
    second = await api.http.get("/api/v2/jobs/does-not-exist")
    assert second.status_code == 404
    ids = [r.headers["X-Request-Id"] for r in (first, second)]
    assert all(ids) and ids[0] != ids[1]
    for response in (first, second):
        assert response.headers["X-Comfy-Request-Id"] == response.headers["X-Request-Id"]
        assert len(response.headers.get_list("X-Request-Id")) == 1


async def test_a_callers_request_id_is_kept_when_well_formed(api: RunningApi) -> None:
    kept = await api.http.get("/healthz", headers={"X-Request-Id": "trace-7f3a.1"})
    assert kept.headers["X-Request-Id"] == "trace-7f3a.1"
    replaced = await api.http.get("/healthz", headers={"X-Request-Id": "bad id <script>"})
    assert replaced.headers["X-Request-Id"] not in {"", "bad id <script>"}


async def test_a_requests_log_lines_carry_its_request_id(
    api: RunningApi, json_logs: Capture
) -> None:
    access = logging.getLogger("uvicorn.access")  # uvicorn's own handler; tests run it quiet
    level = access.level
    access.addHandler(json_logs)
    access.setLevel(logging.INFO)
    try:
        response = await api.http.get("/healthz", headers={"X-Request-Id": "req-access-1"})
    finally:
        access.removeHandler(json_logs)
        access.setLevel(level)
    assert response.status_code == 200
    (line,) = [line for line in json_logs.lines if line["logger"] == "uvicorn.access"]
    assert "/healthz" in line["message"]
    assert line["request_id"] == "req-access-1"
