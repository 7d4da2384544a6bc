"""Backend health: one probe loop per backend, and the backend table read back from the store.

A probe is ``GET /system_stats`` bounded by ``probe_timeout_s``. While a backend answers it is
probed every ``probe_s``; while it does not, the interval doubles up to ``breaker_reset_s``
(``domain.breaker.probe_delay_s``). Each result feeds the backend's breaker; an open breaker
is not probed until it half-opens, and that probe is its trial. A backend that answers again
has its ``/object_info`` fetched anew and may take queued jobs accepted while it was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from sakuga.domain.breaker import probe_delay_s
from sakuga.errors import BackendError
from sakuga.settings import Settings
from sakuga.store import Store
from sakuga.worker.backends import Backend, BackendPool

log = logging.getLogger(__name__)


class HealthMonitor:
    """``async with HealthMonitor(pool, store, settings)``: probes until closed.

    Probe tasks follow the pool: a backend added (here or, through ``BackendPool.sync``
    every ``probe_s``, by another process) gets one; a removed backend's is cancelled.
    """

    def __init__(self, pool: BackendPool, store: Store, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.settings = settings
        self._probes: dict[Backend, asyncio.Task[None]] = {}
        self._reconcile = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HealthMonitor:
        self.pool.on_change(self._reconcile.set)
        self._follow_pool()
        self._supervisor = asyncio.create_task(self._supervise(), name="backend-health")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pool.off_change(self._reconcile.set)
        tasks = [t for t in (self._supervisor, *self._probes.values()) if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        self._probes.clear()

    async def _supervise(self) -> None:
        while True:
            try:
                await self.pool.sync(self.store)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is unreachable: the pool keeps what it has
                log.exception("reading the backends table failed")
            self._follow_pool()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.probe_s):
                    await self._reconcile.wait()
            self._reconcile.clear()

    def _follow_pool(self) -> None:
        current = set(self.pool.backends.values())
        for backend in list(self._probes):
            if backend not in current:
                self._probes.pop(backend).cancel()
        for backend in current - set(self._probes):
            self._probes[backend] = asyncio.create_task(
                self._watch(backend), name=f"probe-{backend.url}"
            )

    async def _watch(self, backend: Backend) -> None:
        settings = self.settings
        # A backend never reached yet (registered by another process) is probed at once.
        first = backend.last_probe_at is None
        while True:
            if not first:
                delay = probe_delay_s(
                    settings.probe_s, backend.probe_failures, settings.breaker_reset_s
                )
                await asyncio.sleep(max(delay, backend.breaker.remaining_s()))
            first = False
            try:
                await self.probe(backend)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the loop: the backend would never recover
                log.exception("probe failed unexpectedly", extra={"backend": backend.url})

    async def probe(self, backend: Backend) -> bool | None:
        """Probe once; True/False is the answer, None when the open breaker forbids it."""
        if not backend.breaker.allows_probe():
            return None
        was_healthy, was_reachable = backend.healthy, backend.reachable
        timeout_s = self.settings.probe_timeout_s
        error: str | None = None
        try:
            async with asyncio.timeout(timeout_s):
                backend.readings.record(await backend.client.system_stats())
        except TimeoutError:
            error = f"GET /system_stats got no answer within {timeout_s:g} s"
        except BackendError as exc:
            error = exc.message
        backend.last_probe_at = datetime.now(UTC)
        backend.last_error = error
        if error is None:
            backend.probe_failures = 0
            backend.reachable = True
            backend.breaker.success()
            if not was_reachable or backend.object_info is None:
                await self._came_back(backend)
        else:
            backend.probe_failures += 1
            backend.reachable = False
            backend.breaker.failure()
        if backend.healthy != was_healthy:
            if backend.healthy:
                log.info("backend healthy again", extra={"backend": backend.url})
            else:
                log.warning(
                    "backend unhealthy: %s (breaker %s)",
                    error or "breaker open",
                    backend.breaker.state.value,
                    extra={"backend": backend.url},
                )
            self.pool.changed()
        return error is None

    async def _came_back(self, backend: Backend) -> None:
        """Its catalogue may have changed while it was away (models added, nodes updated)."""
        if await self.pool.refresh(backend, self.store):
            added = await self.pool.widen(backend, self.store)
            if added:
                log.info("%d queued jobs can run here too", added, extra={"backend": backend.url})
