"""A backend's circuit breaker and its probe schedule: pure logic over an injected clock.

- **closed**: jobs flow. ``failures`` consecutive failures (probes, or jobs that lost the
  backend) open it; any success resets the count.
- **open**: no job is sent and no probe either, for ``reset_s`` seconds.
- **half-open**: the next health probe is the trial: success closes the breaker, failure
  opens it again for another ``reset_s``. Jobs wait for the verdict (the probe is the trial).

Reports that arrive while the breaker is open (jobs that were already in flight when the
backend died) change nothing, so they cannot keep pushing the trial back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """``failures`` consecutive failures open the breaker; it half-opens after ``reset_s``."""

    failures: int = 3
    reset_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"breaker failures must be >= 1, got {self.failures}")
        if self.reset_s <= 0:
            raise ValueError(f"breaker reset_s must be > 0 seconds, got {self.reset_s}")


class CircuitBreaker:
    """One backend's breaker. ``clock`` returns seconds (monotonic); tests pass a fake."""

    def __init__(self, policy: BreakerPolicy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.policy.reset_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far (kept while open, 0 once closed)."""
        return self._failures

    def allows_dispatch(self) -> bool:
        """Jobs may be sent only while closed."""
        return self.state is BreakerState.CLOSED

    def allows_probe(self) -> bool:
        """Probes run while closed (health) and half-open (the trial); not while open."""
        return self.state is not BreakerState.OPEN

    def remaining_s(self) -> float:
        """Seconds until an open breaker half-opens; 0 when it is not open."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.policy.reset_s - self._clock())

    def success(self) -> bool:
        """Record a success; True when this closed a half-open breaker."""
        state = self.state
        if state is BreakerState.OPEN:
            return False
        self._failures = 0
        self._opened_at = None
        return state is BreakerState.HALF_OPEN

    def failure(self) -> bool:
        """Record a failure; True when this opened (or re-opened) the breaker."""
        state = self.state
        if state is BreakerState.OPEN:
            return False
        self._failures += 1
        if state is BreakerState.HALF_OPEN or self._failures >= self.policy.failures:
            self._opened_at = self._clock()
            return True
        return False


def probe_delay_s(interval_s: float, failures: int, cap_s: float) -> float:
    """Seconds until the next health probe.

    ``interval_s`` while the backend answers; after ``failures`` consecutive failed probes,
    ``interval_s * 2**(failures - 1)``, capped at ``cap_s`` (never below ``interval_s``).
    With the defaults (5 s, cap 30 s): 5, 5, 10, 20, 30, 30, ...
    """
    if failures <= 0:
        return interval_s
    ceiling = max(interval_s, cap_s)
    # min() before the power would overflow for a backend down for days.
    return min(ceiling, interval_s * float(2 ** min(failures - 1, 32)))
