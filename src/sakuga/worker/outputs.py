"""A run's output files: each downloaded, stored as a blob and recorded as an asset, once,
beside the socket reader; the run joins them before it records its outcome.

While the prompt runs, each row is written as soon as its file is stored, so the job's
event streams show it at once. Once the backend has said the prompt ended, rows still on
their way are held instead and written with the outcome, in the same transaction.
"""

from __future__ import annotations

import asyncio
import mimetypes
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sakuga.artifacts import Artifacts
from sakuga.comfy.client import ComfyClient
from sakuga.comfy.protocol import OutputFile
from sakuga.domain.jobs import Job
from sakuga.errors import BackendError

# Output files of one job downloaded at once, while the socket and /history are followed.
PARALLEL_DOWNLOADS = 4

Record = Callable[[dict[str, Any]], Awaitable[None]]


class Outputs:
    """``collect`` starts an output's download in the background; ``stored`` joins them.

    ``record`` writes the asset row (the runner's lease-checked write); a blob the retention
    sweep removed between its store and that row is written again from the bytes in hand
    (``restore`` does that for the held rows, once they are written).
    """

    def __init__(self, client: ComfyClient, artifacts: Artifacts, job: Job, record: Record):
        self._client = client
        self._artifacts = artifacts
        self._job = job
        self._record = record
        self._seen: set[tuple[str, str, str, str]] = set()
        self._pending: list[asyncio.Task[None]] = []
        self._downloads = asyncio.Semaphore(PARALLEL_DOWNLOADS)
        self._holding = False
        self._held: list[tuple[dict[str, Any], bytes]] = []
        self._taken: list[tuple[dict[str, Any], bytes]] = []

    @property
    def pending(self) -> list[asyncio.Task[None]]:
        """The downloads not joined yet (to cancel on shutdown)."""
        return self._pending

    def collect(self, output: OutputFile) -> None:
        """Download and record ``output`` in the background (once per file)."""
        key = (output.node_id, output.filename, output.subfolder, output.type)
        if key not in self._seen:
            self._seen.add(key)
            self._pending.append(asyncio.create_task(self._store(output)))

    def hold(self) -> None:
        """From now on, keep the rows of files stored later for ``take_held`` (the run ended)."""
        self._holding = True

    def take_held(self) -> list[dict[str, Any]]:
        """The rows held so far, each handed out once, for the caller to write."""
        held, self._held = self._held, []
        self._taken += held
        return [row for row, _ in held]

    async def restore(self) -> None:
        """Once the taken rows are written: put back a blob the sweep removed meanwhile."""
        taken, self._taken = self._taken, []
        for row, data in taken:
            await self._keep_blob(row, data)

    async def stored(self, *, quiet: bool = False) -> None:
        """Wait for every output started so far; the first failure is raised unless ``quiet``
        (the attempt failed anyway: keep what arrived, as far as it arrives)."""
        while self._pending:
            task = self._pending.pop(0)
            try:
                await task
            except BackendError:
                if not quiet:
                    raise

    async def _store(self, output: OutputFile) -> None:
        async with self._downloads:
            row, data = await collect_output(self._client, self._artifacts, self._job, output)
        if self._holding:
            self._held.append((row, data))
            return
        await self._record(row)
        await self._keep_blob(row, data)

    async def _keep_blob(self, row: dict[str, Any], data: bytes) -> None:
        if not self._artifacts.exists(row["hash"]):
            await asyncio.to_thread(self._artifacts.put, data)


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
