"""The long forecast frame every forecaster of the evaluation returns.

One row is one forecast: a series (the use case's series keys) at a forecast ``origin``,
``horizon`` periods ahead (1..H), for the period ``target_time``. ``actual`` is the observed
target of that period (NaN when unknown). ``p10``/``p50``/``p90`` are the forecast quantiles
(``perucast.quantiles.QUANTILE_LEVELS``). ``model`` names the forecaster (``"network"``,
``"seasonal_naive"``, ``"ets"``, ``"gbt"``, ``"oracle"``).

The network, the baselines and the oracle all produce this frame on the same origins, so the
evaluation compares them row by row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from perucast.quantiles import QUANTILE_COLUMNS

ORIGIN = "origin"
HORIZON = "horizon"
TARGET_TIME = "target_time"
ACTUAL = "actual"
MODEL = "model"


def forecast_columns(series_keys: Sequence[str]) -> list[str]:
    """Columns of a forecast frame, in order."""
    return [ORIGIN, *series_keys, HORIZON, TARGET_TIME, ACTUAL, *QUANTILE_COLUMNS, MODEL]


def check_forecast_frame(frame: pd.DataFrame, series_keys: Sequence[str]) -> pd.DataFrame:
    """Validate a forecast frame and return it with its columns in order.

    Raises:
        ValueError: on missing columns, horizons below 1, duplicate (model, origin, series,
            horizon) rows, or NaN forecast quantiles.
    """
    columns = forecast_columns(series_keys)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"forecast frame lacks columns {missing}")
    frame = frame[columns]
    if len(frame) and int(frame[HORIZON].min()) < 1:
        raise ValueError("forecast horizons start at 1")
    key = [MODEL, ORIGIN, *series_keys, HORIZON]
    duplicated = frame.duplicated(key)
    if duplicated.any():
        raise ValueError(f"{int(duplicated.sum())} duplicate forecast rows on {key}")
    values = frame[list(QUANTILE_COLUMNS)].to_numpy(dtype=float)
    if np.isnan(values).any():
        raise ValueError(f"{int(np.isnan(values).any(axis=1).sum())} rows have NaN quantiles")
    return frame


def wide_to_long(
    origins: pd.DataFrame,
    quantiles: dict[str, np.ndarray],
    *,
    time_column: str,
    series_keys: Sequence[str],
    period: str,
    model: str,
    actuals: np.ndarray | None = None,
) -> pd.DataFrame:
    """A forecast frame from one row per origin and ``[rows, H]`` quantile arrays.

    Args:
        origins: One row per forecast origin with ``time_column`` and the series keys.
        quantiles: ``{"p10": [rows, H], "p50": ..., "p90": ...}``.
        time_column: The origin's time column in ``origins``.
        series_keys: The series key columns.
        period: The pandas offset alias between periods (``"W-MON"``, ``"MS"``).
        model: The forecaster's name.
        actuals: ``[rows, H]`` observed targets (NaN where unknown), or None for all NaN.
    """
    p50 = np.asarray(quantiles["p50"], dtype=float)
    rows, horizon = p50.shape
    if len(origins) != rows:
        raise ValueError(f"{len(origins)} origins but {rows} forecast rows")
    origin_time = pd.to_datetime(origins[time_column]).to_numpy()
    offset = pd.tseries.frequencies.to_offset(period)
    origin_index = pd.DatetimeIndex(origin_time)
    # One vectorized shift per horizon (H is small); [rows, H] -> row-major like the arrays.
    target_time = np.stack(
        [(origin_index + h * offset).to_numpy() for h in range(1, horizon + 1)], axis=1
    )
    frame = pd.DataFrame(
        {
            ORIGIN: np.repeat(origin_time, horizon),
            **{k: np.repeat(origins[k].astype(str).to_numpy(), horizon) for k in series_keys},
            HORIZON: np.tile(np.arange(1, horizon + 1), rows),
            TARGET_TIME: target_time.reshape(-1),
        }
    )
    frame[ACTUAL] = (
        np.full(rows * horizon, np.nan)
        if actuals is None
        else np.asarray(actuals, dtype=float).reshape(-1)
    )
    for name in QUANTILE_COLUMNS:
        frame[name] = np.asarray(quantiles[name], dtype=float).reshape(-1)
    frame[MODEL] = model
    return frame[forecast_columns(series_keys)]
