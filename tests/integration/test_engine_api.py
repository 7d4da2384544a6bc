"""The engine's HTTP routes behave like ComfyUI's (PROTOCOL §4), and its own example works."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.parse
import urllib.request
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.sync.client import connect as sync_connect

from sakuga.engine.server import EngineServer
from tests.fixtures.engine import (
    no_model_prompt,
    run_prompt,
    txt2img_prompt,
)

pytestmark = pytest.mark.timeout(30)


def comfyui_example_client(server_address: str, prompt: dict[str, Any]) -> dict[str, list[bytes]]:
    """ComfyUI's script_examples/websockets_api_example.py, written the same way."""
    client_id = str(uuid.uuid4())

    def queue_prompt(prompt: dict[str, Any], prompt_id: str) -> None:
        p = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        data = json.dumps(p).encode("utf-8")
        req = urllib.request.Request(f"http://{server_address}/prompt", data=data)
        urllib.request.urlopen(req).read()

    def get_image(filename: str, subfolder: str, folder_type: str) -> bytes:
        data = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        url_values = urllib.parse.urlencode(data)
        with urllib.request.urlopen(f"http://{server_address}/view?{url_values}") as response:
            return bytes(response.read())

    def get_history(prompt_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{server_address}/history/{prompt_id}") as response:
            return dict(json.loads(response.read()))

    def get_images(ws: Any, prompt: dict[str, Any]) -> dict[str, list[bytes]]:
        prompt_id = str(uuid.uuid4())
        queue_prompt(prompt, prompt_id)
        output_images: dict[str, list[bytes]] = {}
        while True:
            out = ws.recv()
            if isinstance(out, str):
                message = json.loads(out)
                if message["type"] == "executing":
                    data = message["data"]
                    if data["node"] is None and data["prompt_id"] == prompt_id:
                        break  # Execution is done
            else:
                continue  # previews are binary data
        history = get_history(prompt_id)[prompt_id]
        for node_id in history["outputs"]:
            node_output = history["outputs"][node_id]
            images_output = []
            if "images" in node_output:
                for image in node_output["images"]:
                    image_data = get_image(image["filename"], image["subfolder"], image["type"])
                    images_output.append(image_data)
            output_images[node_id] = images_output
        return output_images

    with sync_connect(f"ws://{server_address}/ws?clientId={client_id}", open_timeout=10) as ws:
        return get_images(ws, prompt)


async def test_comfyui_websocket_example_client_gets_its_images(engine: EngineServer) -> None:
    """A client written like ComfyUI's own websocket example works unchanged."""
    address = engine.url.removeprefix("http://")
    prompt = txt2img_prompt(seed=5, width=96, height=64, batch_size=2)
    prompt["3"]["inputs"]["steps"] = 3
    images = await asyncio.to_thread(comfyui_example_client, address, prompt)
    assert list(images) == ["9"]
    assert len(images["9"]) == 2
    for data in images["9"]:
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.size == (96, 64)
            assert json.loads(picture.info["prompt"]) == prompt


async def test_submit_answers_prompt_id_number_and_node_errors(engine: EngineServer) -> None:
    """POST /prompt answers like ComfyUI; the number counter advances on every POST."""
    async with httpx.AsyncClient(base_url=engine.url) as http:
        first = await http.post("/prompt", json={"prompt": no_model_prompt()})
        rejected = await http.post("/prompt", json={"prompt": {}})
        second = await http.post(
            "/api/prompt", json={"prompt": no_model_prompt(), "prompt_id": "mine"}
        )
        front = await http.post("/prompt", json={"prompt": no_model_prompt(), "front": True})
        explicit = await http.post("/prompt", json={"prompt": no_model_prompt(), "number": -100})
    assert first.status_code == 200 and set(first.json()) == {"prompt_id", "number", "node_errors"}
    assert first.json()["number"] == 0
    assert rejected.status_code == 400
    assert rejected.json()["error"]["type"] == "prompt_no_outputs"
    assert second.json() == {"prompt_id": "mine", "number": 2, "node_errors": {}}
    assert front.json()["number"] == -3
    assert explicit.json()["number"] == -100.0


async def test_rejections_match_comfyui(engine: EngineServer) -> None:
    """no_prompt, invalid graphs and non-JSON bodies answer as ComfyUI does."""
    async with httpx.AsyncClient(base_url=engine.url) as http:
        no_prompt = await http.post("/prompt", json={"client_id": "x"})
        not_json = await http.post("/prompt", content=b"this is not json")
        bad = no_model_prompt()
        bad["1"]["inputs"]["width"] = 0
        invalid = await http.post("/prompt", json={"prompt": bad})
        queue = await http.get("/queue")
    assert no_prompt.status_code == 400
    assert no_prompt.json() == {
        "error": {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        },
        "node_errors": {},
    }
    assert not_json.status_code == 500
    assert not_json.text == "500 Internal Server Error\n\nServer got itself in trouble"
    assert invalid.status_code == 400
    assert invalid.json()["error"]["type"] == "prompt_outputs_failed_validation"
    assert invalid.json()["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
    assert queue.json() == {"queue_running": [], "queue_pending": []}


async def test_history_view_and_jobs_after_a_run(engine: EngineServer) -> None:
    """History, /view and /api/jobs describe a finished prompt as ComfyUI records it."""
    extra = {"extra_pnginfo": {"workflow": {"id": "demo-workflow-id"}}}
    done = await run_prompt(engine.url, no_model_prompt("s01"), extra_data=extra)
    entry = done.history
    assert set(entry) == {"prompt", "outputs", "status", "meta"}
    assert entry["outputs"] == {
        "3": {"images": [{"filename": "s01_00001_.png", "subfolder": "", "type": "output"}]}
    }
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["meta"]["3"] == {
        "node_id": "3",
        "display_node": "3",
        "parent_node": None,
        "real_node_id": "3",
    }
    async with httpx.AsyncClient(base_url=engine.url) as http:
        view = await http.get(
            "/view", params={"filename": "s01_00001_.png", "type": "output", "subfolder": ""}
        )
        job = (await http.get(f"/api/jobs/{done.prompt_id}")).json()
        listing = (await http.get("/api/jobs", params={"limit": 1})).json()
        double = await http.get("/api/api/jobs", params={"limit": 1})
        missing = await http.get("/api/jobs/does-not-exist")
        history_all = (await http.get("/history", params={"max_items": 1})).json()
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    assert view.headers["content-disposition"] == 'filename="s01_00001_.png"'
    assert job["status"] == "completed" and job["workflow_id"] == "demo-workflow-id"
    assert job["preview_output"]["nodeId"] == "3" and job["outputs_count"] == 1
    assert set(job) >= {"outputs", "execution_status", "workflow"}
    assert listing["pagination"] == {"offset": 0, "limit": 1, "total": 1, "has_more": False}
    assert double.status_code == 200
    assert missing.status_code == 404 and missing.json() == {"error": "Job not found"}
    assert list(history_all) == [done.prompt_id]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"filename": "../secret.png", "type": "output"}, 400),
        ({"filename": "x.png", "type": "bogus"}, 400),
        ({"filename": "nope.png", "type": "output", "subfolder": ""}, 404),
        ({"filename": "x.png", "type": "output", "subfolder": ".."}, 403),
        ({}, 404),
    ],
)
async def test_view_refuses_like_comfyui(
    engine: EngineServer,
    params: dict[str, str],
    status: int,
) -> None:
    """/view answers 400, 403 and 404 by ComfyUI's rules."""
    async with httpx.AsyncClient(base_url=engine.url) as http:
        assert (await http.get("/view", params=params)).status_code == status


async def test_view_reencodes_previews_and_channels(engine: EngineServer) -> None:
    """preview=jpeg/webp and channel=rgb/a re-encode the stored file."""
    done = await run_prompt(engine.url, no_model_prompt("enc"))
    name = done.history["outputs"]["3"]["images"][0]["filename"]
    async with httpx.AsyncClient(base_url=engine.url) as http:
        jpeg = await http.get("/view", params={"filename": name, "preview": "jpeg;80"})
        webp = await http.get("/view", params={"filename": name, "preview": "webp;50"})
        rgb = await http.get("/view", params={"filename": name, "channel": "rgb"})
        alpha = await http.get("/view", params={"filename": name, "channel": "a"})
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
    assert webp.headers["content-type"] == "image/webp" and webp.content[8:12] == b"WEBP"
    assert rgb.headers["content-type"] == alpha.headers["content-type"] == "image/png"


async def test_upload_reuses_identical_bytes_and_renames_others(engine: EngineServer) -> None:
    """Uploads follow ComfyUI's naming: same bytes keep the name, new bytes get ' (1)'."""
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(png, format="PNG")
    async with httpx.AsyncClient(base_url=engine.url) as http:
        first = await http.post(
            "/upload/image",
            files={"image": ("pic.png", png.getvalue())},
            data={"overwrite": "true"},
        )
        same = await http.post("/upload/image", files={"image": ("pic.png", png.getvalue())})
        other = await http.post("/upload/image", files={"image": ("pic.png", b"other bytes")})
        missing = await http.post("/upload/image", data={"type": "input"})
        info = (await http.get("/object_info/LoadImage")).json()
    assert first.json() == {"name": "pic.png", "subfolder": "", "type": "input"}
    assert same.json()["name"] == "pic.png"
    assert other.json()["name"] == "pic (1).png"
    assert missing.status_code == 400
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["pic (1).png", "pic.png"]
    loaded = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "pic.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "up"}},
    }
    done = await run_prompt(engine.url, loaded)
    assert done.history["status"]["status_str"] == "success"


async def test_upload_mask_puts_the_uploaded_alpha_into_the_original(
    engine: EngineServer,
) -> None:
    """/upload/mask stores original_ref's image with the mask's alpha, under the mask's name."""
    original, mask = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (16, 8), (10, 200, 10)).save(original, format="PNG")
    painted = Image.new("RGBA", (8, 4), (0, 0, 0, 255))
    painted.paste((0, 0, 0, 0), (0, 0, 4, 4))  # the left half is masked out
    painted.save(mask, format="PNG")
    async with httpx.AsyncClient(base_url=engine.url) as http:
        await http.post("/upload/image", files={"image": ("photo.png", original.getvalue())})
        ref = json.dumps({"filename": "photo.png", "subfolder": "", "type": "input"})
        stored = await http.post(
            "/upload/mask",
            files={"image": ("clipspace-mask.png", mask.getvalue())},
            data={"original_ref": ref},
        )
        missing = await http.post(
            "/upload/mask",
            files={"image": ("m.png", mask.getvalue())},
            data={"original_ref": json.dumps({"filename": "nope.png", "type": "input"})},
        )
        unreadable = await http.post(
            "/upload/mask", files={"image": ("m.png", mask.getvalue())}, data={"original_ref": "{"}
        )
        view = await http.get("/view", params={"filename": "clipspace-mask.png", "type": "input"})
        metadata = await http.get(
            "/view_metadata/checkpoints", params={"filename": "x.safetensors"}
        )
    assert stored.json() == {"name": "clipspace-mask.png", "subfolder": "", "type": "input"}
    assert (missing.status_code, unreadable.status_code, metadata.status_code) == (404, 400, 404)
    with Image.open(io.BytesIO(view.content)) as result:
        assert result.size == (16, 8) and result.mode == "RGBA"
        assert result.getpixel((2, 4)) == (10, 200, 10, 0)  # masked: transparent
        assert result.getpixel((12, 4)) == (10, 200, 10, 255)  # kept: the original, opaque


async def test_discovery_routes(engine: EngineServer) -> None:
    """object_info, system_stats, features, models and embeddings have ComfyUI's shapes."""
    async with httpx.AsyncClient(base_url=engine.url) as http:
        info = (await http.get("/object_info")).json()
        unknown = (await http.get("/object_info/NoSuchNode")).json()
        stats = (await http.get("/api/system_stats")).json()
        features = (await http.get("/features")).json()
        folders = (await http.get("/models")).json()
        checkpoints = (await http.get("/models/checkpoints")).json()
        nonsense = await http.get("/models/nonsense")
        embeddings = (await http.get("/embeddings")).json()
        head = await http.head("/object_info")
    assert {"KSampler", "SaveImage", "GetImageSize"} <= set(info)
    assert (
        "tiny-random.safetensors"
        in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    )
    assert unknown == {}
    assert stats["devices"][0]["name"] == "cpu"
    assert stats["system"]["sakuga_engine"] == "stand-in renderer, not a diffusion model"
    assert stats["system"]["comfyui_version"].endswith("sakuga-engine")
    assert features["supports_preview_metadata"] is True
    assert "checkpoints" in folders and "tiny-random.safetensors" in checkpoints
    assert nonsense.status_code == 404
    assert embeddings == []
    assert head.status_code == 200


async def test_origin_check_and_options(engine: EngineServer) -> None:
    """A loopback Host with a different Origin gets 403; OPTIONS always 200."""
    host = engine.url.removeprefix("http://")
    async with httpx.AsyncClient(base_url=engine.url) as http:
        foreign = await http.get("/queue", headers={"Origin": "http://example.com"})
        same = await http.get("/queue", headers={"Origin": f"http://{host}"})
        localhost = await http.get("/queue", headers={"Origin": f"http://localhost:{engine.port}"})
        options = await http.options("/prompt")
        interrupt = await http.post("/interrupt")
    assert foreign.status_code == 403 and foreign.content == b""
    assert same.status_code == 200
    assert localhost.status_code == 403
    assert options.status_code == 200
    assert interrupt.status_code == 200 and interrupt.content == b""


async def test_queue_and_history_edits_answer_empty_200(engine: EngineServer) -> None:
    """POST /queue and POST /history reply 200 with an empty body; deleted history is {}."""
    done = await run_prompt(engine.url, no_model_prompt("del"))
    async with httpx.AsyncClient(base_url=engine.url) as http:
        delete = await http.post("/history", json={"delete": [done.prompt_id]})
        gone = (await http.get(f"/history/{done.prompt_id}")).json()
        clear = await http.post("/queue", json={"clear": True, "delete": ["unknown"]})
        bad = await http.post("/queue", content=b"{not json")
    assert delete.status_code == 200 and delete.content == b""
    assert gone == {}
    assert clear.status_code == 200 and clear.content == b""
    assert bad.status_code == 500
