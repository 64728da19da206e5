"""Benchmarks: anima measured beside a reference on the same work (one module each)."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float, digits: int = 1) -> float | None:
    """The q-quantile by nearest rank; None for no values."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits) if ordered else None


def p50_p95(values: list[float]) -> dict:
    """{"p50": the median, "p95"} in ms with two decimals; {} for no values."""
    v = sorted(values)
    return {"p50": round(statistics.median(v), 2), "p95": round(v[int(0.95 * (len(v) - 1))], 2)} if v else {}
