"""Each fault switch makes the engine fail the way a real backend does."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
import websockets

from sakuga.engine.options import Faults
from tests.fixtures.engine import (
    EngineFactory,
    EngineProcess,
    no_model_prompt,
    run_prompt,
    txt2img_prompt,
    ws_url,
)

pytestmark = pytest.mark.timeout(30)


async def test_fail_node_raises_an_execution_error(make_engine: EngineFactory) -> None:
    async with make_engine(faults=Faults(fail_node="VAEDecode")) as server:
        done = await run_prompt(server.url, txt2img_prompt())
    (error,) = done.of_type("execution_error")
    assert error["node_type"] == "VAEDecode" and error["exception_type"] == "RuntimeError"
    assert "fail_node" in error["exception_message"]
    assert done.history["status"] == {
        "status_str": "error",
        "completed": False,
        "messages": done.history["status"]["messages"],
    }


async def test_oom_reports_torch_out_of_memory(make_engine: EngineFactory) -> None:
    async with make_engine(faults=Faults(oom=True)) as server:
        done = await run_prompt(server.url, txt2img_prompt())
    (error,) = done.of_type("execution_error")
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert "out of memory" in error["exception_message"]
    assert error["node_type"] == "KSampler"


async def test_silent_sends_nothing_but_still_writes_history(make_engine: EngineFactory) -> None:
    """A silent engine sends no frame, not even the connect status; /history still fills."""
    async with (
        make_engine(faults=Faults(silent=True)) as server,
        websockets.connect(ws_url(server.url, "quiet")) as ws,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        body = {"prompt": no_model_prompt(), "client_id": "quiet", "prompt_id": "p"}
        await http.post("/prompt", json=body)
        async with asyncio.timeout(10):
            # Polling /history is the only way to see completion on a silent backend.
            while (await http.get("/history/p")).json() == {}:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.2)


async def test_drop_ws_closes_sockets_when_a_prompt_starts(make_engine: EngineFactory) -> None:
    async with (
        make_engine(faults=Faults(drop_ws=True)) as server,
        websockets.connect(ws_url(server.url, "d")) as ws,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        await ws.recv()
        await http.post("/prompt", json={"prompt": no_model_prompt(), "client_id": "d"})
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()


async def test_latency_delays_every_http_reply(make_engine: EngineFactory) -> None:
    async with make_engine() as server, httpx.AsyncClient(base_url=server.url) as http:
        await http.post("/sakuga/faults", json={"latency_s": 0.3})
        started = time.monotonic()
        await http.get("/queue")
        slow = time.monotonic() - started
        await http.delete("/sakuga/faults")
        started = time.monotonic()
        await http.get("/queue")
        fast = time.monotonic() - started
    assert slow >= 0.3 > fast


async def test_hang_waits_until_interrupted(make_engine: EngineFactory) -> None:
    async with make_engine(faults=Faults(hang=True)) as server:
        client_id = str(uuid.uuid4())
        async with websockets.connect(ws_url(server.url, client_id)) as ws:
            await ws.recv()
            async with httpx.AsyncClient(base_url=server.url) as http:
                body = {"prompt": txt2img_prompt(steps=2), "client_id": client_id}
                prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
                kinds = []
                async with asyncio.timeout(10):
                    while True:
                        message = json.loads(await ws.recv())
                        kinds.append(message["type"])
                        if message["data"].get("node") == "3":
                            break
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.3)  # nothing while hung
                assert (await http.get("/api/jobs/" + prompt_id)).json()["status"] == "in_progress"
                await http.post("/interrupt")
                async with asyncio.timeout(10):
                    while json.loads(await ws.recv())["type"] != "execution_interrupted":
                        pass


async def test_fault_route_reads_sets_and_resets(make_engine: EngineFactory) -> None:
    async with make_engine() as server, httpx.AsyncClient(base_url=server.url) as http:
        initial = (await http.get("/sakuga/faults")).json()
        changed = (
            await http.post("/sakuga/faults", json={"oom": True, "fail_node": "SaveImage"})
        ).json()
        bad = await http.post("/sakuga/faults", json={"nonsense": 1})
        failed = await run_prompt(server.url, txt2img_prompt())
        reset = (await http.delete("/sakuga/faults")).json()
        ok = await run_prompt(server.url, txt2img_prompt(seed=9))
    assert initial == Faults().to_dict()
    assert changed["oom"] is True and changed["fail_node"] == "SaveImage"
    assert bad.status_code == 400 and "nonsense" in bad.json()["error"]
    assert failed.of_type("execution_error")[0]["exception_type"] == "torch.OutOfMemoryError"
    assert reset == Faults().to_dict()
    assert ok.history["status"]["status_str"] == "success"


async def test_crash_at_step_kills_the_process(
    engine_process: Callable[..., EngineProcess],
) -> None:
    """The process exits hard (code 1) at the given sampler step, after earlier progress."""
    proc: EngineProcess = engine_process("--crash-at-step", "3")
    client_id = str(uuid.uuid4())
    steps = []
    async with websockets.connect(ws_url(proc.url, client_id)) as ws:
        async with httpx.AsyncClient(base_url=proc.url) as http:
            await http.post(
                "/prompt", json={"prompt": txt2img_prompt(steps=10), "client_id": client_id}
            )
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "progress":
                        steps.append(message["data"]["value"])
    assert await asyncio.to_thread(proc.process.wait, 10) == 1
    assert steps == [1, 2]
