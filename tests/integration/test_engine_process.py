"""``sakuga engine`` as its own process: announces its port, renders, stops cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
import websockets

from tests.fixtures.engine import (
    REPO,
    EngineProcess,
    run_prompt,
    txt2img_prompt,
    ws_url,
)

pytestmark = pytest.mark.timeout(60)


async def _render(proc: EngineProcess) -> bytes:
    done = await run_prompt(proc.url, txt2img_prompt(seed=77, text="a lighthouse", width=80))
    image = done.history["outputs"]["9"]["images"][0]
    async with httpx.AsyncClient(base_url=proc.url) as http:
        return (await http.get("/view", params=image)).content


async def test_same_prompt_gives_identical_png_bytes_across_processes(
    engine_process: Callable[..., EngineProcess],
) -> None:
    """Two separate engine processes write byte-identical PNGs for the same prompt."""
    first, second = engine_process(), engine_process()
    assert first.url != second.url
    assert await _render(first) == await _render(second)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signals_stop_the_engine_cleanly(
    engine_process: Callable[..., EngineProcess],
    sig: signal.Signals,
) -> None:
    proc = engine_process()
    async with httpx.AsyncClient(base_url=proc.url) as http:
        assert (await http.get("/prompt")).json() == {"exec_info": {"queue_remaining": 0}}
    assert proc.stop(sig) == 0


def test_help_shows_every_option_with_its_env_var() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sakuga.cli.main", "engine", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    for name in ("HOST", "PORT", "STEP_S", "CHECKPOINTS", "DATA_DIR", "FAIL_NODE", "OOM"):
        assert f"SAKUGA_ENGINE_{name}" in result.stdout
    for name in ("CRASH_AT_STEP", "SILENT", "DROP_WS", "LATENCY_S", "HANG"):
        assert f"SAKUGA_ENGINE_{name}" in result.stdout


async def test_env_vars_configure_the_engine(engine_process: Callable[..., EngineProcess]) -> None:
    proc = engine_process(env={"SAKUGA_ENGINE_CHECKPOINTS": "a.safetensors,b.safetensors"})
    async with httpx.AsyncClient(base_url=proc.url) as http:
        assert (await http.get("/models/checkpoints")).json() == ["a.safetensors", "b.safetensors"]


async def test_sigterm_mid_prompt_closes_sockets_and_exits_cleanly(
    engine_process: Callable[..., EngineProcess],
) -> None:
    proc = engine_process("--hang")
    async with websockets.connect(ws_url(proc.url, "c")) as ws:
        await ws.recv()
        async with httpx.AsyncClient(base_url=proc.url) as http:
            await http.post("/prompt", json={"prompt": txt2img_prompt(), "client_id": "c"})
        async with asyncio.timeout(10):
            while json.loads(await ws.recv())["data"].get("node") != "3":
                pass
        code = await asyncio.to_thread(proc.stop)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert code == 0


def test_a_busy_port_is_reported_plainly(engine_process: Callable[..., EngineProcess]) -> None:
    running = engine_process()
    port = running.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sakuga.cli.main",
            "engine",
            "--port",
            port,
            "--data-dir",
            str(running.data_dir),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
