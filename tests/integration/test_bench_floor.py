"""``python -m bench.floor`` runs end to end and produces numbers (speed is not tested)."""

from __future__ import annotations

import math

import pytest
from bench.floor import main_async, parse_args


@pytest.mark.timeout(120)
async def test_the_floor_benchmark_runs_every_job_and_gives_a_figure_for_each_row() -> None:
    rows = await main_async(parse_args(["--jobs", "4"]))

    assert [row.name.split(",")[0] for row in rows] == [
        "overhead per job",
        "submit",
        "gap between jobs",
        "gap between jobs",
    ]
    for row in rows:
        assert row.failed == 0, row.line()
        assert math.isfinite(row.p50_ms) and row.p50_ms >= 0, row.line()
