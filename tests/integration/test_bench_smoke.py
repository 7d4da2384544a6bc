"""``python -m bench.run --quick`` runs end to end and produces numbers (speed is not tested)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bench.run import main_async, parse_args


@pytest.mark.timeout(180)
async def test_quick_benchmarks_produce_a_number_for_every_measurement(tmp_path: Path) -> None:
    outcome = await main_async(parse_args(["--quick", "--out", str(tmp_path)]))

    rows = outcome.rows["sqlite"]
    names = " | ".join(row.name for row in rows)
    for expected in ("overhead per job, blank", "overhead per job, txt2img", "submit, workers off"):
        assert expected in names
    assert "status read" in names and "gap between jobs" in names
    for row in rows:
        assert row.summary.n > 0, row.name
        assert math.isfinite(row.summary.p50_ms) and math.isfinite(row.summary.p99_ms), row.name
    assert outcome.phases["sqlite"], "the traced run found no phases"
    assert outcome.json_path is not None
    written = json.loads(outcome.json_path.read_text())
    assert len(written["results"]) == len(rows)
    assert written["machine"]["nproc"] >= 1
