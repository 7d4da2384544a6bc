"""The retry policy: what is retried, how long it waits, when a job is poison."""

from __future__ import annotations

import random

import pytest

from sakuga.domain.retry import RetryPolicy, backoff_s, decide

POLICY = RetryPolicy(attempts=5, base_s=2.0, cap_s=300.0, budget_s=3600.0, poison_strikes=3)


def call(**changes: object) -> str:
    args: dict[str, object] = {
        "code": "backend_unreachable",
        "transient": True,
        "failures_before": 0,
        "strikes_before": 0,
        "ran": False,
        "elapsed_s": 0.0,
    }
    args.update(changes)
    return decide(POLICY, rng=random.Random(1), **args).verdict  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes, verdict",
    [
        ({}, "retry"),
        ({"transient": False, "code": "node_execution_error"}, "fail"),
        ({"failures_before": 3}, "retry"),
        ({"failures_before": 4}, "fail"),
        ({"code": "out_of_memory", "ran": True, "strikes_before": 1}, "retry"),
        ({"code": "out_of_memory", "ran": True, "strikes_before": 2}, "poison"),
        ({"code": "backend_lost", "ran": True, "strikes_before": 2}, "poison"),
        ({"code": "backend_unreachable", "ran": False, "strikes_before": 2}, "retry"),
        ({"code": "backend_timeout", "ran": True, "strikes_before": 2}, "retry"),
        ({"elapsed_s": 3599.9, "failures_before": 3}, "fail"),
    ],
)
def test_decision_table(changes: dict[str, object], verdict: str) -> None:
    assert call(**changes) == verdict


def test_strike_only_when_the_backend_was_running_the_job() -> None:
    ran = decide(POLICY, code="out_of_memory", transient=True, failures_before=0,
                 strikes_before=0, ran=True, elapsed_s=0)  # fmt: skip
    queued = decide(POLICY, code="backend_unreachable", transient=True, failures_before=0,
                    strikes_before=0, ran=False, elapsed_s=0)  # fmt: skip
    assert ran.strike and not queued.strike


@pytest.mark.parametrize("failures", range(1, 12))
def test_backoff_is_full_jitter_within_the_cap(failures: int) -> None:
    rng = random.Random(failures)
    ceiling = min(300.0, 2.0 * 2 ** (failures - 1))
    delays = [backoff_s(POLICY, failures, rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.5  # spread out, not clustered at one value


def test_zero_base_removes_waits() -> None:
    assert backoff_s(RetryPolicy(base_s=0.0), 4) == 0.0


def test_retries_of_many_jobs_are_spread() -> None:
    rng = random.Random(7)
    delays = sorted(backoff_s(POLICY, 3, rng) for _ in range(1000))
    # A thundering herd would put them all at one instant; full jitter fills the window.
    assert delays[100] < 1.0 and delays[900] > 7.0
