"""A job end to end: API -> store -> worker -> embedded engine -> artifact, on both stores."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fixtures.api import RunningApi

BLANK_WORKFLOW: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "raw"}},
}


async def read_events(http: httpx.AsyncClient, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every SSE frame of the job until the server ends the stream."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with http.stream("GET", f"/api/v2/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    return events


async def wait_terminal(api: RunningApi, job_id: str) -> dict[str, Any]:
    events = await read_events(api.http, job_id)
    assert events[-1][0] == "status"
    job = (await api.http.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["status"] == events[-1][1]["status"]
    return job


async def test_template_job_renders_an_image(api_any_db: RunningApi) -> None:
    api = api_any_db
    response = await api.http.post(
        "/api/v2/jobs",
        json={
            "template": "txt2img",
            "params": {"prompt": "a red fox", "width": 128, "height": 96, "steps": 12},
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "queued"
    assert created["params"]["seed"] is not None
    assert created["urls"]["self"].startswith("http://127.0.0.1:")

    job = await wait_terminal(api, created["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["value"] == 1.0
    assert len(job["outputs"]) == 1
    output = job["outputs"][0]
    assert output["type"] == "image" and output["content_type"] == "image/png"
    content = await api.http.get(f"/api/v2/assets/{output['id']}/content")
    assert content.status_code == 200
    assert len(content.content) == output["size_bytes"]
    image = Image.open(__import__("io").BytesIO(content.content))
    assert image.size == (128, 96)
    assert [a["backend"] for a in job["attempts"]] == ["embedded"]
    assert job["started_at"] is not None and job["completed_at"] is not None


async def test_raw_workflow_job_succeeds(api_any_db: RunningApi) -> None:
    api = api_any_db
    response = await api.http.post("/api/v2/jobs", json={"workflow": BLANK_WORKFLOW})
    assert response.status_code == 201, response.text
    job = await wait_terminal(api, response.json()["id"])
    assert job["status"] == "succeeded"
    assert [o["node_id"] for o in job["outputs"]] == ["3"]
    workflow = (await api.http.get(f"/api/v2/jobs/{job['id']}/workflow")).json()
    assert workflow == {"workflow": BLANK_WORKFLOW, "format": "api"}


async def test_progress_events_are_ordered_and_end_with_terminal_status(
    start_api: Any,
) -> None:
    api = await start_api(engine_step_s=0.05)
    response = await api.http.post(
        "/api/v2/jobs", json={"template": "txt2img", "params": {"prompt": "waves", "steps": 12}}
    )
    events = await read_events(api.http, response.json()["id"])
    names = [n for n, _ in events]
    assert names[0] == "status"
    values = [d["value"] for n, d in events if n == "progress"]
    assert len([v for v in values if 0 < v < 1]) >= 3, values
    assert values == sorted(values)
    assert names[-1] == "status" and events[-1][1]["status"] == "succeeded"
    last_output = max(i for i, n in enumerate(names) if n == "output")
    assert last_output < len(names) - 1


async def test_list_pages_with_cursor(api: RunningApi) -> None:
    ids = []
    for _ in range(5):
        response = await api.http.post("/api/v2/jobs", json={"workflow": BLANK_WORKFLOW})
        ids.append(response.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.http.get("/api/v2/jobs", params=params)).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == list(reversed(ids))


async def test_unknown_job_is_404_envelope(api: RunningApi) -> None:
    response = await api.http.get("/api/v2/jobs/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/api/v2/health", "/api/v2/templates"])
async def test_health_and_templates_answer(api: RunningApi, path: str) -> None:
    response = await api.http.get(path)
    assert response.status_code == 200, response.text
