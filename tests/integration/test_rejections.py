"""Every doomed request is a 4xx naming the field, and creates no job row."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from sakuga.store import tables as t
from tests.fixtures.api import RunningApi
from tests.integration.test_jobs_api import BLANK_WORKFLOW


async def job_rows(api: RunningApi) -> int:
    def work(conn: Connection) -> int:
        return int(conn.scalar(select(func.count()).select_from(t.jobs)) or 0)

    return await api.services.store.db.read(work)


def txt2img(**params: Any) -> dict[str, Any]:
    return {"template": "txt2img", "params": {"prompt": "a cat", **params}}


def with_node(node_id: str, node: dict[str, Any]) -> dict[str, Any]:
    return {"workflow": {**BLANK_WORKFLOW, node_id: node}}


CASES: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("ultra-wide", txt2img(width=4096, height=256), 422, "invalid_request", "aspect ratio"),
    ("not multiple of 8", txt2img(width=1001), 422, "invalid_request", "multiple of 8"),
    ("too small", txt2img(width=8, height=8), 422, "invalid_request", "params.width"),
    ("too large", txt2img(width=4096, height=4096), 422, "invalid_request", "params.width"),
    ("zero steps", txt2img(steps=0), 422, "invalid_request", "params.steps"),
    ("prompt too long", txt2img(prompt="x" * 5000), 422, "invalid_request", "params.prompt"),
    ("unknown param", txt2img(colour="red"), 422, "invalid_request", "colour"),
    ("unknown template", {"template": "nope", "params": {}}, 422, "invalid_request", "txt2img"),
    (
        "unknown checkpoint",
        txt2img(checkpoint="nope.safetensors"),
        422,
        "invalid_workflow",
        "nope.safetensors",
    ),
    (
        "ui format",
        {"workflow": {"nodes": [], "links": [], "last_node_id": 1}},
        422,
        "workflow_format_ui",
        "API",
    ),
    (
        "unknown class",
        with_node("9", {"class_type": "NoSuchNode", "inputs": {}}),
        422,
        "invalid_workflow",
        "NoSuchNode",
    ),
    (
        "missing required input",
        with_node("2", {"class_type": "ImageInvert", "inputs": {}}),
        422,
        "invalid_workflow",
        "image",
    ),
    (
        "link to missing node",
        with_node(
            "9",
            {"class_type": "SaveImage", "inputs": {"images": ["77", 0], "filename_prefix": "x"}},
        ),
        422,
        "invalid_workflow",
        "77",
    ),
    (
        "link to missing slot",
        with_node(
            "9", {"class_type": "SaveImage", "inputs": {"images": ["1", 5], "filename_prefix": "x"}}
        ),
        422,
        "invalid_workflow",
        "slot",
    ),
    ("no workflow", {}, 422, "invalid_request", "workflow"),
    ("workflow not an object", {"workflow": [1, 2]}, 422, "invalid_request", "workflow"),
    ("extra field", {"workflow": BLANK_WORKFLOW, "bogus": 1}, 422, "invalid_request", "bogus"),
]


@pytest.mark.parametrize(
    "body, status, code, mention", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_rejected_request_creates_nothing(
    api: RunningApi, body: dict[str, Any], status: int, code: str, mention: str
) -> None:
    response = await api.http.post("/api/v2/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert mention in error["message"] + str(error["details"])
    assert await job_rows(api) == 0


async def test_invalid_workflow_keeps_comfyui_node_errors(api: RunningApi) -> None:
    body = with_node("2", {"class_type": "ImageInvert", "inputs": {}})
    error = (await api.http.post("/api/v2/jobs", json=body)).json()["error"]
    node = error["details"]["node_errors"]["2"]
    assert node["errors"][0]["type"] == "required_input_missing"
    assert node["errors"][0]["extra_info"]["input_name"] == "image"


async def test_not_json_is_a_clear_400(api: RunningApi) -> None:
    response = await api.http.post(
        "/api/v2/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"] == "invalid_request"
    assert await job_rows(api) == 0


async def test_plain_template_job_without_optional_fields_is_accepted(api: RunningApi) -> None:
    response = await api.http.post("/api/v2/jobs", json=txt2img())
    assert response.status_code == 201, response.text
    assert await job_rows(api) == 1
