"""The stand-in engine as its own process (``sakuga engine --port 0``), like a real ComfyUI."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

READY_PREFIX = "sakuga engine listening on "
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@asynccontextmanager
async def engine_process(data_dir: Path, step_s: float = 0.0) -> AsyncIterator[str]:
    """Start the engine at ``step_s`` per step; yields its URL; stops it (by its pid) on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sakuga.cli.main",
        "engine",
        "--port",
        "0",
        "--step-s",
        str(step_s),
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            line = (await process.stdout.readline()).decode().strip()
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"sakuga engine did not announce its URL (got {line!r})")
        yield line.removeprefix(READY_PREFIX)
    finally:
        await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
