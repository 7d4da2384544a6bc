"""Execution windows as the engine recorded them: ComfyUI's history ``status.messages``.

The timestamps are ComfyUI's integer milliseconds (wall clock), so every derived value has
a resolution of 1 ms.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from bench.client import REQUEST_TIMEOUT_S


@dataclass(frozen=True, order=True)
class Window:
    """One prompt from ``execution_start`` to its terminal message, in epoch ms."""

    start_ms: int
    end_ms: int
    prompt_id: str

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


def window(prompt_id: str, entry: Mapping[str, Any]) -> Window | None:
    """The window of one history entry; None when it never started or never ended."""
    start = end = None
    for name, data in entry.get("status", {}).get("messages", []):
        if name == "execution_start":
            start = data["timestamp"]
        elif name in ("execution_success", "execution_error", "execution_interrupted"):
            end = data["timestamp"]
    if start is None or end is None:
        return None
    return Window(int(start), int(end), prompt_id)


async def windows(engine_url: str, prompt_ids: Iterable[str] | None = None) -> dict[str, Window]:
    """Windows by prompt id from ``GET /history`` (all of them, or just ``prompt_ids``)."""
    async with httpx.AsyncClient(base_url=engine_url, timeout=REQUEST_TIMEOUT_S) as http:
        response = await http.get("/history")
        response.raise_for_status()
        history: dict[str, Any] = response.json()
    wanted = set(prompt_ids) if prompt_ids is not None else set(history)
    found = (window(pid, entry) for pid, entry in history.items() if pid in wanted)
    return {w.prompt_id: w for w in found if w is not None}


def gaps_s(found: Iterable[Window]) -> list[float]:
    """Seconds between each prompt's end and the next prompt's start, in start order."""
    ordered = sorted(found)
    return [(b.start_ms - a.end_ms) / 1000 for a, b in itertools.pairwise(ordered)]
