"""``python -m bench.sequential``: a quick sequential-jobs run for comparing two builds.

One server, 20 unmeasured jobs, then ``--jobs`` jobs one at a time; prints wall and server
CPU per job and the client's end-to-end p50. This shared VM drifts by tens of percent
within an hour, so compare two builds by alternating short runs, never two long ones far
apart (BENCHMARKS.md, "Against the start of this session"). Another build's code is
measured by putting its ``src`` first: ``PYTHONPATH=/path/to/old/src python -m bench.sequential``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import loops
from bench.client import TEMPLATES
from bench.context import FULL, Context
from bench.databases import Databases
from bench.loadgen import SequentialSpec
from bench.remote import Clients

WARMUP = 20
# Inputs apart from every other benchmark's, so no job is an engine cache hit.
FIRST_INDEX = 5_000_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sequential", description=__doc__)
    parser.add_argument("--jobs", type=int, default=150, help="measured jobs (default 150)")
    parser.add_argument("--engine", choices=("embedded", "process"), default="process")
    parser.add_argument("--postgres", metavar="URL", help="run on PostgreSQL (an admin URL)")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> str:
    """Run it; the one-line result."""
    with tempfile.TemporaryDirectory(prefix="sakuga-seq-") as tmp:
        async with Clients() as clients:
            databases = Databases(Path(tmp) / "db", args.postgres)
            ctx = Context(databases=databases, clients=clients, counts=FULL, engine=args.engine)
            data_dir = ctx.data_dir("seq")
            async with (
                databases.fresh("seq") as url,
                ctx.backends(data_dir) as backends,
                ctx.server(url, data_dir, backends) as server,
            ):
                warm = tuple(TEMPLATES[i % len(TEMPLATES)] for i in range(WARMUP))
                await clients.sequential(SequentialSpec(server.url, warm, first_index=FIRST_INDEX))
                templates = tuple(TEMPLATES[i % len(TEMPLATES)] for i in range(args.jobs))
                spec = SequentialSpec(server.url, templates, first_index=FIRST_INDEX + WARMUP)
                wall, cpu = time.perf_counter(), time.process_time()
                timings = await clients.sequential(spec)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    end_to_end = statistics.median(t.end_to_end_s for t in timings)
    failed = sum(t.status != "succeeded" for t in timings)
    return (
        f"{args.engine} engine, {databases.kind}: {len(timings)} jobs ({failed} failed); "
        f"wall {1000 * wall / len(timings):.1f} ms/job, server CPU {1000 * cpu / len(timings):.1f}"
        f" ms/job, end to end p50 {1000 * end_to_end:.1f} ms"
    )


def main(argv: Sequence[str] | None = None) -> None:
    print(loops.run(main_async(parse_args(argv)), "uvloop"))


if __name__ == "__main__":
    main()
