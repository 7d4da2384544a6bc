"""Fault switches are validated and named in every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from sakuga.engine.options import EngineOptions, Faults


def test_update_and_reset() -> None:
    faults = Faults()
    faults.update({"oom": True, "latency_s": 1, "crash_at_step": 3, "fail_node": "KSampler"})
    assert faults.to_dict() == {
        "fail_node": "KSampler",
        "oom": True,
        "crash_at_step": 3,
        "silent": False,
        "drop_ws": False,
        "latency_s": 1.0,
        "hang": False,
    }
    faults.reset()
    assert faults == Faults()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"nonsense": True}, "nonsense"),
        ({"oom": "yes"}, "oom"),
        ({"crash_at_step": 0}, "crash_at_step"),
        ({"latency_s": -1}, "latency_s"),
        ({"fail_node": 3}, "fail_node"),
    ],
)
def test_bad_switches_are_rejected_by_name(changes: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Faults().update(changes)


def test_options_reject_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="step_s"):
        EngineOptions(data_dir=tmp_path, step_s=-1)
    with pytest.raises(ValueError, match="preview_method"):
        EngineOptions(data_dir=tmp_path, preview_method="magic")
    with pytest.raises(ValueError, match="checkpoints"):
        EngineOptions(data_dir=tmp_path, checkpoints=())
