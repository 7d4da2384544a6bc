"""sakuga's real server in this process: UvicornServer(create_app(settings)), engine at 0 s."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sakuga.api.app import create_app
from sakuga.api.deps import Services
from sakuga.domain.jobs import Job
from sakuga.service import EMBEDDED
from sakuga.serving import UvicornServer
from sakuga.settings import Settings

UNLIMITED_RATE = "1000000/second"
UNLIMITED_QUEUE = 10**9


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration; ``tcp_nodelay`` is the fix BENCHMARKS.md proposes."""

    database_url: str
    data_dir: Path
    workers: bool = True
    capacity: int = 2
    tcp_nodelay: bool = False  # on the listening socket; accepted ones inherit it (Linux)
    backends: tuple[str, ...] = ()
    step_s: float = 0.0  # the embedded engine's seconds per sampler step

    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            data_dir=self.data_dir,
            backends=list(self.backends),
            engine_step_s=self.step_s,
            workers=self.workers,
            backend_capacity=self.capacity,
            # One benchmark client is one API key: lift its quotas so they are not measured.
            rate_limit=UNLIMITED_RATE,
            max_queued_per_key=UNLIMITED_QUEUE,
        )


class BenchServer:
    """``async with BenchServer(spec) as server``: the API, workers and embedded engine."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.app = create_app(spec.settings())
        self._uvicorn = UvicornServer(self.app)
        if spec.tcp_nodelay:
            self._uvicorn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def url(self) -> str:
        return self._uvicorn.url

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def engine_url(self) -> str:
        """The one backend: the embedded engine, or the engine process given as backend."""
        pool = self.services.backends.backends
        backend = pool[EMBEDDED] if EMBEDDED in pool else next(iter(pool.values()))
        return backend.client.base_url

    async def jobs(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """The stored jobs (with attempts) by id, read straight from the store."""
        found = {job_id: await self.services.store.jobs.get(job_id) for job_id in job_ids}
        return {job_id: job for job_id, job in found.items() if job is not None}

    async def __aenter__(self) -> BenchServer:
        await self._uvicorn.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._uvicorn.__aexit__(exc_type, exc, tb)
