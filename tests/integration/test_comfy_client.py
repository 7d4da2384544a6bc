"""The ComfyUI client against the embedded engine: runs, progress, outputs, faults, re-attach."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from io import BytesIO
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from PIL import Image

from sakuga.comfy.client import ComfyClient, Deadlines
from sakuga.comfy.progress import Progress
from sakuga.comfy.protocol import OutputFile
from sakuga.errors import (
    BackendError,
    BackendLost,
    BackendRejected,
    BackendTimeout,
    BackendUnreachable,
    ExecutionFailed,
    ExecutionInterrupted,
)
from tests.fixtures import engine as engine_plugin

# The conftest does not list the engine plugin; these names register its fixtures here.
engine = engine_plugin.engine
make_engine = engine_plugin.make_engine

pytestmark = pytest.mark.timeout(30)

FAST = Deadlines(connect_s=2.0, silence_s=0.5, job_s=20.0, history_poll_s=0.05, request_s=5.0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def no_model(prefix: str) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": 64,
                "height": 64,
                "batch_size": 1,
                "color": random.randrange(2**24),
            },
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def txt2img(prefix: str, steps: int = 12) -> dict[str, Any]:
    """The recorded sampling workflow with a fresh seed, so the engine's cache never answers."""
    return engine_plugin.txt2img_prompt(seed=random.randrange(2**32), steps=steps, prefix=prefix)


class Recorder:
    """Collects what ``on_event`` reports; ``sampling`` is set once a sampler step is seen."""

    def __init__(self) -> None:
        self.progress: list[Progress] = []
        self.outputs: list[OutputFile] = []
        self.sampling = asyncio.Event()

    async def __call__(self, event: Progress | OutputFile) -> None:
        if isinstance(event, OutputFile):
            self.outputs.append(event)
            return
        self.progress.append(event)
        if event.current_node_class == "KSampler":
            self.sampling.set()

    @property
    def values(self) -> list[float]:
        return [p.value for p in self.progress]


def ids() -> dict[str, str]:
    return {"prompt_id": str(uuid.uuid4()), "client_id": uuid.uuid4().hex}


@pytest.fixture
async def faults(engine: Any) -> AsyncIterator[Any]:
    """Set engine fault switches; every switch is turned off again after the test."""

    async def set_faults(**switches: Any) -> None:
        async with httpx.AsyncClient() as http:
            (await http.post(f"{engine.url}/sakuga/faults", json=switches)).raise_for_status()

    yield set_faults
    await set_faults(
        fail_node=None,
        oom=False,
        crash_at_step=None,
        silent=False,
        drop_ws=False,
        latency_s=0.0,
        hang=False,
    )


@pytest.fixture
async def client(engine: Any) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(engine.url, deadlines=FAST, name="engine") as comfy:
        yield comfy


@pytest.fixture
async def slow_engine(make_engine: Any) -> AsyncIterator[Any]:
    """Sampler steps of 0.05 s, so a run is long enough to watch and to take over (DECISIONS 6)."""
    async with make_engine(step_s=0.05) as server:
        yield server


@pytest.fixture
async def slow_client(slow_engine: Any) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(slow_engine.url, deadlines=FAST, name="engine") as comfy:
        yield comfy


async def test_no_model_graph_runs_and_its_output_downloads(client: ComfyClient) -> None:
    seen = Recorder()
    result = await client.run(no_model("it-nomodel"), on_event=seen, **ids())
    (output,) = result.outputs
    assert (output.node_id, output.type, output.kind) == ("3", "output", "image")
    assert seen.outputs == [output]  # reported once, though both the socket and history list it
    assert seen.values == sorted(seen.values) and seen.values[-1] == 1.0
    assert result.messages[0][0] == "execution_start"
    assert result.started_at and result.finished_at and result.started_at <= result.finished_at
    assert (await client.download(output)).startswith(PNG_MAGIC)


async def test_sampling_reports_monotonic_intermediate_progress(slow_client: ComfyClient) -> None:
    seen, client = Recorder(), slow_client
    result = await client.run(
        txt2img("it-txt2img"), on_event=seen, **ids(), object_info=await client.object_info()
    )
    assert seen.values == sorted(seen.values)
    assert seen.values[-1] == 1.0 and all(v < 1.0 for v in seen.values[:-1])
    intermediate = {v for v in seen.values if 0.0 < v < 1.0}
    assert len(intermediate) >= 10
    assert {p.step for p in seen.progress if p.steps == 12} >= set(range(1, 13))
    (output,) = result.outputs
    assert (await client.download(output)).startswith(PNG_MAGIC)


async def test_silent_socket_still_completes_through_history(
    client: ComfyClient, faults: Any
) -> None:
    await faults(silent=True)
    seen = Recorder()
    started = time.monotonic()
    result = await client.run(txt2img("it-silent", steps=4), on_event=seen, **ids())
    assert result.outputs and seen.outputs == list(result.outputs)
    assert seen.values[-1] == 1.0
    assert time.monotonic() - started < FAST.job_s


async def test_dropped_socket_still_completes(client: ComfyClient, faults: Any) -> None:
    await faults(drop_ws=True)
    seen = Recorder()
    result = await client.run(txt2img("it-drop", steps=4), on_event=seen, **ids())
    assert result.outputs and seen.values[-1] == 1.0


async def test_failing_node_raises_execution_failed_naming_it(
    client: ComfyClient, faults: Any
) -> None:
    await faults(fail_node="ImageInvert")
    with pytest.raises(ExecutionFailed) as caught:
        await client.run(no_model("it-fail"), on_event=Recorder(), **ids())
    error = caught.value
    assert (error.node_id, error.class_type, error.transient) == ("2", "ImageInvert", False)
    assert "engine" in error.message and "ImageInvert" in error.message and error.exception_type


async def test_out_of_memory_is_a_transient_failure(client: ComfyClient, faults: Any) -> None:
    await faults(oom=True)
    with pytest.raises(ExecutionFailed) as caught:
        await client.run(txt2img("it-oom", steps=4), on_event=Recorder(), **ids())
    assert caught.value.transient is True and caught.value.code == "out_of_memory"
    assert caught.value.class_type == "KSampler"


async def test_interrupt_mid_run_raises_execution_interrupted(
    client: ComfyClient, faults: Any
) -> None:
    await faults(hang=True)
    seen, run_ids = Recorder(), ids()
    task = asyncio.create_task(client.run(txt2img("it-interrupt"), on_event=seen, **run_ids))
    await asyncio.wait_for(seen.sampling.wait(), 10)
    await client.interrupt(run_ids["prompt_id"])
    with pytest.raises(ExecutionInterrupted) as caught:
        await task
    assert "KSampler" in caught.value.message and all(v < 1.0 for v in seen.values)


async def test_invalid_graph_is_rejected_with_node_errors(client: ComfyClient) -> None:
    prompt = no_model("it-invalid")
    del prompt["1"]["inputs"]["width"]
    with pytest.raises(BackendRejected) as caught:
        await client.run(prompt, on_event=Recorder(), **ids())
    assert caught.value.transient is False
    assert caught.value.details is not None and "1" in caught.value.details["node_errors"]
    assert "width" in caught.value.message


async def test_unreachable_backend_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    async with ComfyClient(f"http://127.0.0.1:{port}", deadlines=FAST) as comfy:
        with pytest.raises(BackendUnreachable, match=str(port)):
            await comfy.run(no_model("it-unreachable"), on_event=Recorder(), **ids())
        with pytest.raises(BackendUnreachable):
            await comfy.locate("anything")
    assert time.monotonic() - started < FAST.connect_s


async def test_attach_takes_over_a_running_prompt(
    slow_engine: Any, slow_client: ComfyClient
) -> None:
    run_ids, prompt, client = ids(), txt2img("it-attach", steps=40), slow_client
    first = Recorder()
    task = asyncio.create_task(client.run(prompt, on_event=first, **run_ids))
    await asyncio.wait_for(first.sampling.wait(), 10)
    assert await client.locate(run_ids["prompt_id"]) == "running"
    async with ComfyClient(slow_engine.url, deadlines=FAST, name="second") as second:
        seen = Recorder()
        attached = asyncio.create_task(second.attach(prompt, on_event=seen, **run_ids))
        await asyncio.wait_for(seen.sampling.wait(), 10)  # attached: it sees the sampler run
        task.cancel()  # the first process "dies"; its socket closes under the second one
        result = await attached
    assert result.outputs and seen.outputs == list(result.outputs)
    assert seen.values == sorted(seen.values) and seen.values[-1] == 1.0
    assert (await client.download(result.outputs[0])).startswith(PNG_MAGIC)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_attach_to_a_finished_prompt_collects_it(client: ComfyClient) -> None:
    run_ids, prompt = ids(), no_model("it-attach-done")
    done = await client.run(prompt, on_event=Recorder(), **run_ids)
    assert await client.locate(run_ids["prompt_id"]) == "done"
    seen = Recorder()
    again = await client.attach(prompt, on_event=seen, **run_ids)
    assert again.outputs == done.outputs and seen.outputs == list(done.outputs)


async def test_attach_to_an_unknown_prompt_raises_backend_lost(client: ComfyClient) -> None:
    with pytest.raises(BackendLost, match="submit it again"):
        await client.attach(no_model("it-lost"), on_event=Recorder(), **ids())
    assert await client.locate(str(uuid.uuid4())) == "unknown"


async def test_pending_prompt_can_be_deleted(client: ComfyClient, faults: Any) -> None:
    await faults(hang=True)
    blocker, waiting = ids(), ids()
    seen = Recorder()
    task = asyncio.create_task(client.run(txt2img("it-blocker"), on_event=seen, **blocker))
    await asyncio.wait_for(seen.sampling.wait(), 10)
    await client.submit(no_model("it-pending"), **waiting)
    assert await client.locate(waiting["prompt_id"]) == "pending"
    await client.delete_pending(waiting["prompt_id"])
    assert await client.locate(waiting["prompt_id"]) == "unknown"
    await client.interrupt(blocker["prompt_id"])
    with pytest.raises(ExecutionInterrupted):
        await task


async def test_uploaded_image_lands_in_input(client: ComfyClient) -> None:
    buffer = BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    answer = await client.upload_image(buffer.getvalue(), "it-upload.png", subfolder="sakuga")
    assert answer == {"name": "it-upload.png", "subfolder": "sakuga", "type": "input"}
    stats = await client.system_stats()
    assert "system" in stats


# -- a scripted ComfyUI: the races and failures the engine does not stage -----------------


class FakeTransport:
    """The socket's connection: closed by ``close_quietly`` when the handshake did not."""

    def __init__(self) -> None:
        self.aborted = False

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class FakeSocket:
    """Hands out scripted frames, then stays silent (like a socket nobody writes to)."""

    def __init__(self, frames: list[dict[str, Any]]) -> None:
        self.frames = [json.dumps(frame) for frame in frames]
        self.transport = FakeTransport()

    async def recv(self) -> str:
        if self.frames:
            return self.frames.pop(0)
        await asyncio.Event().wait()  # silence; the tracker's own deadline ends the wait
        raise AssertionError("unreachable")

    async def close(self) -> None:
        return None


class Scripted(ComfyClient):
    """A client whose HTTP answers come from ``handler`` and whose socket is ``socket``."""

    def __init__(self, handler: Any, socket: FakeSocket | None, deadlines: Deadlines = FAST):
        super().__init__(
            "http://comfy.test",
            deadlines=deadlines,
            name="scripted",
            transport=httpx.MockTransport(handler),
        )
        self.socket = socket

    async def open_socket(self, client_id: str) -> Any:
        return self.socket


PID = "p-1"
ENTRY = {
    "outputs": {"3": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
    "status": {
        "status_str": "success",
        "completed": True,
        "messages": [
            ["execution_start", {"prompt_id": PID, "timestamp": 1000}],
            ["execution_success", {"prompt_id": PID, "timestamp": 2000}],
        ],
    },
}
RUN_FRAMES = [
    {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}},
    {"type": "execution_start", "data": {"prompt_id": PID, "timestamp": 1000}},
    {"type": "execution_cached", "data": {"nodes": [], "prompt_id": PID}},
    {"type": "executing", "data": {"node": "1", "display_node": "1", "prompt_id": "other"}},
    {"type": "executing", "data": {"node": "3", "display_node": "3", "prompt_id": PID}},
    {
        "type": "execution_error",
        "data": {
            "prompt_id": PID,
            "node_id": "2",
            "exception_type": "ExecutionBlocked",
            "exception_message": "blocked",
        },
    },
    {"type": "executed", "data": {"node": "3", "output": ENTRY["outputs"]["3"], "prompt_id": PID}},
    {"type": "execution_success", "data": {"prompt_id": PID, "timestamp": 2000}},
    {"type": "executing", "data": {"node": None, "prompt_id": "other"}},
    {"type": "executing", "data": {"node": None, "prompt_id": PID}},
]


def routes(
    history: list[dict[str, Any] | Exception], queue: list[list[str]] | None = None
) -> tuple[Any, dict[str, int]]:
    """An HTTP handler: /prompt accepts, /history and /queue answer from the scripts in turn
    (the last answer repeats); ``calls`` counts requests per path."""
    calls: dict[str, int] = {}
    queue = queue or [[]]

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        key = path.split("/")[1]
        calls[key] = calls.get(key, 0) + 1
        if path == "/prompt":
            return httpx.Response(200, json={"prompt_id": PID, "number": 1, "node_errors": {}})
        if key == "history":
            answer = history[min(calls[key], len(history)) - 1]
            if isinstance(answer, Exception):
                raise answer
            return httpx.Response(200, json={PID: answer} if answer else {})
        if path == "/queue" and request.method == "GET":
            running = queue[min(calls[key], len(queue)) - 1]
            return httpx.Response(
                200,
                json={
                    "queue_running": [[1, pid, {}, {}, []] for pid in running],
                    "queue_pending": [],
                },
            )
        return httpx.Response(200)

    return handler, calls


PROMPT = no_model("scripted")


async def test_history_race_after_the_end_marker_is_retried() -> None:
    handler, calls = routes([{}, {}, ENTRY])
    seen = Recorder()
    async with Scripted(handler, FakeSocket(RUN_FRAMES)) as comfy:
        result = await comfy.run(PROMPT, prompt_id=PID, client_id="c", on_event=seen)
    assert calls["history"] == 3
    assert [o.filename for o in result.outputs] == ["a.png"] and len(seen.outputs) == 1
    assert seen.values[-1] == 1.0 and seen.values == sorted(seen.values)
    assert result.started_at is not None and result.started_at.year == 1970


async def test_socket_account_is_used_when_history_was_deleted() -> None:
    handler, _ = routes([{}])
    async with Scripted(handler, FakeSocket(RUN_FRAMES), replace(FAST, connect_s=0.2)) as comfy:
        result = await comfy.run(PROMPT, prompt_id=PID, client_id="c", on_event=Recorder())
    assert [o.filename for o in result.outputs] == ["a.png"]


async def test_a_prompt_the_backend_forgot_raises_backend_lost() -> None:
    handler, calls = routes([{}], queue=[[PID], [PID], []])
    async with Scripted(handler, FakeSocket(RUN_FRAMES[:5])) as comfy:
        with pytest.raises(BackendLost, match="submit it again"):
            await comfy.run(PROMPT, prompt_id=PID, client_id="c", on_event=Recorder())
    assert calls["queue"] == 3


async def test_unreachable_while_polling_raises_after_connect_s() -> None:
    refused = httpx.ConnectError("connection refused")
    handler, _ = routes([{}, refused], queue=[[PID]])
    deadlines = replace(FAST, connect_s=0.2)
    started = time.monotonic()
    async with Scripted(handler, None, deadlines) as comfy:
        with pytest.raises(BackendUnreachable):
            await comfy.run(PROMPT, prompt_id=PID, client_id="c", on_event=Recorder())
    assert time.monotonic() - started < 2.0


async def test_the_whole_wait_is_bounded_by_job_s() -> None:
    handler, _ = routes([{}], queue=[[PID]])
    async with Scripted(handler, FakeSocket([]), replace(FAST, job_s=0.3)) as comfy:
        with pytest.raises(BackendTimeout, match="job_s"):
            await comfy.run(PROMPT, prompt_id=PID, client_id="c", on_event=Recorder())


async def test_accepted_with_node_errors_is_rejected_and_withdrawn() -> None:
    posted: list[tuple[str, Any]] = []
    node_errors = {
        "9": {"errors": [{"type": "x", "message": "bad", "details": "d"}], "class_type": "Bad"}
    }

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append((request.url.path, json.loads(request.content or b"null")))
        if request.url.path == "/prompt":
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed",
                "details": "",
            }
            return httpx.Response(
                200,
                json={"prompt_id": PID, "number": 1, "node_errors": node_errors, "error": error},
            )
        return httpx.Response(200)

    async with Scripted(handler, None) as comfy:
        with pytest.raises(BackendRejected, match="node 9 \\(Bad\\)") as caught:
            await comfy.submit(PROMPT, prompt_id=PID, client_id="c")
    assert caught.value.details == {"error": ANY, "node_errors": node_errors}
    assert ("/queue", {"delete": [PID]}) in posted and ("/interrupt", {"prompt_id": PID}) in posted


async def test_a_server_error_names_the_backend_and_status() -> None:
    async with Scripted(
        lambda request: httpx.Response(500, text="Server got itself in trouble"), None
    ) as comfy:
        with pytest.raises(BackendError, match="backend scripted: GET /queue answered HTTP 500"):
            await comfy.queue()
