"""What a benchmark client sends and waits for: submit bodies and the SSE terminal status."""

from __future__ import annotations

import json
from typing import Any

import httpx

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
TEMPLATES = ("blank", "txt2img")
REQUEST_TIMEOUT_S = 10.0


def submit_body(template: str, index: int) -> dict[str, Any]:
    """A small job of ``template``; ``index`` varies it so the engine's cache never hits."""
    if template == "blank":
        return {"template": "blank", "params": {"color": index % 0xFFFFFF}}
    if template == "txt2img":
        # No seed: the server draws a fresh one, so every job renders anew.
        params = {"prompt": f"bench {index}", "width": 64, "height": 64, "steps": 1}
        return {"template": "txt2img", "params": params}
    raise ValueError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")


def http_client(url: str, connections: int) -> httpx.AsyncClient:
    """HTTP/1.1 keep-alive client with at most ``connections`` sockets to 127.0.0.1."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S)


async def submit(http: httpx.AsyncClient, template: str, index: int) -> str:
    """POST one job; returns its id, raises ``httpx.HTTPStatusError`` unless 201."""
    response = await http.post("/api/v2/jobs", json=submit_body(template, index))
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


async def wait_terminal(http: httpx.AsyncClient, job_id: str) -> str:
    """Follow the job's SSE stream to its terminal ``status`` frame; returns that status."""
    event = ""
    async with http.stream("GET", f"/api/v2/jobs/{job_id}/events") as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "status":
                status: str = json.loads(line[5:])["status"]
                if status in TERMINAL:
                    return status
    raise RuntimeError(f"event stream of job {job_id} ended without a terminal status")
