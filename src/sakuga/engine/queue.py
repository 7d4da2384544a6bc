"""The prompt queue and history, with ComfyUI's semantics (PROTOCOL §4.3, §4.5, §8).

One prompt runs at a time; pending prompts wait in a heap ordered by ``(number,
prompt_id)``. Every queue change calls ``on_change`` (the ``status`` broadcast). History is
in memory, oldest first, capped at 10 000 entries.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

HISTORY_CAP = 10_000


@dataclass
class QueueItem:
    """A queued prompt: ``[number, prompt_id, prompt, extra_data, outputs]`` on the wire."""

    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    sensitive: dict[str, Any] = field(default_factory=dict)

    def as_list(self) -> list[Any]:
        """The 5-element list ``GET /queue`` and history show (sensitive data stripped)."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        """The websocket sid that receives this prompt's events, if any."""
        value = self.extra_data.get("client_id")
        return value if isinstance(value, str) else None


class PromptQueue:
    """Pending heap, the running prompt, and finished prompts' history."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._heap: list[tuple[float, str, int, QueueItem]] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.counter = 0

    def next_number(self, front: bool) -> int:
        """Consume the POST counter (even for prompts that fail validation)."""
        number = -self.counter if front else self.counter
        self.counter += 1
        return number

    def put(self, item: QueueItem) -> None:
        """Queue a prompt and broadcast the new status."""
        heapq.heappush(self._heap, (item.number, item.prompt_id, next(self._seq), item))
        self._wakeup.set()
        self._on_change()

    async def get(self) -> QueueItem:
        """Wait for the next prompt, mark it running and broadcast the status."""
        while not self._heap:
            self._wakeup.clear()
            await self._wakeup.wait()
        item = heapq.heappop(self._heap)[3]
        self.running = item
        self._on_change()
        return item

    def task_done(self, item: QueueItem, entry: dict[str, Any]) -> None:
        """Write the history entry, clear the running prompt, broadcast the status."""
        if len(self.history) >= HISTORY_CAP and item.prompt_id not in self.history:
            del self.history[next(iter(self.history))]
        self.history[item.prompt_id] = entry
        self.running = None
        self._on_change()

    @property
    def remaining(self) -> int:
        """Pending plus running: ``queue_remaining``."""
        return len(self._heap) + (1 if self.running is not None else 0)

    @property
    def pending(self) -> list[QueueItem]:
        """Pending prompts in raw heap order (not execution order, like ComfyUI)."""
        return [entry[3] for entry in self._heap]

    def delete(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts (never the running one); one status per removal."""
        for prompt_id in prompt_ids:
            for index, entry in enumerate(self._heap):
                if entry[1] == prompt_id:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                    self._on_change()
                    break

    def clear(self) -> None:
        """Remove every pending prompt."""
        if self._heap:
            self._heap.clear()
            self._on_change()

    def history_items(self, max_items: int | None, offset: int) -> dict[str, Any]:
        """``GET /history``: oldest first; with ``max_items`` and no offset, the last ones."""
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        offset = max(offset, 0)
        out: dict[str, Any] = {}
        for index, (key, value) in enumerate(self.history.items()):
            if index < offset:
                continue
            if max_items is not None and len(out) >= max_items:
                break
            out[key] = value
        return out

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        """Forget these finished prompts (unknown ids are ignored)."""
        for prompt_id in prompt_ids:
            self.history.pop(prompt_id, None)

    def clear_history(self) -> None:
        """Forget every finished prompt."""
        self.history.clear()
