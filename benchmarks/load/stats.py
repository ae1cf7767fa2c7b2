"""Exact latency percentiles from every recorded sample.

Runs are bounded (a few tens of thousands of samples per RPC and phase), so the samples are
kept whole, merged across generator processes and sorted: no histogram rounding, and
percentiles are never averaged across processes or runs.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency figures in microseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50_us": round(self.p50, 1),
            "p90_us": round(self.p90, 1),
            "p99_us": round(self.p99, 1),
            "p99_9_us": round(self.p999, 1),
            "max_us": round(self.max, 1),
            "mean_us": round(self.mean, 1),
        }


def percentile(ordered: array[int] | list[int], p: float) -> float:
    """The nearest-rank percentile of sorted samples (the smallest sample with at least
    p% of all samples at or below it)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def summarize_ns(samples: Iterable[array[int]]) -> Latency | None:
    """Merges nanosecond samples of several processes and summarizes them in µs."""
    merged = sorted(value for part in samples for value in part)
    if not merged:
        return None
    p50, p90, p99, p999 = (percentile(merged, p) / 1000.0 for p in PERCENTILES)
    return Latency(
        count=len(merged),
        p50=p50,
        p90=p90,
        p99=p99,
        p999=p999,
        max=merged[-1] / 1000.0,
        mean=sum(merged) / len(merged) / 1000.0,
    )
