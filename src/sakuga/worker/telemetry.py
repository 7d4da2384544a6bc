"""Backend telemetry around one attempt: ``/system_stats`` VRAM figures before and after.

Telemetry never delays or fails a job: "before" is the health probe's recent reading (or
a sample taken beside the dispatch), "after" is sampled once the outcome is recorded and
the backend's slot is free again, each is bounded by a short deadline, and any failure
only leaves the figure out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sakuga.comfy.client import ComfyClient

log = logging.getLogger(__name__)

# The device figures kept from ComfyUI's ``/system_stats`` (bytes).
VRAM_FIELDS = ("vram_total", "vram_free", "torch_vram_total", "torch_vram_free")


def device_figures(stats: Any) -> dict[str, Any] | None:
    """The first device's name and VRAM figures from a ``/system_stats`` body (pure)."""
    devices = stats.get("devices") if isinstance(stats, dict) else None
    if not isinstance(devices, list) or not devices or not isinstance(devices[0], dict):
        return None
    device = devices[0]
    figures: dict[str, Any] = {
        key: device[key] for key in VRAM_FIELDS if isinstance(device.get(key), int | float)
    }
    figures["name"] = device.get("name")
    return figures


def telemetry_record(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``{"device", "before": {vram…}, "after": {vram…}}``; None when neither was sampled."""
    if before is None and after is None:
        return None
    device = (before or {}).get("name") or (after or {}).get("name")

    def vram(figures: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if figures is None else {k: v for k, v in figures.items() if k != "name"}

    return {"device": device, "before": vram(before), "after": vram(after)}


async def sample(client: ComfyClient, timeout_s: float) -> dict[str, Any] | None:
    """One ``/system_stats`` reading within ``timeout_s``; None on any failure."""
    try:
        async with asyncio.timeout(timeout_s):
            stats = await client.system_stats()
    except Exception as exc:  # telemetry must never fail the job, whatever went wrong
        log.debug("system_stats sample failed: %s", exc)
        return None
    return device_figures(stats)


class Sampler:
    """``sampler.start()`` before the run; ``await sampler.result()`` after it (or ``close``).

    "Before" is the health probe's reading when it is recent (``recent``, a
    ``/system_stats`` body), else a sample taken in a task the run does not wait for;
    ``result`` takes the "after" sample and always ends that task.
    """

    def __init__(self, client: ComfyClient, timeout_s: float, recent: Any = None) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._recent = device_figures(recent) if recent is not None else None
        self._before: asyncio.Task[dict[str, Any] | None] | None = None

    def start(self) -> None:
        if self._recent is None:
            self._before = asyncio.create_task(sample(self.client, self.timeout_s))

    async def result(self) -> dict[str, Any] | None:
        """Take the "after" sample and combine it with "before" (each bounded)."""
        try:
            after = await sample(self.client, self.timeout_s)
            before = await self._before if self._before is not None else self._recent
        finally:
            await self.close()
        return telemetry_record(before, after)

    async def close(self) -> None:
        """Cancel the "before" sample if it is still pending."""
        if self._before is not None and not self._before.done():
            self._before.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._before
