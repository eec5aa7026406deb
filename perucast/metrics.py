"""Forecast accuracy metrics shared by generator calibration, evaluation and monitoring.

Conventions shared by every metric here:

* Inputs are array-likes of the same shape (``ValueError`` otherwise); they are flattened.
* Missing values: a position where any of the arrays involved is NaN is ignored (the pair, or the
  row of quantiles, is dropped). When nothing is left the metric is NaN.
* Lower is better for every error metric; ``interval_coverage`` is a share to compare with the
  interval's nominal level.

The predictive distribution built from a few quantiles lives in ``perucast.quantiles``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike


def _aligned(*arrays: ArrayLike, names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """The arrays as float, checked for equal shapes, flattened, NaN positions dropped."""
    out = [np.asarray(a, dtype=float) for a in arrays]
    for name, arr in zip(names[1:], out[1:], strict=True):
        if arr.shape != out[0].shape:
            raise ValueError(f"{names[0]} {out[0].shape} and {name} {arr.shape} differ in shape")
    flat = [a.ravel() for a in out]
    keep = np.ones(flat[0].shape, dtype=bool)
    for a in flat:
        keep &= ~np.isnan(a)
    return tuple(a[keep] for a in flat)


def seasonal_naive_scale(history: np.ndarray, season_length: int) -> float:
    """Mean absolute seasonal difference of ``history``: the MASE denominator.

    Raises:
        ValueError: when the history is shorter than one season plus one period.
    """
    history = np.asarray(history, dtype=float)
    if history.size <= season_length:
        raise ValueError(f"MASE needs more than {season_length} history points, got {history.size}")
    return float(np.nanmean(np.abs(history[season_length:] - history[:-season_length])))


def mase(
    actual: np.ndarray, forecast: np.ndarray, history: np.ndarray, season_length: int
) -> float:
    """Mean absolute scaled error (Hyndman & Koehler, 2006).

    Errors of ``forecast`` against ``actual`` divided by the in-sample mean absolute error of the
    seasonal naive forecast on ``history`` (the observations before ``actual``). Below 1 means
    better than seasonal naive.
    """
    actual = np.asarray(actual, dtype=float)
    forecast = np.asarray(forecast, dtype=float)
    if actual.shape != forecast.shape:
        raise ValueError(f"actual {actual.shape} and forecast {forecast.shape} differ in shape")
    scale = seasonal_naive_scale(history, season_length)
    if scale == 0:
        return float("nan")
    y, f = _aligned(actual, forecast, names=("actual", "forecast"))
    if y.size == 0:
        return float("nan")
    return float(np.mean(np.abs(y - f)) / scale)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric mean absolute percentage error in percent (0 when both are 0).

    ``100 · mean(2 |y − f| / (|y| + |f|))``, a term counting 0 where ``|y| + |f| = 0``.
    """
    y, f = _aligned(actual, forecast, names=("actual", "forecast"))
    if y.size == 0:
        return float("nan")
    denom = np.abs(y) + np.abs(f)
    ratio = np.divide(2 * np.abs(y - f), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * np.mean(ratio))


def rmse(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Root mean squared error, ``sqrt(mean((y − f)²))``."""
    y, f = _aligned(actual, forecast, names=("actual", "forecast"))
    if y.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((y - f) ** 2)))


def check_quantile_level(q: float) -> float:
    """``q`` as a float, or ValueError unless it is a quantile level strictly inside (0, 1)."""
    q = float(q)
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    return q


def _pinball(y: np.ndarray, f: np.ndarray, q: float) -> np.ndarray:
    diff = y - f
    return np.maximum(q * diff, (q - 1.0) * diff)


def pinball_loss(actual: ArrayLike, forecast_q: ArrayLike, q: float) -> float:
    """Mean pinball (quantile) loss of a forecast of the ``q`` quantile.

    ``mean(max(q (y − f), (q − 1)(y − f)))``: under-forecasts cost ``q`` per unit, over-forecasts
    ``1 − q``. At ``q = 0.5`` it is half the mean absolute error.

    Raises:
        ValueError: on a shape mismatch or a level outside (0, 1).
    """
    q = check_quantile_level(q)
    y, f = _aligned(actual, forecast_q, names=("actual", "forecast_q"))
    if y.size == 0:
        return float("nan")
    return float(np.mean(_pinball(y, f, q)))


def weighted_quantile_loss(actual: ArrayLike, forecasts: Mapping[float, ArrayLike]) -> float:
    """Weighted quantile loss ("wQL", as GluonTS's ``mean_wQuantileLoss`` and the M5 papers).

    .. math::

        \\mathrm{wQL} = \\frac{1}{|Q|} \\sum_{q \\in Q}
            \\frac{2 \\sum_t \\rho_q(y_t, \\hat y_{q,t})}{\\sum_t |y_t|}

    with ``ρ_q`` the pinball loss. The factor 2 makes the ``q = 0.5`` term the weighted absolute
    percentage error (WAPE) of the median. Positions where the actual or any quantile forecast is
    NaN are dropped for every quantile, so all terms share one denominator.

    Args:
        actual: Observed values.
        forecasts: Quantile level in (0, 1) -> forecasts of that quantile, shaped as ``actual``.

    Returns:
        The wQL (0 is perfect); NaN when nothing is left or ``Σ|y| = 0``.

    Raises:
        ValueError: on no quantiles, a shape mismatch or a level outside (0, 1).
    """
    if not forecasts:
        raise ValueError("weighted_quantile_loss needs at least one quantile forecast")
    levels = [check_quantile_level(q) for q in forecasts]
    names = ("actual", *(f"forecast q={q}" for q in levels))
    y, *fs = _aligned(actual, *forecasts.values(), names=names)
    denom = np.sum(np.abs(y))
    if y.size == 0 or denom == 0:
        return float("nan")
    terms = [2.0 * np.sum(_pinball(y, f, q)) / denom for q, f in zip(levels, fs, strict=True)]
    return float(np.mean(terms))


def interval_coverage(actual: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of actuals inside ``[lower, upper]`` (both ends inclusive).

    Positions where any of the three is NaN are dropped. Crossed bounds (``lower > upper``) are
    not reordered: such an interval covers nothing.
    """
    y, lo, hi = _aligned(actual, lower, upper, names=("actual", "lower", "upper"))
    if y.size == 0:
        return float("nan")
    return float(np.mean((y >= lo) & (y <= hi)))
