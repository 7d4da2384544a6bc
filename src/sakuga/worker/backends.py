"""The ComfyUI backends sakuga dispatches to: catalogues, health, breakers, drain, registry.

Configured backends (``SAKUGA_BACKENDS``, or the embedded engine) are always present.
Backends registered at run time are rows of the ``backends`` table: re-opened at start, and
picked up by other processes through ``sync``. A backend takes new jobs only while it is
*dispatchable*: reachable at its last probe, its breaker closed, not draining.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sakuga.comfy.client import ComfyClient, Deadlines
from sakuga.domain.breaker import BreakerPolicy, CircuitBreaker, Clock
from sakuga.domain.inputs import Uploads, staged_blobs
from sakuga.domain.validation import ValidationResult, validate_prompt
from sakuga.errors import (
    BackendConflict,
    BackendError,
    BackendNotRegistrable,
    NoBackendInfo,
    WorkflowInvalid,
)
from sakuga.store import Store
from sakuga.worker.telemetry import Readings

log = logging.getLogger(__name__)

# Attempt error codes that say the backend itself failed (not the workflow): breaker input.
BACKEND_FAULTS = frozenset({"backend_unreachable", "backend_lost"})
WIDEN_PAGE = 200
# A workflow naming a value the catalogue lacks fetches the catalogue again (DECISIONS 12),
# but not when it was fetched this recently: a flood of bad names must not hammer
# /object_info, which a real ComfyUI answers slowly and at megabytes.
ENUM_REFRESH_MIN_S = 2.0


@dataclass(eq=False)
class Backend:
    """One ComfyUI server: name, URL-safe id, slots, client, catalogue and health.

    ``url`` is the backend's identity in the store (attempts, eligibility); the embedded
    engine is named ``embedded`` so its jobs survive the engine moving to another port.
    ``busy`` counts jobs running or prefetched here; ``capacity`` bounds it.
    """

    url: str
    capacity: int
    client: ComfyClient
    breaker: CircuitBreaker
    id: str = ""
    registered: bool = False
    draining: bool = False
    removing: bool = False
    reachable: bool = False
    object_info: dict[str, Any] | None = None
    refreshed_at: datetime | None = None
    fetched_mono: float | None = None  # time.monotonic() when the catalogue's fetch began
    busy: int = 0
    probe_failures: int = 0
    last_probe_at: datetime | None = None
    last_error: str | None = None
    readings: Readings = field(default_factory=Readings)  # its /system_stats
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _uploads: tuple[dict[str, Any], Uploads] | None = field(default=None, init=False, repr=False)

    @property
    def uploads(self) -> Uploads:
        """Its catalogue's upload inputs and listed files, worked out once per catalogue
        (a refresh replaces ``object_info``, never changes it in place)."""
        info = self.object_info or {}
        if self._uploads is None or self._uploads[0] is not info:
            self._uploads = (info, Uploads.of(info))
        return self._uploads[1]

    @property
    def healthy(self) -> bool:
        """Answered its last probe and its breaker is closed."""
        return self.reachable and self.breaker.allows_dispatch()

    @property
    def accepts_jobs(self) -> bool:
        return self.healthy and not self.draining and not self.removing

    @property
    def load(self) -> float:
        return self.busy / self.capacity


def backend_id(url: str) -> str:
    """A readable, URL-safe id: ``http://gpu1:8188`` -> ``gpu1-8188``; ``embedded`` as is."""
    parts = urlsplit(url)
    if parts.hostname:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        text = f"{parts.hostname}-{port}-{parts.path}"
    else:
        text = url
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "backend"


class BackendPool:
    """Every backend of this process; validates workflows and picks where jobs go."""

    def __init__(
        self,
        endpoints: dict[str, str],
        *,
        capacity: int,
        deadlines: Deadlines,
        breaker: BreakerPolicy | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """``endpoints`` maps each configured backend's name to its base URL (usually the
        same); ``capacity`` is their slot count and the default for registrations."""
        self.capacity = capacity
        self.deadlines = deadlines
        self.policy = breaker or BreakerPolicy()
        self.clock = clock
        self.configured = frozenset(endpoints)
        self.backends: dict[str, Backend] = {}
        self._listeners: list[Callable[[], None]] = []
        self._admin = asyncio.Lock()  # add / remove / sync: one at a time
        for name, url in endpoints.items():
            self._put(self._new(name, url, capacity))

    async def __aenter__(self) -> BackendPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for backend in self.backends.values():
            await backend.client.aclose()

    # -- lookup and change notification ---------------------------------------------------

    def get(self, url: str) -> Backend | None:
        return self.backends.get(url)

    def by_id(self, ident: str) -> Backend | None:
        return next((b for b in self.backends.values() if b.id == ident), None)

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs whenever work may have become dispatchable somewhere."""
        self._listeners.append(listener)

    def off_change(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def dispatchable(self) -> list[Backend]:
        """Backends that may claim a job now, least loaded first (busy/capacity ratio)."""
        order = {url: i for i, url in enumerate(self.backends)}
        free = [b for b in self.backends.values() if b.accepts_jobs and b.busy < b.capacity]
        return sorted(free, key=lambda b: (b.load, b.busy, order[b.url]))

    # -- breaker input from jobs ------------------------------------------------------------

    def backend_error(self, name: str) -> None:
        """A job lost the backend (unreachable, prompt gone): counts toward its breaker."""
        backend = self.backends.get(name)
        if backend is not None and backend.breaker.failure():
            log.warning(
                "circuit breaker opened after %d consecutive failures; no jobs for %g s",
                backend.breaker.failures,
                self.policy.reset_s,
                extra={"backend": name},
            )

    def backend_ok(self, name: str) -> None:
        """A job ran to an answer from the backend (success or the workflow's own error)."""
        backend = self.backends.get(name)
        if backend is not None and backend.breaker.success():
            self.changed()

    # -- catalogues -------------------------------------------------------------------------

    async def load(self, store: Store) -> None:
        """At start: cached catalogues and drain flags; registered backends re-opened."""
        for row in await store.backends.rows(catalogues=True):
            backend = self.backends.get(row.url)
            if backend is None:
                if not row.registered:
                    continue  # the cache of a backend no longer configured
                backend = self._new(row.url, row.url, row.capacity or self.capacity, True)
                self._put(backend)
            if backend.object_info is None and row.object_info:
                backend.object_info = row.object_info
                backend.refreshed_at = row.refreshed_at
            backend.draining = row.draining

    async def sync(self, store: Store) -> None:
        """Adopt registrations, removals and drain flags written by other processes."""
        async with self._admin:
            rows = {row.url: row for row in await store.backends.rows()}
            changed = False
            for row in rows.values():
                backend = self.backends.get(row.url)
                if backend is None and row.registered:
                    backend = self._new(row.url, row.url, row.capacity or self.capacity, True)
                    backend.object_info = await store.backends.catalogue(row.url)
                    backend.refreshed_at = row.refreshed_at
                    self._put(backend)
                    changed = True
                if backend is not None and not backend.removing:
                    changed |= backend.draining != row.draining
                    backend.draining = row.draining
            for backend in list(self.backends.values()):
                gone = backend.url not in rows and backend.url not in self.configured
                if backend.registered and gone and not backend.removing:
                    backend.removing = True
                    changed = True
                    await self._settle(backend)
        if changed:
            self.changed()

    async def refresh(
        self, backend: Backend, store: Store | None = None, *, unless_since: float | None = None
    ) -> bool:
        """Fetch ``/object_info`` once (bounded by the client's deadlines); persist it.

        ``unless_since`` (a ``time.monotonic()``): True without fetching when a fetch began
        after it (callers waiting together share one), False without fetching when the
        catalogue is under ``ENUM_REFRESH_MIN_S`` old.
        """
        async with backend.lock:
            fetched = backend.fetched_mono
            if unless_since is not None and fetched is not None:
                if fetched >= unless_since:
                    return True
                if time.monotonic() - fetched < ENUM_REFRESH_MIN_S:
                    return False
            started = time.monotonic()
            try:
                info = await backend.client.object_info()
            except BackendError as exc:
                log.warning("object_info refresh failed: %s", exc, extra={"backend": backend.url})
                return False
            backend.object_info = info
            backend.fetched_mono = started
            backend.refreshed_at = datetime.now(UTC)
        if store is not None:
            await store.backends.save_catalogue(backend.url, info, backend.refreshed_at)
        return True

    async def refresh_all(self, store: Store | None = None) -> None:
        await asyncio.gather(*(self.refresh(b, store) for b in self.backends.values()))

    async def open_all(self, store: Store) -> None:
        """At start: fetch every catalogue; the answer is each backend's first probe."""

        async def first(backend: Backend) -> None:
            backend.reachable = await self.refresh(backend, store)
            backend.last_probe_at = datetime.now(UTC)
            if not backend.reachable:
                backend.last_error = "GET /object_info failed at start"

        await asyncio.gather(*(first(b) for b in self.backends.values()))

    async def widen(self, backend: Backend, store: Store) -> int:
        """Let ``backend`` take queued jobs it can run that were accepted before it arrived
        (or before its catalogue grew). Returns how many jobs it was added to."""
        added, after = 0, 0
        while True:
            page = await store.backends.queued_elsewhere(
                backend.url, after_seq=after, limit=WIDEN_PAGE
            )
            if not page:
                return added
            fits = [
                job
                for job in page
                if _validate(job.workflow, backend, frozenset(staged_blobs(job.workflow))).ok
            ]
            if fits:
                added += await store.backends.add_eligible(fits, backend.url)
            after = page[-1].seq

    def upload_inputs(self) -> set[str]:
        """``Class.input`` names that take uploaded files on any known backend."""
        found: set[str] = set()
        for backend in self.backends.values():
            found |= backend.uploads.inputs
        return found

    # -- run-time registry ------------------------------------------------------------------

    async def add(self, url: str, capacity: int | None, store: Store) -> Backend:
        """Register ``url``: its ``/object_info`` must answer first. Persisted, so it is
        re-opened at the next start. Raises ``BackendConflict`` (409) when it is already in
        the pool and ``BackendNotRegistrable`` (422) when it does not answer."""
        url = url.rstrip("/")
        async with self._admin:
            existing = self.backends.get(url)
            if existing is not None:
                what = f"already in the pool as {existing.id!r}"
                if existing.removing:
                    what = "being removed (its running jobs are finishing)"
                raise BackendConflict(f"backend {url} is {what}", details={"id": existing.id})
            backend = self._new(url, url, capacity or self.capacity, registered=True)
            try:
                info = await backend.client.object_info()
            except BackendError as exc:
                await backend.client.aclose()
                accepted = "the base URL of a running ComfyUI server, e.g. http://gpu1:8188"
                message = f"url: {url} did not answer GET /object_info ({exc.message}); give "
                raise BackendNotRegistrable("url", url, accepted, message + accepted) from exc
            if not any(isinstance(v, dict) and "input" in v for v in info.values()):
                await backend.client.aclose()
                raise BackendNotRegistrable(
                    "url", url, "a ComfyUI server (its /object_info lists node classes)"
                )
            backend.object_info, backend.refreshed_at = info, datetime.now(UTC)
            backend.reachable, backend.last_probe_at = True, backend.refreshed_at
            await store.backends.register(
                url, capacity=backend.capacity, object_info=info, at=backend.refreshed_at
            )
            self._put(backend)
        log.info("backend registered (capacity %d)", backend.capacity, extra={"backend": url})
        await self.widen(backend, store)
        self.changed()
        return backend

    async def drain(self, backend: Backend, store: Store, *, draining: bool = True) -> None:
        """Send no new jobs (running ones finish); ``draining=False`` resumes. Persisted."""
        if backend.removing:
            raise BackendConflict(
                f"backend {backend.url} is being removed (its running jobs are finishing); "
                "register it again once it is gone",
                details={"id": backend.id},
            )
        backend.draining = draining
        await store.backends.set_draining(backend.url, draining)
        state = "draining" if draining else "resumed"
        log.info("backend %s", state, extra={"backend": backend.url})
        self.changed()

    async def remove(self, backend: Backend, store: Store) -> bool:
        """Drain, then drop ``backend`` once its running jobs have finished.

        True when it is gone already (it was idle); False while its jobs finish. Configured
        backends cannot be removed (they come back at start): ``BackendConflict``.
        """
        if backend.url in self.configured:
            raise BackendConflict(
                f"backend {backend.url} is configured (SAKUGA_BACKENDS or the embedded engine) "
                "and would come back at the next start; drain it instead, or remove it from "
                "the configuration",
                details={"id": backend.id},
            )
        async with self._admin:
            await store.backends.delete(backend.url)
            backend.removing = True
            await self._settle(backend)
        return backend.url not in self.backends

    async def settle(self, backend: Backend) -> None:
        """After a job left ``backend``: finish a pending removal once it is idle."""
        if backend.removing:
            async with self._admin:
                await self._settle(backend)

    async def _settle(self, backend: Backend) -> None:
        if backend.removing and backend.busy == 0 and self.backends.get(backend.url) is backend:
            del self.backends[backend.url]
            await backend.client.aclose()
            log.info("backend removed", extra={"backend": backend.url})
            self.changed()

    def _new(self, name: str, url: str, capacity: int, registered: bool = False) -> Backend:
        client = ComfyClient(url, deadlines=self.deadlines, name=name)
        breaker = CircuitBreaker(self.policy, self.clock)
        return Backend(name, capacity, client, breaker, registered=registered)

    def _put(self, backend: Backend) -> None:
        base = backend_id(backend.url)
        taken = {b.id for b in self.backends.values()}
        backend.id = next(
            ident
            for ident in (base, *(f"{base}-{n}" for n in range(2, len(taken) + 3)))
            if ident not in taken
        )
        self.backends[backend.url] = backend

    # -- validation -------------------------------------------------------------------------

    async def eligible(
        self,
        workflow: dict[str, Any],
        *,
        store: Store | None = None,
        staged: frozenset[str] = frozenset(),
    ) -> tuple[str, ...]:
        """Backends that can run ``workflow``; raises WorkflowInvalid when none can.

        Backends being removed are left out. Unhealthy and draining ones count: the job
        waits for them to come back or resume (and a backend registered meanwhile takes it,
        see ``widen``). An unknown enum value (say a checkpoint added since the last fetch)
        triggers one refresh of that backend before the workflow is rejected (DECISIONS 12).
        """
        open_ = [b for b in self.backends.values() if not b.removing]
        known = [b for b in open_ if b.object_info is not None]
        if not known:
            await asyncio.gather(*(self.refresh(b, store) for b in open_))
            known = [b for b in open_ if b.object_info is not None]
        if not known:
            raise NoBackendInfo(
                "no ComfyUI backend has answered /object_info yet; retry shortly "
                f"(backends: {', '.join(self.backends) or 'none configured'})"
            )
        asked = time.monotonic()
        results: dict[str, ValidationResult] = {}
        for backend in known:
            result = _validate(workflow, backend, staged)
            if (
                not result.ok
                and _mentions_enum(result)
                and await self.refresh(backend, store, unless_since=asked)
            ):
                result = _validate(workflow, backend, staged)
            results[backend.url] = result
        ok = tuple(url for url, r in results.items() if r.ok)
        if ok:
            return ok
        first = next(iter(results.values()))
        raise WorkflowInvalid(
            first.error
            or {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            },
            first.node_errors,
        )


def _validate(
    workflow: dict[str, Any], backend: Backend, staged: frozenset[str]
) -> ValidationResult:
    listed = backend.uploads.listed

    def file_exists(_folder: str, name: str) -> bool:
        # Staged uploads are put on the backend at dispatch; the rest must already be there.
        return name in staged or name in listed

    return validate_prompt(workflow, backend.object_info or {}, file_exists=file_exists)


def _mentions_enum(result: ValidationResult) -> bool:
    return any(
        err.get("type") == "value_not_in_list"
        for entry in result.node_errors.values()
        for err in entry.get("errors", [])
    )
