"""Submissions per second and status reads per second under concurrent keep-alive clients.

Each row also records how busy each side was (CPU seconds per wall second, 1.0 = one core):
the server's process, and the client's child process; inline, one process does both.
"""

from __future__ import annotations

import time

from bench.context import Context
from bench.loadgen import LoadResult, LoadSpec, Op
from bench.remote import Where
from bench.report import Row, Target
from bench.server import BenchServer
from bench.stats import Summary

SUBMIT_TARGET = (Target("rate_per_s", ">=", 500),)


async def baseline(ctx: Context, server: BenchServer, where: Where) -> Row:
    """``GET /healthz`` (no I/O): what the HTTP stack and client alone allow."""
    return await _row(
        ctx, server, "health", f"GET /healthz (HTTP stack only), client {where}", where
    )


async def submissions(
    ctx: Context, server: BenchServer, label: str, where: Where
) -> tuple[Row, list[str]]:
    """``POST /api/v2/jobs`` (blank template) as fast as the connections allow."""
    spec = _spec(ctx, server, "submit", ())
    result, cpu = await _load(ctx, spec, where)
    row = _as_row(f"submit, {label}, client {where}", result, cpu, SUBMIT_TARGET)
    return row, result.job_ids


async def reads(
    ctx: Context, server: BenchServer, job_ids: list[str], label: str, where: Where
) -> Row:
    """``GET /api/v2/jobs/{id}`` over ``job_ids`` (picked at random)."""
    return await _row(
        ctx, server, "read", f"status read, {label}, client {where}", where, tuple(job_ids)
    )


def _spec(ctx: Context, server: BenchServer, op: Op, job_ids: tuple[str, ...]) -> LoadSpec:
    c = ctx.counts
    count, duration_s = (c.submit_count, c.submit_s) if op == "submit" else (c.read_count, c.read_s)
    return LoadSpec(
        server.url, op, c.concurrency, count, duration_s, c.concurrency * 2, job_ids=job_ids
    )


async def _row(
    ctx: Context,
    server: BenchServer,
    op: Op,
    name: str,
    where: Where,
    job_ids: tuple[str, ...] = (),
) -> Row:
    result, cpu = await _load(ctx, _spec(ctx, server, op, job_ids), where)
    return _as_row(name, result, cpu, (), jobs=len(job_ids))


async def _load(ctx: Context, spec: LoadSpec, where: Where) -> tuple[LoadResult, dict[str, float]]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = await ctx.clients.load(spec, where)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    usage = {"server_cpu": cpu / wall}  # this process: the server (and the client, inline)
    if where == "process" and result.elapsed_s:
        usage["client_cpu"] = result.cpu_s / result.elapsed_s
    return result, usage


def _as_row(
    name: str,
    result: LoadResult,
    cpu: dict[str, float],
    targets: tuple[Target, ...],
    **extra: int,
) -> Row:
    return Row(
        name,
        Summary.of_seconds(result.latencies_s, elapsed_s=result.elapsed_s),
        targets,
        extra={"errors": result.errors, **cpu, **extra},
    )
