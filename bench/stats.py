"""Percentiles and the summary every measurement reports, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Count, p50, p99 and max of samples in ms; ``rate_per_s`` when they ran over a window."""

    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rate_per_s: float | None = None

    @classmethod
    def of_seconds(cls, samples: Sequence[float], *, elapsed_s: float | None = None) -> Summary:
        """Summarise durations given in seconds; ``elapsed_s`` turns the count into a rate."""
        ms = [s * 1000 for s in samples]
        rate = len(ms) / elapsed_s if elapsed_s else None
        return cls(
            n=len(ms),
            p50_ms=percentile(ms, 50),
            p99_ms=percentile(ms, 99),
            max_ms=max(ms) if ms else math.nan,
            rate_per_s=rate,
        )

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)
