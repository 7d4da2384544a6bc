"""Retry policy as pure functions: classify a failure, decide retry or fail, pick the delay.

Transient faults (unreachable, timeout, backend lost or crashed, out of memory) retry with
full-jitter exponential backoff, capped by attempts and by total time; permanent ones
(validation, node errors that will repeat) fail at once. A job that crashed its backend
or ran out of memory ``poison_strikes`` times fails as ``poison`` instead of looping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

# Error codes of sakuga.errors.BackendError subclasses.
TRANSIENT_CODES = frozenset(
    {"backend_unreachable", "backend_timeout", "backend_lost", "out_of_memory"}
)
# A backend that died or ran out of memory while running the job may have been killed by it.
STRIKE_CODES = frozenset({"out_of_memory", "backend_lost", "backend_unreachable"})

Verdict = Literal["retry", "fail", "poison"]


@dataclass(frozen=True)
class RetryPolicy:
    """Defaults follow the issue: 5 attempts, 2 s base, 5 min cap, 3 poison strikes."""

    attempts: int = 5
    base_s: float = 2.0
    cap_s: float = 300.0
    budget_s: float = 3600.0
    poison_strikes: int = 3


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay_s: float = 0.0
    strike: bool = False
    reason: str = ""


def backoff_s(policy: RetryPolicy, failures: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(failures-1))] (AWS's recipe)."""
    ceiling = min(policy.cap_s, policy.base_s * 2 ** max(0, failures - 1))
    return (rng or random).uniform(0.0, ceiling) if ceiling > 0 else 0.0


def decide(
    policy: RetryPolicy,
    *,
    code: str,
    transient: bool,
    failures_before: int,
    strikes_before: int,
    ran: bool,
    elapsed_s: float,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after an attempt failed with ``code``.

    ``failures_before`` counts earlier failed attempts; ``ran`` says whether the backend
    had started executing the prompt (only then can the job have crashed it).
    """
    if not transient:
        return Decision("fail", reason=f"permanent error {code}")
    strike = ran and code in STRIKE_CODES
    strikes = strikes_before + (1 if strike else 0)
    if strikes >= policy.poison_strikes:
        return Decision(
            "poison",
            strike=True,
            reason=f"{strikes} backend crashes or out-of-memory errors while running this job",
        )
    failures = failures_before + 1
    if failures >= policy.attempts:
        return Decision("fail", strike=strike, reason=f"gave up after {failures} attempts")
    delay = backoff_s(policy, failures, rng)
    if elapsed_s + delay > policy.budget_s:
        return Decision(
            "fail", strike=strike, reason=f"retry budget of {policy.budget_s:g} s is spent"
        )
    return Decision("retry", delay_s=delay, strike=strike, reason=code)
