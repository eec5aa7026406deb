"""A predictive distribution from a few quantiles (P10, P50, P90), as planners need it.

The quantile function is piecewise linear between the forecast quantiles, with linear tails
extrapolated from the outer pairs and clipped at 0 (see ``_knots``). Shared by the evaluation and
by the domain outputs: newsvendor order quantities and shortfalls
(``models.crop_demand.planning``) and the probability of falling below a limit reference point
(``models.fish_stock.advice``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

# The quantiles every perucast model forecasts, and their column / output names.
QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
QUANTILE_COLUMNS: tuple[str, ...] = ("p10", "p50", "p90")


def _knots(levels: Sequence[float], values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Quantile-function knots at ``[0, *levels, 1]`` (rows × knots), tails extrapolated.

    Raises:
        ValueError: on fewer than two levels, unsorted or out-of-range levels, a shape
            mismatch, NaN values, or values decreasing with the level (crossed quantiles).
    """
    tau = np.asarray(levels, dtype=float)
    if tau.ndim != 1 or tau.size < 2:
        raise ValueError("need at least two quantile levels")
    if np.any(tau <= 0) or np.any(tau >= 1) or np.any(np.diff(tau) <= 0):
        raise ValueError(f"quantile levels must be strictly increasing in (0, 1), got {levels}")
    v = np.atleast_2d(np.asarray(values, dtype=float))
    if v.shape[-1] != tau.size:
        raise ValueError(f"values have {v.shape[-1]} columns for {tau.size} quantile levels")
    if np.isnan(v).any():
        raise ValueError("quantile values contain NaN")
    crossed = np.any(np.diff(v, axis=1) < 0, axis=1)
    if crossed.any():
        raise ValueError(
            f"{int(crossed.sum())} of {len(v)} rows have quantiles decreasing with the level"
        )
    low_slope = (v[:, 1] - v[:, 0]) / (tau[1] - tau[0])
    high_slope = (v[:, -1] - v[:, -2]) / (tau[-1] - tau[-2])
    q0 = v[:, 0] - low_slope * tau[0]
    q1 = v[:, -1] + high_slope * (1.0 - tau[-1])
    return np.concatenate([[0.0], tau, [1.0]]), np.column_stack([q0, v, q1])


def quantile_function(levels: Sequence[float], values: ArrayLike, tau: ArrayLike) -> np.ndarray:
    """The quantile at level ``tau`` of the piecewise-linear distribution through the quantiles.

    The distribution: the quantile function is linear between the given quantiles, and below the
    lowest (above the highest) level it continues the straight line through the two lowest (two
    highest) quantiles, down to level 0 (up to level 1). So the density is uniform between
    neighbouring quantiles and the support is bounded. Values are clipped at 0 (quantities and
    biomass are non-negative): the probability below 0 becomes a point mass at 0.

    Args:
        levels: Strictly increasing quantile levels in (0, 1), e.g. ``(0.1, 0.5, 0.9)``.
        values: Rows × levels, non-decreasing along each row.
        tau: Levels in [0, 1], broadcast against the rows.

    Returns:
        One quantile per row.
    """
    grid, knots = _knots(levels, values)
    tau = np.broadcast_to(np.asarray(tau, dtype=float), (knots.shape[0],))
    if np.any((tau < 0) | (tau > 1)):
        raise ValueError("tau must be in [0, 1]")
    # Segment index of each tau, then linear interpolation within the segment.
    seg = np.clip(np.searchsorted(grid, tau, side="right") - 1, 0, grid.size - 2)
    rows = np.arange(knots.shape[0])
    t0, t1 = grid[seg], grid[seg + 1]
    q0, q1 = knots[rows, seg], knots[rows, seg + 1]
    return np.maximum(q0 + (q1 - q0) * (tau - t0) / (t1 - t0), 0.0)


def quantile_cdf(levels: Sequence[float], values: ArrayLike, x: ArrayLike) -> np.ndarray:
    """``P(X ≤ x)`` under the distribution of ``quantile_function``, one per row.

    For ``x < 0`` it is 0 (the clipped distribution has no mass there). Where a segment is flat
    (equal quantiles: a point mass) the CDF is right-continuous, i.e. includes the mass.
    """
    grid, knots = _knots(levels, values)
    x = np.broadcast_to(np.asarray(x, dtype=float), (knots.shape[0],))[:, None]
    q0, q1 = knots[:, :-1], knots[:, 1:]
    t0, t1 = grid[:-1], grid[1:]
    width = q1 - q0
    frac = np.divide(x - q0, width, out=np.ones_like(width), where=width > 0)
    # Within each segment: 0 below its start, its share above; the CDF is the largest level
    # reached over the segments.
    reached = np.where(x >= q0, t0 + (t1 - t0) * np.clip(frac, 0.0, 1.0), 0.0)
    return np.where(x[:, 0] < 0, 0.0, reached.max(axis=1))


def expected_excess(levels: Sequence[float], values: ArrayLike, threshold: ArrayLike) -> np.ndarray:
    """``E[max(X − c, 0)]`` under the distribution of ``quantile_function``, one per row.

    Computed exactly as ``∫₀¹ max(Q(τ) − c, 0) dτ`` segment by segment (``Q`` is linear on each,
    so each piece is a trapezoid or a triangle). ``c`` must be ≥ 0, where the clipping at 0 does
    not matter.
    """
    grid, knots = _knots(levels, values)
    c = np.broadcast_to(np.asarray(threshold, dtype=float), (knots.shape[0],))[:, None]
    if np.any(c < 0):
        raise ValueError("threshold must be >= 0")
    a, b = knots[:, :-1] - c, knots[:, 1:] - c  # excess at the segment ends (b >= a)
    dt = np.diff(grid)
    both = np.where(a >= 0, dt * (a + b) / 2, 0.0)
    # Crossing inside the segment: a triangle over the part where the excess is positive.
    span = b - a
    part = np.divide(b, span, out=np.zeros_like(span), where=span > 0)
    crossing = np.where((a < 0) & (b > 0), dt * part * b / 2, 0.0)
    return (both + crossing).sum(axis=1)
