"""Put a job's uploaded inputs on the backend before its prompt is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sakuga.artifacts import Artifacts
from sakuga.comfy.client import ComfyClient
from sakuga.domain.inputs import STAGED_DIR, staged_blobs


async def stage_inputs(
    client: ComfyClient, artifacts: Artifacts, workflow: Mapping[str, Any]
) -> None:
    """Upload every staged blob under its content-derived name (overwrite: same bytes)."""
    for name, digest in staged_blobs(workflow).items():
        data = await asyncio.to_thread(artifacts.read, digest)
        await client.upload_image(
            data, name.removeprefix(STAGED_DIR + "/"), subfolder=STAGED_DIR, overwrite=True
        )
