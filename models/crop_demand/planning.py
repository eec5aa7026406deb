"""Stocking quantities a planner can act on, from the demand quantile forecasts.

The newsvendor problem: with ``c_u`` the cost of a unit short and ``c_o`` the cost of a unit left
over, the best order is the ``c_u / (c_u + c_o)`` quantile of demand, the **service level** (the
probability of not running short). The forecasts give three quantiles (P10, P50, P90); between
and beyond them demand follows the piecewise-linear distribution of
``perucast.quantiles.quantile_function``:

* the quantile function is linear between P10, P50 and P90 (uniform density between them);
* below P10 it continues the line through P10 and P50 down to level 0, above P90 the line
  through P50 and P90 up to level 1 (so the support is bounded: ``P10 − (P50 − P10)/4`` to
  ``P90 + (P90 − P50)/4`` for levels 0.1/0.5/0.9);
* it is clipped at 0: demand is never negative.

The expected shortfall is ``E[max(D − Q, 0)]``, the demand expected to go unserved with an order
``Q``, integrated exactly under that distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from perucast.quantiles import (
    QUANTILE_COLUMNS,
    QUANTILE_LEVELS,
    expected_excess,
    quantile_function,
)


@dataclass(frozen=True)
class Newsvendor:
    """Order quantities and their expected shortfall, one per forecast row.

    Attributes:
        order_quantity: Demand quantile at the service level (same unit as the forecasts).
        expected_shortfall: ``E[max(D − order_quantity, 0)]``, same unit.
        service_level: The service level used.
    """

    order_quantity: np.ndarray
    expected_shortfall: np.ndarray
    service_level: float


def _quantile_matrix(
    p10: ArrayLike, p50: ArrayLike, p90: ArrayLike, *, sort_crossed: bool
) -> np.ndarray:
    cols = [np.asarray(p, dtype=float).ravel() for p in (p10, p50, p90)]
    if len({c.shape for c in cols}) != 1:
        raise ValueError(f"p10, p50, p90 differ in shape: {[c.shape for c in cols]}")
    values = np.column_stack(cols)
    if np.isnan(values).any():
        raise ValueError(f"{int(np.isnan(values).any(axis=1).sum())} rows have NaN quantiles")
    crossed = np.any(np.diff(values, axis=1) < 0, axis=1)
    if crossed.any():
        if not sort_crossed:
            raise ValueError(
                f"{int(crossed.sum())} of {len(values)} rows have crossed quantiles "
                "(need p10 ≤ p50 ≤ p90); pass sort_crossed=True to sort them"
            )
        values = np.sort(values, axis=1)
    return values


def newsvendor(
    p10: ArrayLike,
    p50: ArrayLike,
    p90: ArrayLike,
    service_level: float,
    *,
    sort_crossed: bool = False,
) -> Newsvendor:
    """Order quantity at ``service_level`` and its expected shortfall, per row.

    Args:
        p10: 10% quantile forecasts of demand.
        p50: Median forecasts, same shape.
        p90: 90% quantile forecasts, same shape.
        service_level: Wanted probability of not running short, in (0, 1).
        sort_crossed: Sort each row's quantiles when they cross (a monotone rearrangement of
            the forecast) instead of raising.

    Returns:
        Quantities and shortfalls, flattened, one per row.

    Raises:
        ValueError: on a service level outside (0, 1), shapes that differ, NaN quantiles, or
            crossed quantiles without ``sort_crossed``.
    """
    level = float(service_level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"service level must be in (0, 1), got {service_level}")
    values = _quantile_matrix(p10, p50, p90, sort_crossed=sort_crossed)
    quantity = quantile_function(QUANTILE_LEVELS, values, level)
    shortfall = expected_excess(QUANTILE_LEVELS, values, quantity)
    return Newsvendor(quantity, shortfall, level)


def stocking_plan(
    forecasts: pd.DataFrame,
    service_level: float,
    *,
    quantile_columns: Sequence[str] = QUANTILE_COLUMNS,
    sort_crossed: bool = False,
) -> pd.DataFrame:
    """``forecasts`` with the newsvendor order quantity and expected shortfall of each row.

    Args:
        forecasts: One row per region × crop (× week or horizon) with the P10, P50, P90 columns.
        service_level: Wanted probability of not running short, in (0, 1).
        quantile_columns: Names of the P10, P50, P90 columns.
        sort_crossed: See ``newsvendor``.

    Returns:
        A copy with ``service_level``, ``order_quantity`` and ``expected_shortfall`` added.
    """
    missing = [c for c in quantile_columns if c not in forecasts.columns]
    if len(quantile_columns) != 3 or missing:
        raise ValueError(f"need three quantile columns present in forecasts; missing {missing}")
    result = newsvendor(
        *(forecasts[c].to_numpy() for c in quantile_columns),
        service_level,
        sort_crossed=sort_crossed,
    )
    out = forecasts.copy()
    out["service_level"] = result.service_level
    out["order_quantity"] = result.order_quantity
    out["expected_shortfall"] = result.expected_shortfall
    return out
