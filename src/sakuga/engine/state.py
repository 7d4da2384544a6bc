"""Everything one engine instance owns: folders, queue, sockets, worker, live node info."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sakuga.engine.executor import Executor
from sakuga.engine.files import DataDirs
from sakuga.engine.hub import Hub
from sakuga.engine.object_info import build_object_info
from sakuga.engine.options import EngineOptions
from sakuga.engine.queue import PromptQueue


class EngineState:
    """The engine behind the routes; ``start``/``stop`` own the worker task."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.faults = options.faults
        self.dirs = DataDirs(options.data_dir)
        self.hub = Hub(lambda: self.faults.silent)
        self.queue = PromptQueue(self.broadcast_status)
        self.executor = Executor(self.queue, self.hub, self.dirs, options, self.faults)
        self._worker: asyncio.Task[None] | None = None
        self._info_key: tuple[float, int] | None = None
        self._info: dict[str, Any] = {}

    @property
    def server_flags(self) -> dict[str, Any]:
        """``GET /features`` and the websocket ``feature_flags`` reply."""
        return {
            "supports_preview_metadata": True,
            "max_upload_size": self.options.max_upload_size,
            "extension": {"manager": {"supports_v4": True}},
        }

    def exec_info(self) -> dict[str, Any]:
        """``{"exec_info": {"queue_remaining": N}}``."""
        return {"exec_info": {"queue_remaining": self.queue.remaining}}

    def broadcast_status(self) -> None:
        """The ``status`` message sent on every queue change."""
        self.hub.send_json("status", {"status": self.exec_info()})

    def object_info(self) -> dict[str, Any]:
        """The live ``/object_info`` (rebuilt when input/ changes)."""
        folder = self.dirs.folder("input")
        try:
            stat = folder.stat()
            key = (stat.st_mtime, stat.st_nlink)
        except OSError:
            key = (0.0, 0)
        if key != self._info_key:
            self._info = build_object_info(self.options.checkpoints, self.dirs.input_files())
            self._info_key = key
        return self._info

    def forget_object_info(self) -> None:
        """Force a rebuild (after an upload, whose mtime change may be too fine to see)."""
        self._info_key = None

    def file_exists(self, folder: str, name: str) -> bool:
        """Validation's view of input files: ``(folder type, file name)``."""
        if folder != "input":
            return self.dirs.annotated(name, folder).is_file()
        return self.dirs.input_exists(name)

    async def start(self) -> None:
        """Prepare the folders and start the worker."""
        self.dirs.prepare()
        self._worker = asyncio.create_task(self.executor.run_forever(), name="sakuga-engine-worker")

    async def stop(self) -> None:
        """Close the sockets, cancel the worker and wait for it, then empty temp/."""
        self.hub.close_all()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self.dirs.wipe_temp()
