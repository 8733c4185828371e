"""Figures every benchmark quotes."""

from __future__ import annotations


def pct(values: list[float], q: float) -> float:
    """The `q` quantile of `values` (0.5: the median, 0.95: p95), nearest rank, no interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
