"""The servers each benchmark runs against, and the order they run in."""

from __future__ import annotations

from bench import gap, overhead, phases, throughput
from bench.context import Context
from bench.phases import Phase
from bench.remote import Where
from bench.report import Row

# A job that takes time, as on a GPU: one sampler step of this many seconds.
STEP_S = 0.05


async def queued_jobs(ctx: Context) -> list[Row]:
    """Workers off (the queue only grows): HTTP baseline, submissions, reads of queued jobs."""
    rows: list[Row] = []
    wheres: tuple[Where, ...] = ("process", "inline") if ctx.compare_inline else (ctx.where,)
    data_dir = ctx.data_dir("queue")
    async with (
        ctx.databases.fresh("queue") as url,
        ctx.backends(data_dir) as backends,
        ctx.server(url, data_dir, backends, workers=False) as server,
    ):
        rows.append(await throughput.baseline(ctx, server, ctx.where))
        job_ids: list[str] = []
        for where in wheres:
            row, created = await throughput.submissions(ctx, server, "workers off", where)
            rows.append(row)
            job_ids += created
        for where in wheres:
            label = f"{len(job_ids)} queued jobs"
            rows.append(await throughput.reads(ctx, server, job_ids, label, where))
    return rows


async def running_jobs(ctx: Context, trace: bool) -> tuple[list[Row], list[Phase]]:
    """Workers on: overhead, the traced run, reads of finished jobs, submissions last."""
    traced: list[Phase] = []
    data_dir = ctx.data_dir("run")
    async with (
        ctx.databases.fresh("run") as url,
        ctx.backends(data_dir) as backends,
        ctx.server(url, data_dir, backends) as server,
    ):
        rows, finished = await overhead.measure(ctx, server)
        if trace:
            traced = await phases.measure(ctx, server)
        label = f"{len(finished)} finished jobs"
        rows.append(await throughput.reads(ctx, server, finished, label, ctx.where))
        row, _ = await throughput.submissions(ctx, server, "workers on", ctx.where)
        rows.append(row)
    return rows, traced


async def dispatch_gap(ctx: Context) -> list[Row]:
    """The engine-side gap at the default capacity 2, without prefetch (1), and with 4 slots;
    then with jobs that take time (a 50 ms step), with and without prefetch."""
    rows = [await gap.measure(ctx, capacity) for capacity in (2, 1, 4)]
    rows += [await gap.measure(ctx, capacity, step_s=STEP_S) for capacity in (2, 1)]
    return rows
