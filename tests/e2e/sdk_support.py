"""Helpers for driving the official comfy-sdk client against a live sakuga server.

The sync SDK client blocks, and the server runs on the test's own event loop, so every
sync call goes through ``asyncio.to_thread``. ``HttpLog`` records what the SDK really sent,
so a test can state the wire sequence (HEAD 404, then POST multipart) and not only the result.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from typing import Any

import httpx
from comfy_sdk import AsyncComfy, Comfy
from PIL import Image

from tests.fixtures.api import RunningApi

SAVE_NODE = "3"  # SaveImage in the small graphs below
TXT2IMG_SAVE_NODE = "9"  # SaveImage in the txt2img template graph


def png(color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def pixel(data: bytes, at: tuple[int, int] = (0, 0)) -> Any:
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel(at)


def image_size(data: bytes) -> tuple[int, int]:
    size: tuple[int, int] = Image.open(io.BytesIO(data)).size
    return size


def blank_invert(width: int = 64, height: int = 48, color: int = 0) -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage, which the embedded engine runs at once."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        SAVE_NODE: {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "sdk"},
        },
    }


def load_invert(image: Any = "placeholder.png") -> dict[str, Any]:
    """LoadImage -> ImageInvert -> SaveImage; set ``1.image`` to an asset handle."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        SAVE_NODE: {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "inv"},
        },
    }


async def txt2img_graph(
    api: RunningApi, *, steps: int, width: int = 64, height: int = 64, prompt: str = "a fox"
) -> dict[str, Any]:
    """The built-in txt2img graph from ``GET /api/v2/templates/txt2img``, filled in.

    A fresh seed each time, so the engine's cache never answers for a new job.
    """
    response = await api.http.get("/api/v2/templates/txt2img")
    assert response.status_code == 200, response.text
    graph: dict[str, Any] = response.json()["workflow"]
    graph["6"]["inputs"]["text"] = prompt
    graph["5"]["inputs"].update(width=width, height=height)
    graph["3"]["inputs"].update(steps=steps, seed=random.randrange(2**32))
    return graph


def engine_url(api: RunningApi) -> str:
    return api.services.backends.backends["embedded"].client.base_url


async def set_fault(api: RunningApi, **switches: Any) -> None:
    async with httpx.AsyncClient(base_url=engine_url(api), timeout=10.0) as engine:
        response = await engine.post("/sakuga/faults", json=switches)
        assert response.status_code == 200, response.text


async def wait_for_status(api: RunningApi, job_id: str, wanted: set[str]) -> str:
    """Read the job's raw SSE stream until a ``status`` frame in ``wanted`` (or the end)."""
    async with api.http.stream("GET", f"/api/v2/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name == "status":
                status: str = json.loads(line[5:])["status"]
                if status in wanted:
                    return status
    raise AssertionError(f"job {job_id} stream ended before any status in {sorted(wanted)}")


@dataclass
class HttpLog:
    """Every response the SDK received: (method, path, status), in order.

    comfy-sdk has no public hook for this, so it is attached to the httpx client the SDK
    owns (``client._low._client``); only the event hooks are touched.
    """

    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def _record(self, response: httpx.Response) -> None:
        request = response.request
        self.calls.append((request.method, request.url.path, response.status_code))

    async def _record_async(self, response: httpx.Response) -> None:
        self._record(response)

    def attach(self, client: Comfy | AsyncComfy) -> None:
        http = client._low._client
        if isinstance(http, httpx.AsyncClient):
            http.event_hooks = {"request": [], "response": [self._record_async]}
        else:
            http.event_hooks = {"request": [], "response": [self._record]}

    def clear(self) -> None:
        self.calls.clear()

    def matching(self, method: str, path_part: str) -> list[tuple[str, str, int]]:
        return [c for c in self.calls if c[0] == method and path_part in c[1]]
