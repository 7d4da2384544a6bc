"""The single worker: takes prompts off the queue one at a time and runs them."""

from __future__ import annotations

import asyncio

from sakuga.engine.cache import OutputCache
from sakuga.engine.files import DataDirs
from sakuga.engine.hub import INTERNAL_ERROR, Hub
from sakuga.engine.options import EngineOptions, Faults
from sakuga.engine.queue import PromptQueue, QueueItem
from sakuga.engine.run import PromptRun


class Executor:
    """Owns the output cache and the process-global interrupt flag (PROTOCOL §9)."""

    def __init__(
        self, queue: PromptQueue, hub: Hub, dirs: DataDirs, options: EngineOptions, faults: Faults
    ) -> None:
        self.queue, self.hub, self.dirs = queue, hub, dirs
        self.options, self.faults = options, faults
        self.cache = OutputCache()
        self.interrupt = asyncio.Event()
        self.run: PromptRun | None = None

    def request_interrupt(self, prompt_id: str | None = None) -> bool:
        """Set the global flag; with ``prompt_id`` only if that prompt is running."""
        if prompt_id is not None and (self.run is None or self.run.prompt_id != prompt_id):
            return False
        self.interrupt.set()
        return True

    def reconnect_node(self, sid: str) -> str | None:
        """The node executing for ``sid``'s prompt, for the reconnect ``executing`` message."""
        run = self.run
        if run is not None and run.client_id == sid:
            return run.current_node
        return None

    async def run_forever(self) -> None:
        """Run queued prompts until cancelled."""
        while True:
            item = await self.queue.get()
            await self.run_item(item)

    async def run_item(self, item: QueueItem) -> None:
        """Execute one prompt, write its history, then send the end-of-job ``executing``."""
        # A global interrupt sent while idle or between prompts must not kill this one.
        self.interrupt.clear()
        if self.faults.drop_ws:
            self.hub.close_all(INTERNAL_ERROR)
        run = PromptRun(
            item,
            hub=self.hub,
            cache=self.cache,
            dirs=self.dirs,
            options=self.options,
            faults=self.faults,
            interrupt=self.interrupt,
        )
        self.run = run
        try:
            entry = await run.execute()
        finally:
            self.run = None
        self.queue.task_done(item, entry)
        if run.client_id is not None:
            self.hub.send_json(
                "executing", {"node": None, "prompt_id": item.prompt_id}, run.client_id
            )
