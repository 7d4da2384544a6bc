"""``python -m bench.run``: every benchmark against sakuga's real server; table + JSON.

Engine at 0 s per step, SQLite in a temporary folder (and PostgreSQL with ``--postgres``),
a keep-alive HTTP client in a child process. Every loop stops by itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loops, scenarios
from bench.context import FULL, QUICK, Context, Counts
from bench.databases import Databases, server_version
from bench.machine import CpuWatch, describe, load_1m
from bench.phases import Phase, phase_table
from bench.remote import Clients
from bench.report import Row, table, write_json

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = ("queue", "run", "gap")
# Past these, something else competed with the run for the CPUs.
BUSY_BEFORE = 0.2  # share of all CPUs in the second before the run
OTHERS_CORES = 0.25  # cores used by other processes, averaged over the run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run on PostgreSQL: an admin URL on 127.0.0.1 "
        "(e.g. postgresql://postgres@127.0.0.1:5432/postgres); "
        "a fresh database is created and dropped per server",
    )
    parser.add_argument(
        "--client",
        choices=("process", "inline"),
        default="process",
        help="where the load client runs (default: a child process)",
    )
    parser.add_argument(
        "--engine",
        choices=("embedded", "process"),
        default="embedded",
        help="the stand-in engine inside the server (default) or as its own process",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of server and client: uvloop (as `sakuga serve` runs) or asyncio "
        "(as tests and the demo run UvicornServer)",
    )
    parser.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="set TCP_NODELAY on the API's listening socket, the fix BENCHMARKS.md proposes "
        "(matters with --loop asyncio; uvloop sets it on every connection itself)",
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {','.join(BENCHMARKS)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    return parser.parse_args(argv)


@dataclass
class Outcome:
    """Everything one run measured, per store."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    phases: dict[str, list[Phase]] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    json_path: Path | None = None


async def run_store(
    databases: Databases, clients: Clients, args: argparse.Namespace, counts: Counts
) -> tuple[list[Row], list[Phase]]:
    """Every selected benchmark on one store."""
    ctx = Context(
        databases=databases,
        clients=clients,
        counts=counts,
        where=args.client,
        tcp_nodelay=args.tcp_nodelay,
        compare_inline=not args.quick,
        engine=args.engine,
    )
    selected = set(args.only.split(","))
    rows: list[Row] = []
    traced: list[Phase] = []
    if "run" in selected:
        found, traced = await scenarios.running_jobs(ctx, trace=True)
        rows += found
    if "queue" in selected:
        rows += await scenarios.queued_jobs(ctx)
    if "gap" in selected:
        rows += await scenarios.dispatch_gap(ctx)
    return rows, traced


async def main_async(args: argparse.Namespace) -> Outcome:
    """Run the benchmarks, print the tables, write the JSON; returns what was measured."""
    unknown = set(args.only.split(",")) - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    counts = QUICK if args.quick else FULL
    pg_version = await server_version(args.postgres) if args.postgres else None
    machine = describe(pg_version)
    watch = CpuWatch()
    outcome = Outcome()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sakuga-bench-") as tmp:
        async with Clients(args.loop) as clients:
            stores: list[str | None] = [None] + ([args.postgres] if args.postgres else [])
            for pg in stores:
                databases = Databases(Path(tmp) / ((pg and "pg") or "sqlite"), pg)
                rows, traced = await run_store(databases, clients, args, counts)
                outcome.rows[databases.kind] = rows
                outcome.phases[databases.kind] = traced
    outcome.context = {
        "machine": machine,
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "mode": "quick" if args.quick else "full",
        "client": args.client,
        "engine": args.engine,
        "loop": args.loop,
        "tcp_nodelay_applied": args.tcp_nodelay,
        "counts": vars(counts),
        "duration_s": round(time.perf_counter() - started, 1),
        "loadavg_1m_at_end": load_1m(),
        "other_processes_cpu_cores": watch.others_cores(),
        "phases": {kind: [vars(p) for p in found] for kind, found in outcome.phases.items()},
    }
    flat = [
        Row(f"[{kind}] {row.name}", row.summary, row.targets, row.extra, row.note)
        for kind, rows in outcome.rows.items()
        for row in rows
    ]
    outcome.json_path = write_json(args.out, outcome.context, flat)
    _print(outcome)
    return outcome


def _print(outcome: Outcome) -> None:
    machine = outcome.context["machine"]
    print(
        f"\nsakuga benchmarks, {machine['date_utc']}: {machine['nproc']} CPUs "
        f"({machine['cpu_model']}), Python {machine['python']}, SQLite {machine['sqlite']}"
        + (f", PostgreSQL {machine['postgresql']}" if machine["postgresql"] else "")
    )
    print(
        f"loop: {outcome.context['loop']}; client: {outcome.context['client']}; "
        f"engine: {outcome.context['engine']}; "
        f"TCP_NODELAY fix applied: "
        f"{outcome.context['tcp_nodelay_applied']}; took {outcome.context['duration_s']} s"
    )
    before, others = machine["cpu_busy_before_start"], outcome.context["other_processes_cpu_cores"]
    pg = " (PostgreSQL's work included)" if machine["postgresql"] else ""
    print(f"CPUs busy just before the run: {before}; other processes during it: {others} cores{pg}")
    if (before or 0) > BUSY_BEFORE or (others or 0) > OTHERS_CORES:
        print("warning: other processes were busy on this machine; wall-clock numbers are inflated")
    for kind, rows in outcome.rows.items():
        print(f"\n## {kind}\n\n{table(rows)}\n")
        for row in rows:
            if row.note:
                print(f"- {row.name}: {row.note}")
            if row.extra.get("errors") or row.extra.get("failed_jobs"):
                print(f"- warning: {row.name}: {row.extra}")
        if outcome.phases.get(kind):
            print(f"\nwhere a sequential job's time goes ({kind}):\n")
            print(phase_table(outcome.phases[kind]))
    print(f"\nJSON: {outcome.json_path}")


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    loops.run(main_async(args), args.loop)


if __name__ == "__main__":
    main()
