"""The circuit breaker and probe schedule, driven by a fake clock."""

from __future__ import annotations

import pytest

from sakuga.domain.breaker import BreakerPolicy, BreakerState, CircuitBreaker, probe_delay_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def breaker(clock: FakeClock, failures: int = 3, reset_s: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(BreakerPolicy(failures=failures, reset_s=reset_s), clock)


def test_a_new_breaker_is_closed_and_lets_jobs_through(clock: FakeClock) -> None:
    b = breaker(clock)
    assert b.state is BreakerState.CLOSED
    assert b.allows_dispatch() and b.allows_probe()
    assert b.remaining_s() == 0.0


def test_opens_after_the_threshold_of_consecutive_failures(clock: FakeClock) -> None:
    b = breaker(clock, failures=3)
    assert b.failure() is False
    assert b.failure() is False
    assert b.state is BreakerState.CLOSED
    assert b.failure() is True
    assert b.state is BreakerState.OPEN
    assert not b.allows_dispatch() and not b.allows_probe()
    assert b.failures == 3


def test_a_success_resets_the_count_of_failures(clock: FakeClock) -> None:
    b = breaker(clock, failures=3)
    b.failure()
    b.failure()
    assert b.success() is False  # closed stays closed: no transition to report
    assert b.failures == 0
    b.failure()
    b.failure()
    assert b.state is BreakerState.CLOSED


def test_half_opens_after_the_reset_time(clock: FakeClock) -> None:
    b = breaker(clock, failures=1, reset_s=30.0)
    b.failure()
    clock.now += 29.9
    assert b.state is BreakerState.OPEN
    assert b.remaining_s() == pytest.approx(0.1)
    clock.now += 0.1
    assert b.state is BreakerState.HALF_OPEN
    assert b.allows_probe() and not b.allows_dispatch()  # the probe is the trial
    assert b.remaining_s() == 0.0


def test_a_successful_trial_closes_it(clock: FakeClock) -> None:
    b = breaker(clock, failures=2, reset_s=5.0)
    b.failure()
    b.failure()
    clock.now += 5.0
    assert b.success() is True
    assert b.state is BreakerState.CLOSED and b.failures == 0
    assert b.allows_dispatch()


def test_a_failed_trial_opens_it_for_another_reset_time(clock: FakeClock) -> None:
    b = breaker(clock, failures=2, reset_s=5.0)
    b.failure()
    b.failure()
    clock.now += 6.0
    assert b.failure() is True
    assert b.state is BreakerState.OPEN
    assert b.remaining_s() == pytest.approx(5.0)
    clock.now += 5.0
    assert b.state is BreakerState.HALF_OPEN


def test_reports_while_open_change_nothing(clock: FakeClock) -> None:
    """Jobs in flight when the backend died report late; they must not delay the trial."""
    b = breaker(clock, failures=1, reset_s=10.0)
    b.failure()
    clock.now += 8.0
    assert b.failure() is False
    assert b.success() is False
    assert b.state is BreakerState.OPEN
    clock.now += 2.0
    assert b.state is BreakerState.HALF_OPEN


@pytest.mark.parametrize(
    ("failures", "reset_s", "message"),
    [(0, 30.0, "failures must be >= 1"), (3, 0.0, "reset_s must be > 0")],
)
def test_policy_rejects_nonsense(failures: int, reset_s: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BreakerPolicy(failures=failures, reset_s=reset_s)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (4, 30.0), (5, 30.0), (10_000, 30.0)],
)
def test_probe_backoff_doubles_while_down_and_is_capped(failures: int, expected: float) -> None:
    assert probe_delay_s(5.0, failures, cap_s=30.0) == expected


def test_probe_interval_is_never_below_the_healthy_interval() -> None:
    assert probe_delay_s(5.0, 3, cap_s=1.0) == 5.0
    assert probe_delay_s(0.2, 2, cap_s=0.5) == pytest.approx(0.4)
    assert probe_delay_s(0.2, 3, cap_s=0.5) == 0.5
