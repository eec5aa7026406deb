"""Forecast accuracy metrics shared by generator calibration, evaluation and monitoring."""

from __future__ import annotations

import numpy as np


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
    return float(np.nanmean(np.abs(actual - forecast)) / scale)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric mean absolute percentage error in percent (0 when both are 0)."""
    actual = np.asarray(actual, dtype=float)
    forecast = np.asarray(forecast, dtype=float)
    denom = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(
        2 * np.abs(actual - forecast), denom, out=np.zeros_like(denom), where=denom > 0
    )
    return float(100 * np.mean(ratio))
