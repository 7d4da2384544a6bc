"""Helpers for job tests: follow a job's SSE stream until a status, or to its end."""

from __future__ import annotations

import json
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled", "expired"}


async def stream_events(
    http: httpx.AsyncClient, job_id: str, *, until: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """SSE frames of the job until the stream ends, or until a ``status`` equal to ``until``."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with http.stream("GET", f"/api/v2/jobs/{job_id}/events") as response:
        assert response.status_code == 200, await response.aread()
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                events.append((name, data))
                if until is not None and name == "status" and data["status"] == until:
                    return events
    return events


async def wait_status(http: httpx.AsyncClient, job_id: str, status: str) -> None:
    """Return once the job reports ``status`` (fails if it ends in another state first)."""
    events = await stream_events(http, job_id, until=status)
    statuses = [d["status"] for n, d in events if n == "status"]
    assert statuses and statuses[-1] == status, statuses


async def finish(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """Follow the job to its terminal status and return the job object."""
    await stream_events(http, job_id)
    job: dict[str, Any] = (await http.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["status"] in TERMINAL, job["status"]
    return job


async def submit(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/api/v2/jobs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def long_job(steps: int = 100, prompt: str = "a long render") -> dict[str, Any]:
    return {
        "template": "txt2img",
        "params": {"prompt": prompt, "steps": steps, "width": 64, "height": 64},
    }
