"""The ComfyUI backends sakuga dispatches to, with their cached ``/object_info``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from sakuga.comfy.client import ComfyClient, Deadlines
from sakuga.domain.inputs import listed_files, upload_inputs
from sakuga.domain.validation import ValidationResult, validate_prompt
from sakuga.errors import BackendError, NoBackendInfo, WorkflowInvalid
from sakuga.store import Store
from sakuga.store import tables as t

log = logging.getLogger(__name__)


@dataclass
class Backend:
    """One ComfyUI server: its name, slot capacity, client and last known node catalogue.

    ``url`` is the backend's identity in the store (attempts, eligibility); the embedded
    engine is named ``embedded`` so its jobs survive the engine moving to another port.
    """

    url: str
    capacity: int
    client: ComfyClient
    object_info: dict[str, Any] | None = None
    refreshed_at: datetime | None = None
    busy: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class BackendPool:
    """All configured backends; validates workflows against what each one can run."""

    def __init__(self, endpoints: dict[str, str], *, capacity: int, deadlines: Deadlines) -> None:
        """``endpoints`` maps each backend's name to its base URL (usually the same)."""
        self.backends = {
            name: Backend(name, capacity, ComfyClient(url, deadlines=deadlines, name=name))
            for name, url in endpoints.items()
        }

    async def __aenter__(self) -> BackendPool:
        for backend in self.backends.values():
            await backend.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for backend in self.backends.values():
            await backend.client.__aexit__(None, None, None)

    def get(self, url: str) -> Backend | None:
        return self.backends.get(url)

    async def load_cached(self, store: Store) -> None:
        """Start from the catalogues persisted by an earlier run."""
        async with store.db.read() as conn:
            rows = (await conn.execute(select(t.backends))).mappings().all()
        for row in rows:
            backend = self.backends.get(row["url"])
            if backend is not None and backend.object_info is None:
                backend.object_info = row["object_info"]

    async def refresh(self, backend: Backend, store: Store | None = None) -> bool:
        """Fetch ``/object_info`` once (bounded by the client's deadlines); persist it."""
        async with backend.lock:
            try:
                info = await backend.client.object_info()
            except BackendError as exc:
                log.warning("object_info refresh failed: %s", exc, extra={"backend": backend.url})
                return False
            backend.object_info = info
            backend.refreshed_at = datetime.now(UTC)
        if store is not None:
            await _persist(store, backend)
        return True

    async def refresh_all(self, store: Store | None = None) -> None:
        await asyncio.gather(*(self.refresh(b, store) for b in self.backends.values()))

    def upload_inputs(self) -> set[str]:
        """``Class.input`` names that take uploaded files on any known backend."""
        found: set[str] = set()
        for backend in self.backends.values():
            found |= upload_inputs(backend.object_info or {})
        return found

    async def eligible(
        self,
        workflow: dict[str, Any],
        *,
        store: Store | None = None,
        staged: frozenset[str] = frozenset(),
    ) -> tuple[str, ...]:
        """Backends that can run ``workflow``; raises WorkflowInvalid when none can.

        An unknown enum value (say a checkpoint added since the last fetch) triggers one
        refresh of that backend before the workflow is rejected (DECISIONS 12).
        """
        known = [b for b in self.backends.values() if b.object_info is not None]
        if not known:
            await self.refresh_all(store)
            known = [b for b in self.backends.values() if b.object_info is not None]
        if not known:
            raise NoBackendInfo(
                "no ComfyUI backend has answered /object_info yet; retry shortly "
                f"(backends: {', '.join(self.backends) or 'none configured'})"
            )
        results: dict[str, ValidationResult] = {}
        for backend in known:
            result = _validate(workflow, backend, staged)
            if not result.ok and _mentions_enum(result):
                await self.refresh(backend, store)
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
    info = backend.object_info or {}
    listed = listed_files(info)

    def file_exists(_folder: str, name: str) -> bool:
        # Staged uploads are put on the backend at dispatch; the rest must already be there.
        return name in staged or name in listed

    return validate_prompt(workflow, info, file_exists=file_exists)


def _mentions_enum(result: ValidationResult) -> bool:
    return any(
        err.get("type") == "value_not_in_list"
        for entry in result.node_errors.values()
        for err in entry.get("errors", [])
    )


async def _persist(store: Store, backend: Backend) -> None:
    assert backend.object_info is not None
    async with store.db.begin() as conn:
        await conn.execute(t.backends.delete().where(t.backends.c.url == backend.url))
        await conn.execute(
            t.backends.insert().values(
                url=backend.url,
                object_info=backend.object_info,
                refreshed_at=backend.refreshed_at or datetime.now(UTC),
            )
        )
