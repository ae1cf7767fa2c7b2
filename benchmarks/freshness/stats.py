"""Latency summaries of the freshness benchmark (pure: no servers, no gRPC)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def summarize_seconds(samples: Iterable[float]) -> dict[str, Any]:
    """Count, exact nearest-rank p50/p90/p99, max, min and mean of latencies given in
    seconds, in milliseconds (None when there is no sample). Negative samples are kept:
    a reader can see a write a little before the writer's client has read the answer."""
    ordered = sorted(samples)
    if not ordered:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None,
                "min_ms": None, "mean_ms": None}  # fmt: skip
    ms = [value * 1000.0 for value in ordered]
    return {
        "count": len(ms),
        "p50_ms": round(nearest_rank(ms, 50.0), 2),
        "p90_ms": round(nearest_rank(ms, 90.0), 2),
        "p99_ms": round(nearest_rank(ms, 99.0), 2),
        "max_ms": round(ms[-1], 2),
        "min_ms": round(ms[0], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def nearest_rank(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank percentile of sorted samples, as benchmarks.load.stats does for
    integer samples: the smallest sample with at least p% of all samples at or below it."""
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan
