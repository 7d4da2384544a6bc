"""Prompts under the client's own client_id share one websocket to the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from sakuga.comfy.client import ComfyClient
from tests.fixtures import engine as engine_plugin
from tests.integration.test_comfy_client import FAST, Recorder, txt2img

make_engine = engine_plugin.make_engine

pytestmark = pytest.mark.timeout(30)


class Counting(ComfyClient):
    """The real client, counting the websockets it opens."""

    opened = 0

    async def open_socket(self, client_id: str) -> ClientConnection | None:
        self.opened += 1
        return await super().open_socket(client_id)


@pytest.fixture
async def engine(make_engine: Any) -> AsyncIterator[Any]:
    # Steps long enough that the prompts overlap: one runs while the others wait.
    async with make_engine(step_s=0.02) as server:
        yield server


@pytest.fixture
async def client(engine: Any) -> AsyncIterator[Counting]:
    async with Counting(engine.url, deadlines=FAST, name="engine") as comfy:
        yield comfy


async def _run(client: ComfyClient, prefix: str, prompt_id: str) -> tuple[Any, Recorder]:
    seen = Recorder()
    result = await client.run(
        txt2img(prefix, steps=4), prompt_id=prompt_id, client_id=client.client_id, on_event=seen
    )
    return result, seen


async def test_concurrent_prompts_share_one_socket_and_get_only_their_own_events(
    client: Counting,
) -> None:
    runs = await asyncio.gather(*(_run(client, f"shared{i}", f"p-{i}") for i in range(3)))
    assert client.opened == 1
    for i, (result, seen) in enumerate(runs):
        assert result.prompt_id == f"p-{i}"
        assert seen.outputs == list(result.outputs)
        assert all(o.filename.startswith(f"shared{i}") for o in seen.outputs)
        # Each run saw its own sampler steps, in order, and ended at 1.0.
        assert {p.step for p in seen.progress if p.steps == 4} >= {1, 2, 3, 4}
        assert seen.values == sorted(seen.values) and seen.values[-1] == 1.0


async def test_a_dropped_shared_socket_is_reopened_and_its_prompts_complete(
    client: Counting, engine: Any
) -> None:
    await _run(client, "before", "p-before")
    assert client.opened == 1
    async with httpx.AsyncClient() as http:
        faults = f"{engine.url}/sakuga/faults"
        (await http.post(faults, json={"drop_ws": True})).raise_for_status()
        dropped = await asyncio.gather(*(_run(client, f"drop{i}", f"p-d{i}") for i in range(2)))
        (await http.post(faults, json={"drop_ws": False})).raise_for_status()
    for result, seen in dropped:
        assert result.outputs and seen.values[-1] == 1.0
    reopened = client.opened
    assert reopened > 1
    # Messages flow again on the reopened socket: the sampler's steps arrive live.
    _, seen = await _run(client, "after", "p-after")
    assert {p.step for p in seen.progress if p.steps == 4} >= {1, 2, 3, 4}
    assert client.opened == reopened
