"""What every benchmark shares: counts (full or quick), databases, the client, server specs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.databases import Databases
from bench.engine_process import engine_process
from bench.remote import Clients, Where
from bench.server import BenchServer, ServerSpec


@dataclass(frozen=True)
class Counts:
    """How much each benchmark does; every loop also stops at its time bound."""

    overhead_jobs: int  # sequential jobs per template
    overhead_warmup: int  # unmeasured sequential jobs before them
    trace_jobs: int  # sequential jobs in the instrumented run
    concurrency: int  # client connections for throughput
    submit_count: int
    submit_s: float
    read_count: int
    read_s: float
    gap_jobs: int


FULL = Counts(
    overhead_jobs=100,
    overhead_warmup=10,
    trace_jobs=40,
    concurrency=32,
    submit_count=5000,
    submit_s=5.0,
    read_count=20000,
    read_s=5.0,
    gap_jobs=150,
)
QUICK = Counts(
    overhead_jobs=5,
    overhead_warmup=2,
    trace_jobs=4,
    concurrency=8,
    submit_count=80,
    submit_s=1.0,
    read_count=200,
    read_s=1.0,
    gap_jobs=8,
)


@dataclass(frozen=True)
class Context:
    """Databases to start servers on, the load client, and how much to do."""

    databases: Databases
    clients: Clients
    counts: Counts
    where: Where = "process"
    tcp_nodelay: bool = False
    compare_inline: bool = True
    engine: Literal["embedded", "process"] = "embedded"

    def data_dir(self, label: str) -> Path:
        """A new folder for one server's artifacts and engine files."""
        path = self.databases.root / f"data-{label}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    @asynccontextmanager
    async def backends(self, data_dir: Path, step_s: float = 0.0) -> AsyncIterator[tuple[str, ...]]:
        """No backend (the server embeds its engine), or one engine process at ``step_s``."""
        if self.engine == "embedded":
            yield ()
            return
        async with engine_process(data_dir / "engine-process", step_s) as url:
            yield (url,)

    def server(
        self,
        database_url: str,
        data_dir: Path,
        backends: tuple[str, ...],
        *,
        workers: bool = True,
        capacity: int = 2,
        step_s: float = 0.0,
    ) -> BenchServer:
        """sakuga on ``database_url``; ``backends`` empty runs its embedded engine at ``step_s``."""
        spec = ServerSpec(
            database_url=database_url,
            data_dir=data_dir,
            workers=workers,
            capacity=capacity,
            tcp_nodelay=self.tcp_nodelay,
            backends=backends,
            step_s=step_s,
        )
        return BenchServer(spec)
