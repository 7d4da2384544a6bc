"""Turn a backend's output file into a stored asset row (download, hash, blob, record)."""

from __future__ import annotations

import asyncio
import mimetypes
import uuid
from datetime import UTC, datetime
from typing import Any

from sakuga.artifacts import Artifacts
from sakuga.comfy.client import ComfyClient
from sakuga.comfy.protocol import OutputFile
from sakuga.domain.jobs import Job


async def collect_output(
    client: ComfyClient, artifacts: Artifacts, job: Job, output: OutputFile
) -> tuple[dict[str, Any], bytes]:
    """Download ``output`` from the backend, store its blob; the asset row and the bytes."""
    data = await client.download(output)
    digest = await asyncio.to_thread(artifacts.put, data)
    content_type = mimetypes.guess_type(output.filename)[0] or "application/octet-stream"
    row = {
        "id": str(uuid.uuid4()),
        "owner": job.owner,
        "hash": digest,
        "size_bytes": len(data),
        "content_type": content_type,
        "file_path": output.filename,
        "tags": ["output"],
        "job_id": job.id,
        "node_id": output.node_id,
        "kind": output.kind,
        "created_at": datetime.now(UTC),
    }
    return row, data
