"""Orchestration overhead per job: end to end as the client sees it, minus engine execution."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from bench.client import TEMPLATES
from bench.context import Context
from bench.engine_times import windows
from bench.loadgen import SequentialSpec
from bench.report import Row, Target
from bench.server import BenchServer
from bench.stats import Summary

TARGETS = (Target("p50_ms", "<", 10), Target("p99_ms", "<", 50))
# Warm-up jobs get other inputs than measured ones, so no measured job is an engine cache hit.
WARMUP_FIRST_INDEX = 1_000_000


@dataclass
class _Samples:
    overhead_s: list[float]
    end_to_end_s: list[float]
    engine_s: list[float]
    submit_s: list[float]
    server_s: list[float]  # created_at -> completed_at minus engine time (no HTTP in it)


async def measure(ctx: Context, server: BenchServer) -> tuple[list[Row], list[str]]:
    """Run jobs one at a time (each template in turn); returns rows and the jobs' ids."""
    per_template = ctx.counts.overhead_jobs
    templates = tuple(t for t in TEMPLATES for _ in range(per_template))
    # Unmeasured first jobs: one-off costs (statement compilation, first connections,
    # lazy imports) are not per-job overhead, as the throughput loops' warm-up requests.
    warmup = tuple(TEMPLATES[i % len(TEMPLATES)] for i in range(ctx.counts.overhead_warmup))
    spec = SequentialSpec(server.url, warmup, first_index=WARMUP_FIRST_INDEX)
    await ctx.clients.sequential(spec, ctx.where)
    cpu = time.process_time()
    timings = await ctx.clients.sequential(SequentialSpec(server.url, templates), ctx.where)
    cpu = time.process_time() - cpu
    jobs = await server.jobs(t.job_id for t in timings)
    prompt_of = {jid: job.attempts[-1].prompt_id for jid, job in jobs.items() if job.attempts}
    found = await windows(server.engine_url, prompt_of.values())
    samples: dict[str, _Samples] = defaultdict(lambda: _Samples([], [], [], [], []))
    failed = 0
    for timing in timings:
        job = jobs.get(timing.job_id)
        win = found.get(prompt_of.get(timing.job_id, ""))
        if timing.status != "succeeded" or job is None or win is None:
            failed += 1
            continue
        into = samples[timing.template]
        into.overhead_s.append(timing.end_to_end_s - win.duration_s)
        into.end_to_end_s.append(timing.end_to_end_s)
        into.engine_s.append(win.duration_s)
        into.submit_s.append(timing.submit_s)
        if job.completed_at is not None:
            server_side = (job.completed_at - job.created_at).total_seconds() - win.duration_s
            into.server_s.append(server_side)
    cpu_ms = 1000 * cpu / max(1, len(timings))
    rows = [_row(template, s, failed, cpu_ms) for template, s in samples.items()]
    return rows, [t.job_id for t in timings]


def _row(template: str, s: _Samples, failed: int, cpu_ms: float) -> Row:
    parts = {
        "end_to_end": Summary.of_seconds(s.end_to_end_s),
        "engine_execution": Summary.of_seconds(s.engine_s),
        "submit_latency": Summary.of_seconds(s.submit_s),
        "server_side_overhead": Summary.of_seconds(s.server_s),
    }
    note = (
        f"p50: end to end {parts['end_to_end'].p50_ms:.1f} ms = engine "
        f"{parts['engine_execution'].p50_ms:.0f} ms + overhead; POST answered in "
        f"{parts['submit_latency'].p50_ms:.1f} ms; created->completed minus engine "
        f"{parts['server_side_overhead'].p50_ms:.1f} ms; {cpu_ms:.1f} ms server CPU per job"
    )
    return Row(
        f"overhead per job, {template} (sequential)",
        Summary.of_seconds(s.overhead_s),
        TARGETS,
        extra={
            "failed_jobs": failed,
            "server_cpu_ms_per_job": cpu_ms,
            **{name: summary.as_dict() for name, summary in parts.items()},
        },
        note=note,
    )
