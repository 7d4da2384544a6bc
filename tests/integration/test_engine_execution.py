"""Execution semantics: caching, interrupts, queue order, routing and previews."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import websockets

from sakuga.engine.server import EngineServer
from tests.fixtures.engine import (
    EngineFactory,
    collect_until_done,
    no_model_prompt,
    run_prompt,
    txt2img_prompt,
    ws_url,
)

pytestmark = pytest.mark.timeout(30)


async def recv_json(ws: websockets.ClientConnection) -> dict[str, Any]:
    """The next text message (binary frames skipped)."""
    async with asyncio.timeout(10):
        while True:
            raw = await ws.recv()
            if isinstance(raw, str):
                message: dict[str, Any] = json.loads(raw)
                return message


async def recv_until(ws: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        message = await recv_json(ws)
        if message["type"] == kind:
            return message


async def test_identical_prompt_is_served_from_cache(engine: EngineServer) -> None:
    """A resubmitted prompt runs nothing, writes no file and repeats the old output."""
    first = await run_prompt(engine.url, txt2img_prompt(prefix="cache"))
    again = await run_prompt(engine.url, txt2img_prompt(prefix="cache"))
    renamed = await run_prompt(engine.url, txt2img_prompt(prefix="cache_renamed"))
    assert again.of_type("execution_cached")[0]["nodes"] == ["4", "6", "7", "5", "3", "8", "9"]
    assert "executing" not in again.types()[:-1]
    assert again.of_type("executed")[0]["output"] == first.of_type("executed")[0]["output"]
    assert again.history["outputs"] == first.history["outputs"]
    files = sorted(p.name for p in (engine.options.output_dir).iterdir())
    assert files == ["cache_00001_.png", "cache_renamed_00001_.png"]
    assert renamed.of_type("execution_cached")[0]["nodes"] == ["4", "6", "7", "5", "3", "8"]
    assert [m["node"] for m in renamed.of_type("executing")] == ["9", None]


async def test_unrelated_prompt_drops_the_cache(engine: EngineServer) -> None:
    """Only consecutive prompts share cached nodes (ComfyUI's clean_unused)."""
    await run_prompt(engine.url, txt2img_prompt(seed=1))
    await run_prompt(engine.url, no_model_prompt())
    after = await run_prompt(engine.url, txt2img_prompt(seed=2))
    assert after.of_type("execution_cached")[0]["nodes"] == []


async def test_new_seed_reuses_loader_and_text_encodes(engine: EngineServer) -> None:
    await run_prompt(engine.url, txt2img_prompt(seed=1))
    after = await run_prompt(engine.url, txt2img_prompt(seed=2))
    assert after.of_type("execution_cached")[0]["nodes"] == ["4", "6", "7", "5"]


async def test_interrupt_lands_mid_step(make_engine: EngineFactory) -> None:
    """With 2 s steps, an interrupt stops the sampler in milliseconds, not at the step end."""
    async with make_engine(step_s=2.0) as server:
        client_id = str(uuid.uuid4())
        async with websockets.connect(ws_url(server.url, client_id)) as ws:
            await recv_json(ws)
            async with httpx.AsyncClient(base_url=server.url) as http:
                body = {"prompt": txt2img_prompt(steps=50), "client_id": client_id}
                prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
                while (await recv_json(ws))["data"].get("node") != "3":
                    pass
                started = time.monotonic()
                await http.post("/interrupt", json={"prompt_id": "not-running"})
                await http.post("/interrupt", json={"prompt_id": prompt_id})
                stopped = await recv_until(ws, "execution_interrupted")
                elapsed = time.monotonic() - started
                history = (await http.get(f"/history/{prompt_id}")).json()
    assert elapsed < 1.0
    assert stopped["data"]["node_id"] == "3" and stopped["data"]["node_type"] == "KSampler"
    assert stopped["data"]["executed"] == ["4", "5", "6", "7"]
    assert history == {} or history[prompt_id]["status"]["status_str"] == "error"


async def test_interrupt_while_idle_does_not_kill_the_next_prompt(engine: EngineServer) -> None:
    async with httpx.AsyncClient(base_url=engine.url) as http:
        await http.post("/interrupt")
    done = await run_prompt(engine.url, txt2img_prompt())
    assert done.history["status"]["status_str"] == "success"


async def test_queue_runs_by_number_then_front(make_engine: EngineFactory) -> None:
    """Pending prompts run in heap order: explicit -100, then the latest front, then FIFO."""
    async with make_engine(step_s=0.05) as server:
        client_id = str(uuid.uuid4())
        async with websockets.connect(ws_url(server.url, client_id)) as ws:
            await recv_json(ws)
            async with httpx.AsyncClient(base_url=server.url) as http:

                async def post(name: str, **extra: Any) -> str:
                    prompt = txt2img_prompt(steps=40) if name == "A" else no_model_prompt(name)
                    body = {"prompt": prompt, "client_id": client_id, "prompt_id": name, **extra}
                    return str((await http.post("/prompt", json=body)).json()["prompt_id"])

                await post("A")
                await recv_until(ws, "execution_start")
                for name, extra in [
                    ("B", {}),
                    ("C", {"front": True}),
                    ("D", {}),
                    ("E", {"number": -100}),
                ]:
                    await post(name, **extra)
                await http.post("/queue", json={"delete": ["B", "A"]})
                pending = [item[1] for item in (await http.get("/queue")).json()["queue_pending"]]
                await http.post("/interrupt")
                order = []
                while len(order) < 4:
                    message = await recv_json(ws)
                    if message["type"] == "execution_start":
                        order.append(message["data"]["prompt_id"])
                    if message == {"type": "executing", "data": {"node": None, "prompt_id": "D"}}:
                        break
    assert sorted(pending) == ["C", "D", "E"]
    assert order == ["E", "C", "D"]


async def test_partial_execution_targets_run_only_those_outputs(engine: EngineServer) -> None:
    prompt = no_model_prompt("target")
    prompt["5"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["1", 0], "filename_prefix": "other"},
    }
    done = await run_prompt(engine.url, prompt, partial_execution_targets=["3"])
    assert list(done.history["outputs"]) == ["3"]
    assert done.history["prompt"][4] == ["3"]


async def test_previews_follow_the_client_feature_flags(engine: EngineServer) -> None:
    """Event 4 with metadata for clients announcing it, event 1 JPEG otherwise, none by default."""
    plain = await run_prompt(engine.url, txt2img_prompt(seed=3, steps=2))
    legacy = await run_prompt(
        engine.url, txt2img_prompt(seed=4, steps=2), extra_data={"preview_method": "auto"}
    )
    assert "binary1" not in plain.types()
    assert legacy.types().count("binary1") == 2
    binary = next(m for m in legacy.messages if isinstance(m, bytes))
    assert binary[:8] == bytes.fromhex("0000000100000001") and binary[8:10] == b"\xff\xd8"
    client_id = str(uuid.uuid4())
    async with websockets.connect(ws_url(engine.url, client_id)) as ws:
        await ws.send(
            json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        )
        assert (await recv_json(ws))["type"] == "status"
        assert (await recv_json(ws))["data"]["supports_preview_metadata"] is True
        async with httpx.AsyncClient(base_url=engine.url) as http:
            body = {
                "prompt": txt2img_prompt(seed=5, steps=2),
                "client_id": client_id,
                "extra_data": {"preview_method": "latent2rgb"},
            }
            prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
        messages = await collect_until_done(ws, prompt_id)
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 2
    size = int.from_bytes(frames[0][4:8], "big")
    metadata = json.loads(frames[0][8 : 8 + size])
    assert frames[0][:4] == b"\x00\x00\x00\x04"
    assert metadata == {
        "node_id": "3",
        "prompt_id": prompt_id,
        "display_node_id": "3",
        "parent_node_id": None,
        "real_node_id": "3",
        "image_type": "image/jpeg",
    }
    kinds = [m if isinstance(m, bytes) else m["type"] for m in messages]
    first = kinds.index(frames[0])
    assert kinds[first - 1] == "progress_state" and kinds[first + 1] == "progress"


async def test_prompt_without_client_id_broadcasts_progress_only(engine: EngineServer) -> None:
    """Without client_id, sockets see status and progress but no lifecycle events."""
    async with websockets.connect(ws_url(engine.url, "bystander")) as ws:
        await recv_json(ws)
        async with httpx.AsyncClient(base_url=engine.url) as http:
            await http.post("/prompt", json={"prompt": txt2img_prompt(steps=2)})
        kinds = []
        while True:
            message = await recv_json(ws)
            kinds.append(message["type"])
            if (
                message["type"] == "status"
                and message["data"]["status"]["exec_info"]["queue_remaining"] == 0
            ):
                break
    assert set(kinds) == {"status", "progress_state", "progress"}


async def test_text_frame_is_broadcast_and_preview_image_goes_to_temp(engine: EngineServer) -> None:
    size = {"width": ["2", 0], "height": ["2", 1], "batch_size": 1, "color": 255}
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 48, "height": 32, "batch_size": 2, "color": 5792749},
        },
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "EmptyImage", "inputs": size},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "s12"}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    async with websockets.connect(ws_url(engine.url, "bystander")) as bystander:
        await recv_json(bystander)
        done = await run_prompt(engine.url, prompt)
        text = await asyncio.wait_for(bystander.recv(), 10)
        while not isinstance(text, bytes):
            text = await asyncio.wait_for(bystander.recv(), 10)
    expected = b"\x00\x00\x00\x03\x00\x00\x00\x012width: 48, height: 32\n batch size: 2"
    assert text == expected
    assert [m["node"] for m in done.of_type("executing")] == ["1", "5", "2", "3", "4", None]
    previews = done.history["outputs"]["5"]["images"]
    assert [p["type"] for p in previews] == ["temp", "temp"]
    assert previews[0]["filename"].startswith("ComfyUI_temp_") and previews[0]["filename"].endswith(
        "_00001_.png"
    )


async def test_runtime_error_reports_every_recorded_field(engine: EngineServer) -> None:
    prompt = no_model_prompt("../escape")
    done = await run_prompt(engine.url, prompt)
    (error,) = done.of_type("execution_error")
    assert list(error) == [
        "prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
        "traceback", "current_inputs", "current_outputs", "timestamp",
    ]  # fmt: skip
    assert error["exception_message"].startswith(
        "**** ERROR: Saving image outside the output folder is not allowed."
    )
    assert error["exception_type"] == "Exception"
    assert error["executed"] == ["1", "2"]
    assert error["current_inputs"]["filename_prefix"] == ["../escape"]
    assert done.history["status"]["status_str"] == "error"
    assert done.types()[-3:] == ["execution_error", "status", "executing"]


async def test_duplicate_client_id_silences_the_survivor(engine: EngineServer) -> None:
    """A second socket with the same clientId replaces the first; when one closes, both are gone."""
    async with websockets.connect(ws_url(engine.url, "dup")) as first:
        await recv_json(first)
        second = await websockets.connect(ws_url(engine.url, "dup"))
        await recv_json(second)
        async with httpx.AsyncClient(base_url=engine.url) as http:
            body = {"prompt": no_model_prompt(), "client_id": "dup"}
            prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
            await collect_until_done(second, prompt_id)
    assert engine.state.hub.socket_count() == 0
    await second.close()


async def test_reconnect_gets_the_executing_node(make_engine: EngineFactory) -> None:
    async with make_engine(step_s=0.05) as server:
        async with websockets.connect(ws_url(server.url, "f")) as ws:
            await recv_json(ws)
            async with httpx.AsyncClient(base_url=server.url) as http:
                body = {"prompt": txt2img_prompt(steps=60), "client_id": "f"}
                await http.post("/prompt", json=body)
            await recv_until(ws, "progress")
        async with websockets.connect(ws_url(server.url, "f")) as again:
            status = await recv_json(again)
            executing = await recv_json(again)
            async with httpx.AsyncClient(base_url=server.url) as http:
                await http.post("/interrupt")
    assert (
        status["data"]["sid"] == "f"
        and status["data"]["status"]["exec_info"]["queue_remaining"] == 1
    )
    assert executing == {"type": "executing", "data": {"node": "3"}}


async def test_load_image_reruns_when_the_file_changes(engine: EngineServer) -> None:
    folder = engine.options.input_dir
    (folder / "a.png").write_bytes(_png((255, 0, 0)))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "load"}},
    }
    await run_prompt(engine.url, prompt)
    (folder / "a.png").write_bytes(_png((0, 255, 0)))
    after = await run_prompt(engine.url, prompt)
    assert after.of_type("execution_cached")[0]["nodes"] == []


def _png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()
