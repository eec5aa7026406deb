"""Latency summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method of sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize_ms(values_us: Sequence[float]) -> dict[str, float]:
    """min/mean/p50/p90/p99/max in milliseconds of latencies in microseconds."""
    values = sorted(values_us)
    return {
        "min": values[0] / 1e3,
        "mean": sum(values) / len(values) / 1e3,
        "p50": percentile(values, 50) / 1e3,
        "p90": percentile(values, 90) / 1e3,
        "p99": percentile(values, 99) / 1e3,
        "max": values[-1] / 1e3,
    }
