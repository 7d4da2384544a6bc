"""Client loops, bounded in count and time: concurrent submits or reads, sequential jobs.

They run in a child process (so the client does not share the server's event loop) or
inline; ``run_load_sync`` and ``run_sequential_sync`` are the child's entry points.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx

from bench.client import http_client, submit, wait_terminal
from bench.loops import Loop, run

Op = Literal["submit", "read", "health"]


@dataclass(frozen=True)
class LoadSpec:
    """``concurrency`` connections doing ``op`` until ``count`` ops or ``duration_s`` pass."""

    url: str
    op: Op
    concurrency: int
    count: int
    duration_s: float
    warmup: int = 0  # ops run first and not measured (connections open, caches fill)
    template: str = "blank"
    job_ids: tuple[str, ...] = ()
    loop: Loop = "uvloop"


@dataclass
class LoadResult:
    """Latencies of the measured ops that succeeded, their window, errors, created job ids."""

    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0  # CPU the client's process used in the window
    errors: int = 0
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SequentialSpec:
    """One job per template in ``templates``, each submitted once the previous one ended."""

    url: str
    templates: tuple[str, ...]
    timeout_s: float = 30.0
    first_index: int = 0  # varies the jobs' inputs apart from another run's
    loop: Loop = "uvloop"


@dataclass(frozen=True)
class JobTiming:
    """One sequential job as the client saw it (perf-counter seconds)."""

    job_id: str
    template: str
    status: str
    submit_s: float
    end_to_end_s: float


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec``; stops by itself at ``count`` measured ops or ``duration_s``."""
    result = LoadResult()
    async with contextlib.AsyncExitStack() as stack:
        # One client per connection: one shared httpx pool costs O(connections) per request
        # and caps a 32-connection client near 400 req/s (encode/httpx#3215).
        clients = [
            await stack.enter_async_context(http_client(spec.url, 1))
            for _ in range(spec.concurrency)
        ]
        if spec.warmup:
            await _phase(clients, spec, range(spec.warmup), 1e9, LoadResult(), result.job_ids)
        started, cpu = time.perf_counter(), time.process_time()
        indices = range(spec.warmup, spec.warmup + spec.count)
        await _phase(clients, spec, indices, spec.duration_s, result, result.job_ids)
        result.elapsed_s = time.perf_counter() - started
        result.cpu_s = time.process_time() - cpu
    return result


async def _phase(
    clients: list[httpx.AsyncClient],
    spec: LoadSpec,
    indices: range,
    duration_s: float,
    into: LoadResult,
    created: list[str],
) -> None:
    deadline = time.perf_counter() + duration_s
    counter = iter(indices)
    picker = random.Random(indices.start)

    async def one_connection(http: httpx.AsyncClient) -> None:
        while (index := next(counter, None)) is not None and time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                if spec.op == "submit":
                    created.append(await submit(http, spec.template, index))
                elif spec.op == "read":
                    response = await http.get(f"/api/v2/jobs/{picker.choice(spec.job_ids)}")
                    response.raise_for_status()
                else:
                    (await http.get("/healthz")).raise_for_status()
            except httpx.HTTPError:
                into.errors += 1
                continue
            into.latencies_s.append(time.perf_counter() - started)

    await asyncio.gather(*(one_connection(http) for http in clients))


async def run_sequential(spec: SequentialSpec) -> list[JobTiming]:
    """Submit each job only after the previous one's terminal status arrived."""
    timings: list[JobTiming] = []
    async with http_client(spec.url, 2) as http:
        for index, template in enumerate(spec.templates):
            started = time.perf_counter()
            async with asyncio.timeout(spec.timeout_s):
                job_id = await submit(http, template, spec.first_index + index)
                submitted = time.perf_counter()
                status = await wait_terminal(http, job_id)
            ended = time.perf_counter()
            timings.append(
                JobTiming(job_id, template, status, submitted - started, ended - started)
            )
    return timings


def run_load_sync(spec: LoadSpec) -> LoadResult:
    """``run_load`` in a fresh event loop (the child process's entry point)."""
    return run(run_load(spec), spec.loop)


def run_sequential_sync(spec: SequentialSpec) -> list[JobTiming]:
    """``run_sequential`` in a fresh event loop (the child process's entry point)."""
    return run(run_sequential(spec), spec.loop)
