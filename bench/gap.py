"""The gap on the engine between one job's end and the next one's start, with a full queue.

The queue is filled by a server without workers; a second server on the same database then
starts with workers and drains it, so every job is queued before the first one runs.
"""

from __future__ import annotations

import asyncio
import time

from bench.context import Context
from bench.engine_times import gaps_s, windows
from bench.loadgen import LoadSpec
from bench.report import Row, Target
from bench.server import BenchServer
from bench.stats import Summary
from sakuga.domain.jobs import ACTIVE

TARGETS = (Target("p50_ms", "<", 5),)
DRAIN_TIMEOUT_S = 60.0
DRAIN_POLL_S = 0.05


async def measure(ctx: Context, capacity: int, step_s: float = 0.0) -> Row:
    """Fill a queue, drain it with ``capacity`` slots on the one backend, measure the gaps.

    ``step_s`` > 0 runs one-step txt2img jobs at that many seconds per step (a job that
    takes time, as on a GPU) instead of instant blank ones.
    """
    count = ctx.counts.gap_jobs
    label = f"gap{capacity}-{step_s:g}"
    template = "txt2img" if step_s else "blank"
    data_dir = ctx.data_dir(label)
    async with (
        ctx.databases.fresh(label) as url,
        ctx.backends(data_dir, step_s) as backends,
    ):
        async with ctx.server(url, data_dir, backends, workers=False) as filler:
            spec = LoadSpec(filler.url, "submit", 16, count, DRAIN_TIMEOUT_S, template=template)
            filled = await ctx.clients.load(spec, ctx.where)
        async with ctx.server(url, data_dir, backends, capacity=capacity, step_s=step_s) as server:
            # Workers start with the server: count cost and jobs from here, start-up excluded.
            since_ms, started, cpu = time.time() * 1000, time.perf_counter(), time.process_time()
            await _drain(server)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            jobs = await server.jobs(filled.job_ids)
            prompts = [job.attempts[-1].prompt_id for job in jobs.values() if job.attempts]
            found = await windows(server.engine_url, prompts)
    measured = sum(1 for w in found.values() if w.start_ms >= since_ms)
    prefetched = f"{capacity - 1} prefetched" if capacity > 1 else "no prefetch"
    if step_s:
        prefetched += f"; txt2img, one {1000 * step_s:g} ms step"
    extra = {
        "jobs": len(filled.job_ids),
        "executed": len(found),
        "jobs_per_s": measured / elapsed,
        # This process: workers and the embedded engine (when it is embedded).
        "server_cpu_ms_per_job": 1000 * cpu / max(1, measured),
    }
    return Row(
        f"gap between jobs, capacity {capacity} ({prefetched})",
        Summary.of_seconds(gaps_s(found.values())),
        TARGETS if capacity >= 2 and not step_s else (),
        extra=extra,
        note=f"{extra['jobs_per_s']:.0f} jobs/s drained; "
        f"{extra['server_cpu_ms_per_job']:.1f} ms server CPU per job",
    )


async def _drain(server: BenchServer) -> None:
    """Wait until no job is queued, running or canceling (at most ``DRAIN_TIMEOUT_S``).

    One GROUP BY per look: the looks run in the server's process and count as its CPU."""
    store = server.services.store
    active = {status.value for status in ACTIVE}
    async with asyncio.timeout(DRAIN_TIMEOUT_S):
        while True:
            if not any(status in active for status, _, _ in await store.jobs.counts()):
                return
            await asyncio.sleep(DRAIN_POLL_S)
