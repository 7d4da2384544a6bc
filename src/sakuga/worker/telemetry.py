"""Backend telemetry around one attempt: ``/system_stats`` VRAM figures before and after.

Telemetry never delays or fails a job: "before" is the health probe's recent reading (or
a sample taken beside the dispatch), "after" is read once the outcome is recorded and the
backend's slot is free again (one reading shared by attempts that end together), each is
bounded by a short deadline, and any failure only leaves the figure out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sakuga.comfy.client import ComfyClient

log = logging.getLogger(__name__)

# Attempts that end within this many seconds of each other share one "after" reading.
AFTER_WINDOW_S = 0.5
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
    stats = await _system_stats(client, timeout_s)
    return None if stats is None else device_figures(stats)


async def _system_stats(client: ComfyClient, timeout_s: float) -> Any:
    try:
        async with asyncio.timeout(timeout_s):
            return await client.system_stats()
    except Exception as exc:  # telemetry must never fail the job, whatever went wrong
        log.debug("system_stats sample failed: %s", exc)
        return None


class Readings:
    """One backend's ``/system_stats`` readings: the latest (health probes record theirs)
    and the "after" readings shared by the attempts that end close together."""

    def __init__(self) -> None:
        self.latest: Any = None
        self.at = 0.0  # time.monotonic() of ``latest``
        self._window_end: float | None = None  # time.monotonic() the open window closes
        self._lock = asyncio.Lock()

    def record(self, stats: Any) -> None:
        self.latest, self.at = stats, time.monotonic()

    def recent(self, max_age_s: float) -> dict[str, Any] | None:
        """The latest reading's figures if it is at most ``max_age_s`` old."""
        if self.latest is None or time.monotonic() - self.at > max_age_s:
            return None
        return device_figures(self.latest)

    async def after(
        self, client: ComfyClient, ended_at: float, timeout_s: float, window_s: float
    ) -> dict[str, Any] | None:
        """A reading taken after ``ended_at`` (monotonic). A window of ``window_s`` opens
        when an attempt ends after the previous one closed; every attempt that ends within
        it shares the one reading taken when it closes."""
        # Attempts that end within one window all wake at its end, so they share the
        # reading taken then and their telemetry reaches the store together.
        if self._window_end is None or ended_at > self._window_end:
            self._window_end = ended_at + window_s
        delay = self._window_end - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the sharing window, not a wait-for
        async with self._lock:
            if self.latest is None or self.at < ended_at:
                stats = await _system_stats(client, timeout_s)
                if stats is None:
                    return None
                self.record(stats)
            return device_figures(self.latest)


class Sampler:
    """``sampler.start()`` before the run; ``await sampler.result(ended_at)`` after it.

    "Before" is the backend's reading when it is at most ``fresh_s`` old (health probes
    keep one), else a sample taken in a task the run does not wait for. "After" is a reading
    taken after the attempt ended, shared with the attempts that ended in the same
    ``AFTER_WINDOW_S`` window, so a busy backend is asked about once per window, not per job.
    """

    def __init__(
        self, client: ComfyClient, readings: Readings, *, timeout_s: float, fresh_s: float
    ) -> None:
        self.client = client
        self.readings = readings
        self.timeout_s = timeout_s
        self._recent = readings.recent(fresh_s)
        self._before: asyncio.Task[dict[str, Any] | None] | None = None

    def start(self) -> None:
        if self._recent is None:
            self._before = asyncio.create_task(sample(self.client, self.timeout_s))

    async def result(self, ended_at: float) -> dict[str, Any] | None:
        """The "after" reading combined with "before" (each bounded)."""
        try:
            after = await self.readings.after(self.client, ended_at, self.timeout_s, AFTER_WINDOW_S)
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
