"""The official comfy-sdk 0.5.0 client, unchanged, against a live sakuga (API-V2 §8, §10).

Each test starts sakuga's real API, workers and embedded engine on 127.0.0.1 (port from the
OS) inside the test's event loop, points ``COMFY_BASE_URL`` at it, and drives the SDK. The
sync client blocks, so it is always called through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from comfy_low.models import Asset as LowAsset
from comfy_low.models import Job as LowJob
from comfy_low.models import JobWorkflowResponse, StatusEvent
from comfy_low.models import Output as LowOutput
from comfy_low.models import Progress as LowProgress
from comfy_sdk import (
    AsyncComfy,
    Comfy,
    IdempotencyKeyReuse,
    InvalidWorkflow,
    Job,
    JobFailed,
    NotFound,
    OutputReady,
    Progress,
    StatusChange,
    WorkflowFormatUi,
)
from comfy_sdk.jobs import JobSummary
from pydantic import AwareDatetime, TypeAdapter

from tests.e2e.sdk_support import (
    SAVE_NODE,
    TXT2IMG_SAVE_NODE,
    HttpLog,
    blank_invert,
    image_size,
    load_invert,
    pixel,
    png,
    set_fault,
    txt2img_graph,
    wait_for_status,
)
from tests.fixtures.api import RunningApi, StartApi

AWARE = TypeAdapter(AwareDatetime)
TERMINAL = {"succeeded", "failed", "canceled", "expired"}


@dataclass
class Sdk:
    """A running sakuga and a sync comfy-sdk client pointed at it."""

    api: RunningApi
    client: Comfy
    log: HttpLog

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking SDK call off the loop the server runs on."""
        return await asyncio.to_thread(fn, *args, **kwargs)


Connect = Callable[..., Awaitable[Sdk]]


def point_sdk_at(monkeypatch: pytest.MonkeyPatch, api: RunningApi) -> None:
    monkeypatch.setenv("COMFY_BASE_URL", api.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)


@pytest.fixture
async def connect(start_api: StartApi, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Connect]:
    """Factory: ``await connect(**settings)`` starts sakuga and a client; both closed after."""
    clients: list[Comfy] = []

    async def connect_(**settings: Any) -> Sdk:
        api = await start_api(**settings)
        point_sdk_at(monkeypatch, api)
        client = Comfy(timeout=10)
        clients.append(client)
        log = HttpLog()
        log.attach(client)
        return Sdk(api, client, log)

    yield connect_
    for client in clients:
        client.close()


@pytest.fixture
async def sdk(connect: Connect) -> Sdk:
    return await connect()


async def raw_job(api: RunningApi, job_id: str) -> dict[str, Any]:
    response = await api.http.get(f"/api/v2/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def content(api: RunningApi, asset_id: str) -> bytes:
    response = await api.http.get(f"/api/v2/assets/{asset_id}/content")
    assert response.status_code == 200, response.text
    return response.content


# -- 1. construction ---------------------------------------------------------------------


async def test_client_targets_sakuga_without_credentials(sdk: Sdk) -> None:
    """COMFY_BASE_URL selects sakuga; with no COMFY_API_KEY the client sends no key."""
    assert repr(sdk.client) == f"Comfy(base_url={sdk.api.url!r}, authenticated=False)"


# -- 2. run and download -------------------------------------------------------------------


async def test_run_downloads_the_stored_output(sdk: Sdk) -> None:
    """run() ends succeeded; to_bytes() is the stored artifact, a range read its first bytes."""
    workflow = blank_invert(width=40, height=24, color=0)
    job = await sdk.call(sdk.client.run, sdk.client.workflows.from_json(workflow), timeout=60)
    assert job.status == "succeeded"
    outputs = job.get_outputs(SAVE_NODE)
    assert len(outputs) == 1
    output = outputs[0]
    assert (output.type, output.content_type, output.job_id) == ("image", "image/png", job.id)

    data = await sdk.call(output.to_bytes)
    assert data == await content(sdk.api, output.id)
    assert len(data) == output.size_bytes
    assert pixel(data) == (255, 255, 255)  # black inverted
    head = await sdk.call(output.to_bytes, range=(0, 3))
    assert head == data[:4] == b"\x89PNG"

    link = await sdk.call(output.get_download_url)
    assert link.url == f"{sdk.api.url}/api/v2/assets/{output.id}/content"
    executed = await sdk.call(job.get_workflow)
    assert (executed.format, executed.graph) == ("api", workflow)
    # Polling followed the job's own absolute links; no request was refused.
    assert all(status < 400 for _, _, status in sdk.log.calls), sdk.log.calls


async def test_run_the_txt2img_template_graph(sdk: Sdk) -> None:
    """The built-in txt2img graph, submitted as a plain API-format workflow, renders."""
    graph = await txt2img_graph(sdk.api, steps=4, width=96, height=64)
    job = await sdk.call(sdk.client.run, sdk.client.workflows.from_json(graph), timeout=60)
    assert job.status == "succeeded"
    (output,) = job.get_outputs(TXT2IMG_SAVE_NODE)
    data = await sdk.call(output.to_bytes)
    assert data == await content(sdk.api, output.id)
    assert len(await sdk.call(output.to_bytes, range=(0, 3))) == 4
    assert image_size(data) == (96, 64)


# -- 3. assets -----------------------------------------------------------------------------


async def test_asset_uploads_once_then_reuses_the_blob_by_hash(sdk: Sdk) -> None:
    """First use: HEAD 404 + multipart POST. Same bytes again: HEAD 200 + from-hash."""
    image = png((250, 250, 0), size=(32, 16))
    first = sdk.client.assets.from_bytes(image, filename="in.png")
    workflow = sdk.client.workflows.from_json(load_invert())
    workflow.set_input("1", "image", first)
    job = await sdk.call(sdk.client.run, workflow, timeout=60)
    assert job.status == "succeeded"
    assert [(m, s) for m, p, s in sdk.log.calls if "/assets" in p] == [("HEAD", 404), ("POST", 201)]
    assert sdk.log.matching("POST", "/assets")[0][1] == "/api/v2/assets"
    assert first.created_new is True and first.hash == first.hash.lower()
    (output,) = job.get_outputs(SAVE_NODE)
    assert pixel(await sdk.call(output.to_bytes)) == (5, 5, 255)

    sdk.log.clear()
    second = sdk.client.assets.from_bytes(image, filename="in.png")
    again = sdk.client.workflows.from_json(load_invert())
    again.set_input("1", "image", second)
    job2 = await sdk.call(sdk.client.run, again, timeout=60)
    assert job2.status == "succeeded"
    asset_calls = [(m, p, s) for m, p, s in sdk.log.calls if "/assets" in p]
    assert [(m, s) for m, _, s in asset_calls] == [("HEAD", 200), ("POST", 200)]
    assert asset_calls[1][1] == "/api/v2/assets/from-hash"
    assert second.id == first.id and second.created_new is False
    (output2,) = job2.get_outputs(SAVE_NODE)
    assert pixel(await sdk.call(output2.to_bytes)) == (5, 5, 255)


# -- 4. live events --------------------------------------------------------------------------


async def test_events_stream_status_progress_outputs_then_terminal(connect: Connect) -> None:
    """events(): a status first, progress, every output before the terminal status, then done."""
    sdk = await connect(engine_step_s=0.05)
    graph = await txt2img_graph(sdk.api, steps=12)
    job = await sdk.call(sdk.client.submit, sdk.client.workflows.from_json(graph))
    sdk.log.clear()

    events = await sdk.call(lambda: list(job.events()))

    assert isinstance(events[0], StatusChange), events[0]
    progress = [e.value for e in events if isinstance(e, Progress)]
    assert progress and progress == sorted(progress) and progress[0] >= 0 and progress[-1] <= 1
    outputs = [i for i, e in enumerate(events) if isinstance(e, OutputReady)]
    assert outputs, events
    last = events[-1]
    assert isinstance(last, StatusChange) and last.status == "succeeded"
    assert max(outputs) < len(events) - 1
    assert all(not (isinstance(e, StatusChange) and e.status in TERMINAL) for e in events[:-1])
    ready = events[outputs[0]]
    assert isinstance(ready, OutputReady) and ready.output.node_id == TXT2IMG_SAVE_NODE
    # One stream, ended by the server after the terminal status: no reconnect, no poll.
    assert [(m, s) for m, _, s in sdk.log.calls] == [("GET", 200)], sdk.log.calls
    assert sdk.log.calls[0][1] == f"/api/v2/jobs/{job.id}/events"


# -- 5. cancel -------------------------------------------------------------------------------


async def test_cancel_a_running_job(connect: Connect) -> None:
    """cancel() on a running job answers canceling (or terminal); wait() ends canceled."""
    sdk = await connect(engine_step_s=0.05)
    graph = await txt2img_graph(sdk.api, steps=200)
    job = await sdk.call(sdk.client.submit, sdk.client.workflows.from_json(graph))
    await wait_for_status(sdk.api, job.id, {"running"})

    await sdk.call(job.cancel)
    assert job.status in {"canceling", "canceled"}
    await sdk.call(job.wait, timeout=30)
    assert job.status == "canceled"
    with pytest.raises(JobFailed):
        await sdk.call(job.result)


async def test_cancel_a_queued_job(connect: Connect) -> None:
    """A job still waiting for a slot is canceled at once and never starts."""
    sdk = await connect(engine_step_s=0.05, backend_capacity=1)
    busy = await sdk.call(
        sdk.client.submit,
        sdk.client.workflows.from_json(await txt2img_graph(sdk.api, steps=200)),
    )
    await wait_for_status(sdk.api, busy.id, {"running"})
    waiting = await sdk.call(sdk.client.submit, sdk.client.workflows.from_json(blank_invert()))
    assert waiting.status == "queued"

    await sdk.call(waiting.cancel)
    assert waiting.status == "canceled"
    await sdk.call(waiting.wait, timeout=10)
    assert waiting.status == "canceled"
    assert (await raw_job(sdk.api, waiting.id))["started_at"] is None

    await sdk.call(busy.cancel)
    await sdk.call(busy.wait, timeout=30)
    assert busy.status == "canceled"


# -- 6. idempotency --------------------------------------------------------------------------


async def test_reused_idempotency_key_is_refused(sdk: Sdk) -> None:
    """A second submit with the same key raises IdempotencyKeyReuse naming the first job."""
    key = str(uuid.uuid4())
    workflow = sdk.client.workflows.from_json(blank_invert())
    first = await sdk.call(sdk.client.submit, workflow, idempotency_key=key)
    with pytest.raises(IdempotencyKeyReuse) as refused:
        await sdk.call(sdk.client.submit, workflow, idempotency_key=key)
    assert refused.value.http_status == 422
    assert refused.value.details is not None and refused.value.details["job_id"] == first.id
    await sdk.call(first.wait, timeout=30)
    assert first.status == "succeeded"


# -- 7. errors and listing -----------------------------------------------------------------


async def test_unknown_job_raises_not_found(sdk: Sdk) -> None:
    with pytest.raises(NotFound) as missing:
        await sdk.call(sdk.client.jobs.get, str(uuid.uuid4()))
    assert missing.value.http_status == 404 and missing.value.code == "not_found"


async def test_ui_format_workflow_is_refused(sdk: Sdk) -> None:
    """The SDK refuses a full UI export locally; a partial one is refused by the server."""
    ui_export = {"last_node_id": 2, "last_link_id": 0, "nodes": [{"id": 1}], "links": []}
    with pytest.raises(WorkflowFormatUi):
        await sdk.call(sdk.client.submit, sdk.client.workflows.from_json(ui_export))
    assert sdk.log.calls == []

    partial = {"nodes": [{"id": 1, "type": "EmptyImage"}], "links": []}
    with pytest.raises(WorkflowFormatUi) as refused:
        await sdk.call(sdk.client.submit, sdk.client.workflows.from_json(partial))
    assert refused.value.http_status == 422 and refused.value.code == "workflow_format_ui"


async def test_unknown_node_class_raises_invalid_workflow_with_details(sdk: Sdk) -> None:
    workflow = blank_invert()
    workflow["2"]["class_type"] = "NoSuchNode"
    with pytest.raises(InvalidWorkflow) as refused:
        await sdk.call(sdk.client.submit, sdk.client.workflows.from_json(workflow))
    error = refused.value
    assert (error.http_status, error.code) == (422, "invalid_workflow")
    assert not isinstance(error, WorkflowFormatUi)
    # ComfyUI's own shape for an unknown class: a prompt-level error naming the node.
    assert error.details is not None and error.details["node_errors"] == {}
    assert error.details["error"]["type"] == "invalid_prompt"
    assert "'#2'" in error.details["error"]["details"]
    assert "NoSuchNode" in str(error)


async def test_list_jobs_pages_through_labelled_jobs(sdk: Sdk) -> None:
    """list_jobs(metadata=..., limit=2) follows next_cursor and yields only matching jobs."""
    tag = uuid.uuid4().hex[:8]
    workflow = sdk.client.workflows.from_json(blank_invert())
    submitted: list[Job] = []
    for n in range(5):
        labels = {"suite": tag, "n": str(n)}
        job = await sdk.call(sdk.client.submit, workflow, metadata=labels)
        assert job.metadata == labels
        submitted.append(job)
    unlabelled = await sdk.call(sdk.client.submit, workflow)
    sdk.log.clear()

    listed: list[JobSummary] = await sdk.call(
        lambda: list(sdk.client.list_jobs(metadata={"suite": tag}, limit=2))
    )
    assert [s.id for s in listed] == [j.id for j in reversed(submitted)]
    assert [s.metadata["n"] for s in listed] == ["4", "3", "2", "1", "0"]
    assert all(s.create_time is not None and s.create_time.tzinfo for s in listed)
    assert all(s.update_time is not None for s in listed)
    assert len(sdk.log.matching("GET", "/api/v2/jobs")) == 3  # pages of 2, 2, 1

    everything = await sdk.call(lambda: [s.id for s in sdk.client.list_jobs(limit=4)])
    assert everything[0] == unlabelled.id
    assert set(everything) == {unlabelled.id, *(j.id for j in submitted)}


# -- 8. the async client ---------------------------------------------------------------------


async def test_async_client_runs_uploads_and_streams(
    start_api: StartApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AsyncComfy does the same on the loop itself: run, upload, download, events."""
    api = await start_api()
    point_sdk_at(monkeypatch, api)
    log = HttpLog()
    async with AsyncComfy(timeout=10) as client:
        log.attach(client)
        assert repr(client) == f"AsyncComfy(base_url={api.url!r}, authenticated=False)"

        job = await client.run(client.workflows.from_json(blank_invert()), timeout=60)
        assert job.status == "succeeded"
        (output,) = job.get_outputs(SAVE_NODE)
        data = await output.to_bytes()
        assert data == await content(api, output.id)
        assert await output.to_bytes(range=(0, 3)) == data[:4]

        workflow = client.workflows.from_json(load_invert())
        workflow.set_input(
            "1", "image", client.assets.from_bytes(png((0, 0, 0)), filename="in.png")
        )
        job = await client.run(workflow, timeout=60)
        (output,) = job.get_outputs(SAVE_NODE)
        assert pixel(await output.to_bytes()) == (255, 255, 255)
        uploads = [(m, s) for m, p, s in log.calls if "/assets" in p and "/content" not in p]
        assert uploads == [("HEAD", 404), ("POST", 201)]

        streamed = await client.submit(client.workflows.from_json(blank_invert(color=255)))
        events = [e async for e in streamed.events()]
        assert isinstance(events[-1], StatusChange) and events[-1].status == "succeeded"
        assert any(isinstance(e, OutputReady) for e in events)

        with pytest.raises(NotFound):
            await client.jobs.get(str(uuid.uuid4()))


# -- 9. raw responses against the SDK's own models -------------------------------------------


async def test_job_responses_validate_in_every_state(connect: Connect) -> None:
    """Queued, running, succeeded, failed and canceled jobs all parse as comfy_low Job."""
    sdk = await connect(engine_step_s=0.05, backend_capacity=1)
    api = sdk.api

    long_graph = await txt2img_graph(api, steps=200)
    created = await api.http.post("/api/v2/jobs", json={"workflow": long_graph})
    assert created.status_code == 201, created.text
    queued = LowJob.model_validate(created.json())
    assert queued.status.value == "queued" and queued.outputs == []
    assert str(queued.urls.self).startswith(api.url + "/api/v2/jobs/")

    await wait_for_status(api, queued.id, {"running"})
    running = LowJob.model_validate(await raw_job(api, queued.id))
    assert running.status.value == "running" and running.started_at is not None
    assert running.queue_position is None

    behind = await api.http.post("/api/v2/jobs", json={"workflow": blank_invert()})
    waiting = LowJob.model_validate(behind.json())
    assert waiting.status.value == "queued" and waiting.queue_position == 1

    canceling = await api.http.post(f"/api/v2/jobs/{queued.id}/cancel")
    assert canceling.status_code == 200
    assert LowJob.model_validate(canceling.json()).status.value in {"canceling", "canceled"}
    await wait_for_status(api, queued.id, TERMINAL)
    canceled = LowJob.model_validate(await raw_job(api, queued.id))
    assert canceled.status.value == "canceled" and canceled.completed_at is not None

    await wait_for_status(api, waiting.id, TERMINAL)
    succeeded = LowJob.model_validate(await raw_job(api, waiting.id))
    assert succeeded.status.value == "succeeded" and succeeded.error is None
    assert succeeded.progress is not None and succeeded.progress.value == 1.0
    assert succeeded.outputs and all(isinstance(o, LowOutput) for o in succeeded.outputs)
    for output in succeeded.outputs:
        assert str(output.url).startswith(api.url) and output.hash is not None
        assert output.job_id == waiting.id
        asset = await api.http.get(f"/api/v2/assets/{output.id}")
        assert LowAsset.model_validate(asset.json()).job_id == waiting.id
    workflow = await api.http.get(f"/api/v2/jobs/{waiting.id}/workflow")
    assert JobWorkflowResponse.model_validate(workflow.json()).format.value == "api"

    await set_fault(api, fail_node="ImageInvert")
    broken = await api.http.post("/api/v2/jobs", json={"workflow": blank_invert(width=8)})
    await wait_for_status(api, broken.json()["id"], TERMINAL)
    failed = LowJob.model_validate(await raw_job(api, broken.json()["id"]))
    assert failed.status.value == "failed" and failed.error is not None
    assert (failed.error.node_id, failed.error.class_type) == ("2", "ImageInvert")


async def test_failed_job_raises_job_failed_with_node_detail(sdk: Sdk) -> None:
    await set_fault(sdk.api, fail_node="ImageInvert")
    with pytest.raises(JobFailed) as failed:
        await sdk.call(sdk.client.run, sdk.client.workflows.from_json(blank_invert()), timeout=60)
    error = failed.value.error
    assert error is not None and error.code == failed.value.code
    assert (error.node_id, error.class_type) == ("2", "ImageInvert")


async def test_asset_responses_validate(sdk: Sdk) -> None:
    """Upload, metadata and from-hash answers parse as comfy_low Asset."""
    api = sdk.api
    data = png((10, 20, 30))
    upload = await api.http.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "raw.png"},
        files={"file": ("raw.png", data, "image/png")},
    )
    assert upload.status_code == 201, upload.text
    asset = LowAsset.model_validate(upload.json())
    assert asset.created_new is True and asset.size_bytes == len(data)
    assert asset.job_id is None and str(asset.url).startswith(api.url)
    fetched = LowAsset.model_validate((await api.http.get(f"/api/v2/assets/{asset.id}")).json())
    assert fetched.id == asset.id and fetched.hash == asset.hash
    minted = await api.http.post(
        "/api/v2/assets/from-hash", json={"hash": asset.hash, "file_path": "copy.png"}
    )
    assert minted.status_code == 201
    assert LowAsset.model_validate(minted.json()).created_new is False
    handle = await sdk.call(sdk.client.assets.get, asset.id)
    assert handle.id == asset.id and handle.file_path == "raw.png"
    await sdk.call(handle.delete)
    with pytest.raises(NotFound):
        await sdk.call(sdk.client.assets.get, asset.id)


async def test_list_page_and_sse_frames_parse_as_the_sdk_reads_them(sdk: Sdk) -> None:
    """List items carry what JobSummary reads; SSE frames parse as the SDK's event models."""
    api = sdk.api
    created = await api.http.post(
        "/api/v2/jobs", json={"workflow": blank_invert(), "metadata": {"k": "v"}}
    )
    job_id = created.json()["id"]
    frames: list[tuple[str, dict[str, Any]]] = []
    async with api.http.stream("GET", f"/api/v2/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                frames.append((name, json.loads(line[5:])))
    for name, data in frames:
        if name == "status":
            StatusEvent.model_validate(data)
        elif name == "progress":
            LowProgress.model_validate(data)
        elif name == "output":
            LowOutput.model_validate(data)
    assert frames[-1][0] == "status" and frames[-1][1]["status"] == "succeeded"

    page = (await api.http.get("/api/v2/jobs", params={"limit": 1})).json()
    assert "next_cursor" not in page  # the only job: last page, no cursor key
    (item,) = page["jobs"]
    summary = JobSummary._from_item(item)
    assert (summary.id, summary.status, summary.metadata) == (job_id, "succeeded", {"k": "v"})
    AWARE.validate_python(item["create_time"])
    AWARE.validate_python(item["update_time"])
