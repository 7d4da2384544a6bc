"""``sakuga engine`` as its own process: announces its port, renders, stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from tests.fixtures.engine import (  # noqa: F401
    REPO,
    EngineProcess,
    engine_process,
    run_prompt,
    txt2img_prompt,
)

pytestmark = pytest.mark.timeout(60)


async def _render(proc: EngineProcess) -> bytes:
    done = await run_prompt(proc.url, txt2img_prompt(seed=77, text="a lighthouse", width=80))
    image = done.history["outputs"]["9"]["images"][0]
    async with httpx.AsyncClient(base_url=proc.url) as http:
        return (await http.get("/view", params=image)).content


async def test_same_prompt_gives_identical_png_bytes_across_processes(
    engine_process: Callable[..., EngineProcess],  # noqa: F811
) -> None:
    """Two separate engine processes write byte-identical PNGs for the same prompt."""
    first, second = engine_process(), engine_process()
    assert first.url != second.url
    assert await _render(first) == await _render(second)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signals_stop_the_engine_cleanly(
    engine_process: Callable[..., EngineProcess],  # noqa: F811
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


async def test_env_vars_configure_the_engine(engine_process: Callable[..., EngineProcess]) -> None:  # noqa: F811
    proc = engine_process(env={"SAKUGA_ENGINE_CHECKPOINTS": "a.safetensors,b.safetensors"})
    async with httpx.AsyncClient(base_url=proc.url) as http:
        assert (await http.get("/models/checkpoints")).json() == ["a.safetensors", "b.safetensors"]
