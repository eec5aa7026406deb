"""Forecast baselines for the evaluation: seasonal naive, ETS and gradient-boosted trees.

Every baseline reads the preprocessed feature dataset (the output of ``components/preprocess.py``:
``split.json``, ``statistics.json``, ``features/split=<name>/*.parquet``), forecasts the given
origins (normally :func:`backtest_origins` of the test split) ``H`` periods ahead and returns the
long forecast frame of :mod:`perucast.forecasts`, so the evaluation compares them row by row with
the network. They are generic over the use case: the feature spec, the period and the season
length come in as arguments.

* :func:`seasonal_naive`: the value one season before the target period (from the series
  reconstructed by :func:`load_series`), with an 80 % interval from the empirical quantiles of
  its own errors on the training split, per horizon (calibrated in-sample by construction).
* :func:`ets`: exponential smoothing (statsmodels ``ETSModel``), fitted once per series on the
  history before the first origin and run forward over the later data with fixed parameters.
* :func:`gbt`: one pooled Spark ML ``GBTRegressor`` on the feature columns, with conformal
  (validation-residual) quantiles.

:func:`run_baselines` runs all three on the test origins.
"""

from __future__ import annotations

import json
import logging
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from perucast.datasets import SPLIT, read_features
from perucast.forecasts import wide_to_long

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import SparkSession

    from models.base import FeatureSpec

log = logging.getLogger("perucast.baselines")

GAP = "gap"  # split label of series values reconstructed from targets inside a gap
SPLITS = ("train", "validation", "test", "inference")
# The 80 % central interval of the forecast quantiles (p10, p90) and its normal quantile.
LOWER, UPPER = 0.1, 0.9
Z_UPPER = NormalDist().inv_cdf(UPPER)


class BaselineConfig(BaseModel):
    """Settings of the baselines (validated when the evaluation step is built).

    Attributes:
        stride: Evaluate every ``stride``-th origin of the split (1: every origin).
        ets_history_seasons: Seasons of history the ETS parameters and seasonal profile are
            estimated on (the last ones before the first origin); None: all of it.
        ets_log: Model ``log(1 + y)`` for non-negative targets (multiplicative seasonality,
            intervals that stay non-negative and widen with the level); False: ``y`` itself.
        gbt_max_iter: Boosting iterations (trees).
        gbt_max_depth: Depth of each tree.
        gbt_step_size: Learning rate (shrinkage) of the boosting.
        gbt_max_rows: Most (origin, horizon) rows the trees are trained on, and most used for
            the validation residual quantiles; more are sampled down (time scales with it).
        seed: Random seed of the row sampling and of the trees.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stride: int = Field(default=1, ge=1)
    ets_history_seasons: int | None = Field(default=20, ge=2)
    ets_log: bool = True
    gbt_max_iter: int = Field(default=20, ge=1)
    gbt_max_depth: int = Field(default=5, ge=1, le=30)
    gbt_step_size: float = Field(default=0.3, gt=0, le=1)
    gbt_max_rows: int = Field(default=100_000, ge=100)
    seed: int = Field(default=0, ge=0)


# --------------------------------------------------------------------------------------------
# Reading the feature dataset
# --------------------------------------------------------------------------------------------


def read_split_info(features_dir: Path | str, spec: FeatureSpec | None = None) -> dict[str, Any]:
    """``split.json`` of a feature dataset, checked against ``spec`` when given.

    Raises:
        FileNotFoundError: when ``split.json`` is missing.
        ValueError: when its time column, period or horizon differ from ``spec``.
    """
    path = Path(features_dir) / "split.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a preprocessed feature dataset")
    info = json.loads(path.read_text())
    if spec is not None:
        found = (info["time_column"], info["period"], int(info["horizon"]))
        wanted = (spec.time_column, spec.period, spec.horizon)
        if found != wanted:
            raise ValueError(
                f"{path}: (time column, period, horizon) {found} differ from the spec's {wanted}"
            )
    return info


def series_target_stats(features_dir: Path | str, spec: FeatureSpec) -> pd.DataFrame:
    """Per-series ``target_mean`` and ``target_std`` of the training split (``statistics.json``).

    A missing, non-finite or zero standard deviation becomes the mean absolute target (or 1),
    so dividing by it is always safe.
    """
    stats = json.loads((Path(features_dir) / "statistics.json").read_text())
    frame = pd.DataFrame(stats["series"])
    for key in spec.series_keys:
        frame[key] = frame[key].astype(str)
    std = pd.to_numeric(frame["target_std"], errors="coerce")
    mean = pd.to_numeric(frame["target_mean"], errors="coerce").fillna(0.0)
    bad = ~np.isfinite(std) | (std <= 0)
    fallback = mean.abs().where(mean.abs() > 0, 1.0)
    frame["target_std"] = std.where(~bad, fallback)
    frame["target_mean"] = mean
    return frame[[*spec.series_keys, "target_mean", "target_std"]]


def _nonnegative_target(features_dir: Path | str, spec: FeatureSpec) -> bool:
    """True when the training split never has a negative target (forecasts are then clipped)."""
    stats = json.loads((Path(features_dir) / "statistics.json").read_text())
    entry = stats.get("numeric", {}).get(spec.target)
    return entry is not None and entry.get("min") is not None and entry["min"] >= 0


def load_series(features_dir: Path | str, spec: FeatureSpec) -> pd.DataFrame:
    """The observed target series of every series key, rebuilt from all splits' rows.

    Each origin row gives the target at its time. Where the next origin of a series is not the
    next period (the gaps between splits, origins dropped for a missing future target), the
    ``target_h1..H`` of the row before the hole give the values of the ``H`` periods after it,
    so the series has no holes where the data holds a value. Origin values win over those.

    Args:
        features_dir: The preprocessed dataset (holding ``split.json`` and ``features/``).
        spec: Its feature spec.

    Returns:
        Columns ``series_keys``, ``time_column``, ``target`` and ``split`` (the split of the
        origin row, or ``"gap"`` for values taken from an earlier row's targets), sorted by
        series and time, one row per series and period.
    """
    read_split_info(features_dir, spec)
    t, keys, target = spec.time_column, list(spec.series_keys), spec.target
    rows = read_features(features_dir, spec, [t, *keys, target, *spec.target_columns])
    rows = rows.sort_values([*keys, t], kind="stable").reset_index(drop=True)
    offset = pd.tseries.frequencies.to_offset(spec.period)
    following = rows.groupby(keys, sort=False)[t].shift(-1)
    edge = rows.loc[following.isna() | (following != rows[t] + offset)]
    leads = []
    for h, column in enumerate(spec.target_columns, start=1):
        part = edge[[*keys, t, column]].rename(columns={column: target})
        part[t] = part[t] + h * offset
        leads.append(part.dropna(subset=[target]))
    lead = pd.concat(leads, ignore_index=True).assign(**{SPLIT: GAP})
    # Latest origin first among the leads of one period; origin rows before all leads.
    lead = lead.sort_values(t, ascending=False, kind="stable")
    series = pd.concat([rows[[*keys, t, target, SPLIT]], lead], ignore_index=True)
    series = series.drop_duplicates([*keys, t], keep="first")
    return series.sort_values([*keys, t], kind="stable").reset_index(drop=True)


def backtest_origins(
    features_dir: Path | str, spec: FeatureSpec, split: str = "test", stride: int = 1
) -> pd.DataFrame:
    """The origins every forecaster is evaluated on: one split's origins every ``stride`` periods.

    Args:
        features_dir: The preprocessed dataset.
        spec: Its feature spec.
        split: ``"train"``, ``"validation"``, ``"test"`` or ``"inference"``.
        stride: Keep every ``stride``-th origin time of the split, from its first.

    Returns:
        Columns ``time_column``, ``series_keys`` and ``target_h1..H`` (the actuals), sorted by
        time and series.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    read_split_info(features_dir, spec)
    t, keys = spec.time_column, list(spec.series_keys)
    rows = read_features(features_dir, spec, [t, *keys, *spec.target_columns], [split])
    times = np.sort(rows[t].unique())[::stride]
    rows = rows.loc[rows[t].isin(times), [t, *keys, *spec.target_columns]]
    return rows.sort_values([t, *keys], kind="stable").reset_index(drop=True)


def _actuals(origins: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """``[rows, H]`` observed targets of the origins (NaN where a column is absent)."""
    out = np.full((len(origins), spec.horizon), np.nan)
    for h, column in enumerate(spec.target_columns):
        if column in origins.columns:
            out[:, h] = pd.to_numeric(origins[column], errors="coerce").to_numpy(dtype=float)
    return out


def _frame(
    origins: pd.DataFrame,
    spec: FeatureSpec,
    quantiles: dict[str, np.ndarray],
    model: str,
    nonnegative: bool,
) -> pd.DataFrame:
    """The long forecast frame, quantiles sorted per row and clipped at 0 if non-negative."""
    stacked = np.sort(np.stack([quantiles[q] for q in ("p10", "p50", "p90")]), axis=0)
    if nonnegative:
        stacked = np.maximum(stacked, 0.0)
    return wide_to_long(
        origins,
        dict(zip(("p10", "p50", "p90"), stacked, strict=True)),
        time_column=spec.time_column,
        series_keys=spec.series_keys,
        period=spec.period,
        model=model,
        actuals=_actuals(origins, spec),
    )


# --------------------------------------------------------------------------------------------
# The series as a dense panel
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesPanel:
    """The reconstructed series as a ``[series, periods]`` matrix on a regular time grid.

    Attributes:
        keys: One row per series (the key columns), in matrix row order.
        times: The period grid from the first to the last period of any series.
        values: The target, NaN where unknown.
    """

    keys: pd.DataFrame
    times: pd.DatetimeIndex
    values: np.ndarray

    @classmethod
    def from_series(cls, series: pd.DataFrame, spec: FeatureSpec) -> SeriesPanel:
        """Build the panel from the frame of :func:`load_series`.

        Raises:
            ValueError: when a time is not on the period grid.
        """
        t, keys = spec.time_column, list(spec.series_keys)
        times = pd.date_range(series[t].min(), series[t].max(), freq=spec.period)
        key_frame = series[keys].drop_duplicates().sort_values(keys).reset_index(drop=True)
        panel = cls(key_frame, times, np.full((len(key_frame), len(times)), np.nan))
        rows, cols = panel.locate(series, t)
        panel.values[rows, cols] = series[spec.target].to_numpy(dtype=float)
        return panel

    def locate(self, frame: pd.DataFrame, time_column: str) -> tuple[np.ndarray, np.ndarray]:
        """Row (series) and column (period) of every row of ``frame``.

        Raises:
            ValueError: for series not in the panel or times off its grid.
        """
        keys = list(self.keys.columns)
        index = pd.MultiIndex.from_frame(self.keys.astype(str))
        rows = index.get_indexer(pd.MultiIndex.from_frame(frame[keys].astype(str)))
        cols = self.times.get_indexer(pd.to_datetime(frame[time_column]).astype("datetime64[ns]"))
        if (rows < 0).any():
            raise ValueError(f"{int((rows < 0).sum())} rows belong to series without history")
        if (cols < 0).any():
            raise ValueError(f"{int((cols < 0).sum())} rows have times off the period grid")
        return rows, cols

    def forward_filled(self) -> np.ndarray:
        """The values with each NaN replaced by the last earlier value of its series."""
        filled = np.where(np.isnan(self.values), 0, np.arange(self.values.shape[1]))
        last = np.maximum.accumulate(filled, axis=1)
        out = np.take_along_axis(self.values, last, axis=1)
        # Before a series' first value there is nothing to carry forward.
        seen = np.maximum.accumulate(~np.isnan(self.values), axis=1)
        return np.where(seen, out, np.nan)


def calendar_position(times: pd.DatetimeIndex, season_length: int) -> np.ndarray:
    """Position of each period in its year, ``0 .. season_length − 1``.

    ``round(day-of-year fraction × m) mod m``: the calendar month for monthly periods (m = 12)
    and about the week of the year for weekly ones (m = 52), which stays aligned to the calendar
    over decades, unlike a lag of 52 weeks (a year is 52.18 weeks).
    """
    times = pd.DatetimeIndex(times)
    fraction = (times.day_of_year.to_numpy() - 1) / (365 + times.is_leap_year.astype(int))
    return np.rint(fraction * season_length).astype(int) % season_length


# --------------------------------------------------------------------------------------------
# Seasonal naive
# --------------------------------------------------------------------------------------------


def seasonal_naive_points(
    panel: SeriesPanel,
    rows: np.ndarray,
    cols: np.ndarray,
    horizon: int,
    season_length: int,
    seasons_back: int = 0,
) -> tuple[np.ndarray, int]:
    """Seasonal-naive point forecasts ``[origins, H]`` from the panel.

    For origin period ``t`` and horizon ``h`` the forecast is the value at ``t + h − m·k``, the
    smallest ``k`` with ``t + h − m·k ≤ t`` (plus ``seasons_back`` more seasons). A missing value
    there is replaced by the last value before it (never by a later one).

    Returns:
        The forecasts (NaN where the series has no value at or before the lag) and how many
        were filled from an earlier value.
    """
    h = np.arange(1, horizon + 1)
    source = cols[:, None] + _seasonal_lag(h, season_length, seasons_back)[None, :]
    return _values_at(panel, panel.forward_filled(), rows[:, None], source)


def _seasonal_lag(h: np.ndarray, season_length: int, seasons_back: int) -> np.ndarray:
    """``h − m·k`` for the smallest ``k`` with ``h − m·k ≤ 0``, ``seasons_back`` seasons more."""
    return h - season_length * (np.ceil(h / season_length).astype(int) + seasons_back)


def _values_at(
    panel: SeriesPanel, filled: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, int]:
    """Panel values at (rows, cols); a missing one the last earlier value; NaN before column 0.

    Returns:
        The values and how many were taken from an earlier period.
    """
    valid = cols >= 0
    safe = np.where(valid, cols, 0)
    values = np.where(valid, panel.values[rows, safe], np.nan)
    missing = np.isnan(values) & valid
    earlier = np.where(valid, filled[rows, safe], np.nan)
    return np.where(missing, earlier, values), int((missing & ~np.isnan(earlier)).sum())


def seasonal_naive(
    features_dir: Path | str,
    spec: FeatureSpec,
    origins: pd.DataFrame,
    *,
    season_length: int,
) -> pd.DataFrame:
    """Seasonal-naive forecasts of ``origins`` (model ``"seasonal_naive"``).

    The median is the value one season (``m = season_length`` periods) before the target
    period (see :func:`seasonal_naive_points`). P10 / P90 add the 10 % / 90 % empirical
    quantiles of the seasonal-naive errors of the same horizon on the training split, errors
    scaled by each series' training standard deviation (``statistics.json``) and scaled back;
    so the 80 % interval covers 80 % of the training errors of every horizon.

    Where an origin's series has no value at or before the lag (shorter history than a season)
    the last value at the origin is used.

    Args:
        features_dir: The preprocessed dataset.
        spec: Its feature spec.
        origins: The origins (time column, series keys, optionally ``target_h*`` actuals).
        season_length: Periods per season (52 weekly, 12 monthly).
    """
    started = time.perf_counter()
    t = spec.time_column
    panel = SeriesPanel.from_series(load_series(features_dir, spec), spec)
    std = _series_std(panel, features_dir, spec)

    train = backtest_origins(features_dir, spec, "train")
    train_rows, train_cols = panel.locate(train, t)
    fitted, _ = seasonal_naive_points(panel, train_rows, train_cols, spec.horizon, season_length)
    errors = (_actuals(train, spec) - fitted) / std[train_rows, None]
    if np.isnan(errors).all(axis=0).any():
        raise ValueError("seasonal naive: a horizon has no training errors (history too short)")
    low, high = np.nanquantile(errors, [LOWER, UPPER], axis=0)

    rows, cols = panel.locate(origins, t)
    point, filled = seasonal_naive_points(panel, rows, cols, spec.horizon, season_length)
    at_origin = panel.forward_filled()[rows, cols]
    short = np.isnan(point)
    point = np.where(short, at_origin[:, None], point)
    scale = std[rows, None]
    quantiles = {"p10": point + low * scale, "p50": point, "p90": point + high * scale}
    nonneg = _nonnegative_target(features_dir, spec)
    frame = _frame(origins, spec, quantiles, "seasonal_naive", nonneg)
    log.info(
        "seasonal naive: %d origins x %d horizons in %.1fs (%d lags filled from an earlier "
        "value, %d without a season of history)",
        len(origins),
        spec.horizon,
        time.perf_counter() - started,
        filled,
        int(short.sum()),
    )
    return frame


def _series_std(panel: SeriesPanel, features_dir: Path | str, spec: FeatureSpec) -> np.ndarray:
    """Training standard deviation of each panel series (``statistics.json``), panel order."""
    scales = series_target_stats(features_dir, spec)
    keys = list(spec.series_keys)
    merged = panel.keys.merge(scales, on=keys, how="left")
    std = merged["target_std"].to_numpy(dtype=float)
    # A series absent from training: its own spread, so the interval is still on its scale.
    own = np.nanstd(panel.values, axis=1)
    std = np.where(np.isfinite(std), std, np.where(own > 0, own, 1.0))
    return std


# --------------------------------------------------------------------------------------------
# ETS
# --------------------------------------------------------------------------------------------

_MIN_FIT_POINTS = 8


@dataclass
class _EtsParams:
    """Fixed parameters of one series' ETS(A, Ad|N, N) on its deseasonalised target."""

    alpha: float
    beta: float = 0.0
    phi: float = 1.0
    level0: float = 0.0
    trend0: float = 0.0
    kind: str = "fixed"  # "damped", "none" (ETS(A,N,N)) or "fixed" (the fallback)


def _fit_one(y: pd.Series, trend: str | None) -> tuple[float, _EtsParams, np.ndarray] | None:
    """One statsmodels ``ETSModel`` fit: (AIC, parameters, one-step errors), or None if it fails."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter of single fits
            model = ETSModel(y, error="add", trend=trend, damped_trend=trend is not None)
            result = model.fit(disp=False)
    except Exception as err:  # any failure of a fit means "try something simpler"
        log.debug("ETS fit (trend=%s) failed: %s", trend, err)
        return None
    p = dict(zip(result.model.param_names, np.asarray(result.params), strict=True))
    params = _EtsParams(
        alpha=p["smoothing_level"],
        beta=p.get("smoothing_trend", 0.0),
        phi=p.get("damping_trend", 1.0),
        level0=p["initial_level"],
        trend0=p.get("initial_trend", 0.0),
        kind="damped" if trend else "none",
    )
    values = [params.alpha, params.beta, params.phi, params.level0, params.trend0, result.aic]
    if not np.all(np.isfinite(values)):
        return None
    return float(result.aic), params, np.asarray(result.resid, dtype=float)


def _fit_ets(remainder: np.ndarray) -> _EtsParams:
    """Fit ETS(A,N,N), and ETS(A,Ad,N) where its errors drift; keep the lower AIC.

    The damped-trend fit costs 5-10 times the level-only one (five parameters, often at the
    β = 0 bound), so it is only tried when the level-only model's one-step errors have a mean
    further than two standard errors from 0: the sign of a trend it lags behind.

    Raises:
        ValueError: when no fit gives finite parameters.
    """
    y = pd.Series(remainder)  # statsmodels' prediction code wants an index
    level_only = _fit_one(y, None)
    drift = True
    if level_only is not None:
        errors = level_only[2][np.isfinite(level_only[2])]
        se = errors.std() / np.sqrt(max(errors.size, 1))
        drift = bool(abs(errors.mean()) > 2 * se)
    candidates = [level_only, _fit_one(y, "add") if drift else None]
    fits = [c for c in candidates if c is not None]
    if not fits:
        raise ValueError("no ETS model could be fitted")
    return min(fits, key=lambda c: c[0])[1]


def _fixed_ets(remainder: np.ndarray) -> _EtsParams:
    """The fallback: simple exponential smoothing with a fixed smoothing weight."""
    finite = remainder[np.isfinite(remainder)]
    return _EtsParams(alpha=0.2, level0=float(finite[0]) if finite.size else 0.0, kind="fixed")


def _seasonal_profile(z: np.ndarray, positions: np.ndarray, season_length: int) -> np.ndarray:
    """Mean of ``z`` by season position minus the overall mean (0 where a position is empty)."""
    ok = np.isfinite(z)
    sums = np.bincount(positions[ok], weights=z[ok], minlength=season_length)
    counts = np.bincount(positions[ok], minlength=season_length)
    means = np.divide(sums, counts, out=np.zeros(season_length), where=counts > 0)
    return np.where(counts > 0, means - z[ok].mean(), 0.0)


def ets(
    features_dir: Path | str,
    spec: FeatureSpec,
    origins: pd.DataFrame,
    *,
    season_length: int,
    config: BaselineConfig | None = None,
) -> pd.DataFrame:
    """Exponential-smoothing forecasts of ``origins`` (model ``"ets"``).

    Per series, on the history up to the first origin (the last ``ets_history_seasons``
    seasons of it):

    1. ``z = log(1 + y)`` when ``config.ets_log`` and the target is non-negative, else ``y``.
    2. With at least two seasons of history, a seasonal profile is removed: the mean of ``z``
       by position in the year (:func:`calendar_position`) minus the mean. A state-space ETS with
       a 52-period season estimates 52 seasonal states per series and is far too slow for
       hundreds of series; the fixed profile plus a non-seasonal ETS costs ~20 ms a series.
    3. statsmodels ``ETSModel`` with additive errors is fitted to the remainder: no trend, or
       an additive damped trend when the level-only errors drift and its AIC is lower (see
       ``_fit_ets``). When no fit succeeds the series is refitted without the profile, and
       when that fails too it falls back to simple exponential smoothing with weight 0.2;
       the cases are counted and logged.

    Then the fitted models are run forward over the later data with their parameters fixed (no
    refit; missing values only propagate the state), vectorised over all series: the same
    recursion as statsmodels (``l_t = l + φb + αe``, ``b_t = φb + βe``). At each origin the
    ``h``-step forecast is ``l + (φ + … + φ^h) b`` plus the profile of the target period, with
    the analytic ETS(A,Ad,N) variance ``σ² (1 + Σ_{j<h} (α + β(φ + … + φ^j))²)`` (σ² the
    in-sample one-step mean squared error); its 80 % normal interval gives P10 / P90, mapped
    back through ``exp(z) − 1`` when logged (quantiles survive the monotone map).

    Args:
        features_dir: The preprocessed dataset.
        spec: Its feature spec.
        origins: The origins (time column, series keys, optionally ``target_h*`` actuals).
        season_length: Periods per season (52 weekly, 12 monthly).
        config: Baseline settings (``ets_history_seasons``, ``ets_log``).
    """
    config = config or BaselineConfig()
    started = time.perf_counter()
    t = spec.time_column
    panel = SeriesPanel.from_series(load_series(features_dir, spec), spec)
    rows, cols = panel.locate(origins, t)
    nonneg = _nonnegative_target(features_dir, spec)
    logged = config.ets_log and nonneg
    z = np.log1p(np.maximum(panel.values, 0.0)) if logged else panel.values.copy()
    cutoff = int(cols.min())  # data up to the first origin, inclusive, is known there
    n_series = z.shape[0]
    first = np.argmax(np.isfinite(z), axis=1)
    start = first.copy()
    if config.ets_history_seasons is not None:
        start = np.maximum(start, cutoff - config.ets_history_seasons * season_length + 1)
    positions = calendar_position(panel.times, season_length)

    profiles = np.zeros((n_series, season_length))
    params: list[_EtsParams] = []
    counts = {"damped": 0, "none": 0, "fixed": 0, "non_seasonal": 0, "refit_non_seasonal": 0}
    every = max(1, n_series // 10)
    for s in range(n_series):
        window = slice(start[s], cutoff + 1)
        zw = z[s, window]
        observed = int(np.isfinite(zw).sum())
        if observed >= 2 * season_length:
            profiles[s] = _seasonal_profile(zw, positions[window], season_length)
        else:
            counts["non_seasonal"] += 1
        fitted = None
        for attempt in range(2):
            remainder = zw - profiles[s, positions[window]]
            # The fit needs a gapless series; the forward run below skips missing values.
            remainder = pd.Series(remainder).interpolate(limit_direction="both").to_numpy()
            if observed >= _MIN_FIT_POINTS and np.isfinite(remainder).all():
                try:
                    fitted = _fit_ets(remainder)
                    break
                except ValueError:
                    pass
            if attempt == 0 and profiles[s].any():
                counts["refit_non_seasonal"] += 1
                profiles[s] = 0.0
            else:
                break
        if fitted is None:
            fitted = _fixed_ets(z[s, start[s] :])
        counts[fitted.kind] += 1
        params.append(fitted)
        if (s + 1) % every == 0 or s + 1 == n_series:
            log.info(
                "ets: fitted %d/%d series (%.1fs)", s + 1, n_series, time.perf_counter() - started
            )
    if counts["fixed"] or counts["refit_non_seasonal"]:
        log.warning(
            "ets: %d series refitted without their seasonal profile, %d fell back to fixed "
            "simple exponential smoothing",
            counts["refit_non_seasonal"],
            counts["fixed"],
        )
    log.info("ets fits: %s", counts)

    alpha = np.array([p.alpha for p in params])
    beta = np.array([p.beta for p in params])
    phi = np.array([p.phi for p in params])
    level, trend = ets_filter(
        z - profiles[:, positions],
        start,
        np.array([p.level0 for p in params]),
        np.array([p.trend0 for p in params]),
        alpha,
        beta,
        phi,
        last=int(cols.max()),
    )
    sigma2 = _one_step_mse(z - profiles[:, positions], start, cutoff, level, trend, phi)

    h = np.arange(1, spec.horizon + 1)
    damp, sd = ets_moments(alpha, beta, phi, sigma2, spec.horizon)

    offset = pd.tseries.frequencies.to_offset(spec.period)
    origin_times = pd.DatetimeIndex(pd.to_datetime(origins[t]))
    target_pos = np.stack(
        [calendar_position(origin_times + k * offset, season_length) for k in h], axis=1
    )
    mean = (
        level[rows, cols][:, None]
        + damp[rows] * trend[rows, cols][:, None]
        + profiles[rows[:, None], target_pos]
    )
    half = Z_UPPER * sd[rows]
    back = np.expm1 if logged else (lambda a: a)
    quantiles = {"p10": back(mean - half), "p50": back(mean), "p90": back(mean + half)}
    frame = _frame(origins, spec, quantiles, "ets", nonneg)
    log.info(
        "ets: %d series, %d origins x %d horizons in %.1fs",
        n_series,
        len(origins),
        spec.horizon,
        time.perf_counter() - started,
    )
    return frame


def ets_moments(
    alpha: np.ndarray,
    beta: np.ndarray,
    phi: np.ndarray,
    sigma2: np.ndarray,
    horizon: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Trend multipliers and forecast standard deviations of ETS(A,Ad,N), ``[series, H]``.

    The ``h``-step forecast from level ``l`` and trend ``b`` is ``l + d_h b`` with
    ``d_h = φ + … + φ^h``; its variance is ``σ² (1 + Σ_{j<h} (α + β d_j)²)`` (Hyndman et al.,
    *Forecasting with Exponential Smoothing*, class 1), as statsmodels' ``ETSModel`` computes.
    ETS(A,N,N) is ``β = 0``.

    Returns:
        ``d`` and the standard deviations.
    """
    alpha, beta, phi, sigma2 = (
        np.atleast_1d(np.asarray(a, dtype=float)) for a in (alpha, beta, phi, sigma2)
    )
    h = np.arange(1, horizon + 1)
    damp = np.cumsum(phi[:, None] ** h[None, :], axis=1)
    c = alpha[:, None] + beta[:, None] * damp  # c_j for j = 1..H
    spread = np.concatenate([np.zeros((len(c), 1)), np.cumsum(c[:, :-1] ** 2, axis=1)], axis=1)
    return damp, np.sqrt(sigma2[:, None] * (1.0 + spread))


def ets_filter(
    remainder: np.ndarray,
    start: np.ndarray,
    level0: np.ndarray,
    trend0: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    phi: np.ndarray,
    last: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ETS(A,Ad,N) forward with fixed parameters, all series at once.

    The statsmodels ``ETSModel`` recursion: with ``f = l + φb`` and ``e = y − f``,
    ``l ← f + αe`` and ``b ← φb + βe``. Series ``s`` starts from ``(level0, trend0)`` (its state
    before period ``start[s]``). A missing value leaves ``f`` as the new state (no error).

    Args:
        remainder: ``[series, periods]`` values (deseasonalised), NaN where missing.
        start: First period of each series.
        level0, trend0: Initial states.
        alpha, beta, phi: Smoothing weights and damping, one per series.
        last: Last period to run to.

    Returns:
        Level and trend after each period: the initial state before a series starts, NaN
        before any series starts and after ``last``.
    """
    n_series, n_times = remainder.shape
    level = np.full((n_series, n_times), np.nan)
    trend = np.full((n_series, n_times), np.nan)
    lvl, trd = level0.astype(float).copy(), trend0.astype(float).copy()
    for i in range(int(start.min()), last + 1):
        active = i >= start
        forecast = lvl + phi * trd
        y = remainder[:, i]
        error = np.where(active & np.isfinite(y), y - forecast, 0.0)
        lvl = np.where(active, forecast + alpha * error, lvl)
        trd = np.where(active, phi * trd + beta * error, trd)
        level[:, i], trend[:, i] = lvl, trd
    return level, trend


def _one_step_mse(
    remainder: np.ndarray,
    start: np.ndarray,
    cutoff: int,
    level: np.ndarray,
    trend: np.ndarray,
    phi: np.ndarray,
) -> np.ndarray:
    """In-sample one-step mean squared error of each series over its fit window."""
    n_series = remainder.shape[0]
    sq = np.zeros(n_series)
    n = np.zeros(n_series)
    for s in range(n_series):
        a = int(start[s])
        if a + 1 > cutoff:
            continue
        # The forecast of period i is made from the state after period i − 1.
        forecast = level[s, a:cutoff] + phi[s] * trend[s, a:cutoff]
        err = remainder[s, a + 1 : cutoff + 1] - forecast
        ok = np.isfinite(err)
        sq[s], n[s] = np.sum(err[ok] ** 2), ok.sum()
    mse = np.divide(sq, n, out=np.full(n_series, np.nan), where=n > 0)
    # A series without one-step errors: the median spread of the others.
    fallback = np.nanmedian(mse) if np.isfinite(mse).any() else 1.0
    return np.where(np.isfinite(mse), mse, fallback)


# --------------------------------------------------------------------------------------------
# Gradient-boosted trees (Spark ML)
# --------------------------------------------------------------------------------------------

_HORIZON = "horizon"
_LABEL = "label"
_MEAN, _STD = "_series_mean", "_series_std"
_ROW = "_row"
_REF = "_reference"
# A feature is "in target units" when its mean is within this factor of the series' target
# mean for (nearly) every series: lags and rolling means of the target, same-unit quantities.
_LEVEL_RATIO = 2.0
_LEVEL_SHARE = 0.9
# Seasons averaged by the seasonal-mean features of the GBT.
_SEASONAL_MEAN_SEASONS = 3
# Seasonal features of each (origin, horizon) row: scaled like the target, or like a change.
_SEASONAL_LEVEL = ("seasonal_naive_at_h", "seasonal_mean_at_h", "seasonal_mean_origin")
_SEASONAL_CHANGE = ("seasonal_change_at_h",)


def horizon_families(spec: FeatureSpec) -> dict[str, list[str]]:
    """Feature columns that come one per horizon (``<base>_h1 .. <base>_hH``), by base name.

    In the pooled GBT each family becomes one column, its value at the row's horizon (e.g.
    the known-future holiday code of the target period).
    """
    pattern = re.compile(r"^(.+)_h(\d+)$")
    found: dict[str, dict[int, str]] = {}
    for column in spec.feature_columns:
        match = pattern.match(column)
        if match:
            found.setdefault(match.group(1), {})[int(match.group(2))] = column
    wanted = set(range(1, spec.horizon + 1))
    return {
        base: [cols[h] for h in sorted(cols)] for base, cols in found.items() if set(cols) == wanted
    }


def _level_features(train: SparkFrame, spec: FeatureSpec, candidates: Sequence[str]) -> list[str]:
    """The numeric features in target units, found from per-series training means.

    A feature qualifies when, for at least 90 % of the series, its mean absolute value is
    within a factor 2 of the series' mean absolute target: then scaling it like the target
    puts every series on one scale. The target at the origin always qualifies.
    """
    from pyspark.sql import functions as F

    keys = list(spec.series_keys)
    columns = [c for c in candidates if c != spec.target]
    aggs = [F.mean(F.abs(F.col(c).cast("double"))).alias(c) for c in [spec.target, *columns]]
    means = train.groupBy(*keys).agg(*aggs).toPandas()
    target = means[spec.target].to_numpy(dtype=float)
    level = [spec.target]
    for column in columns:
        ratio = np.abs(means[column].to_numpy(dtype=float)) / np.where(target > 0, target, np.nan)
        inside = (ratio >= 1 / _LEVEL_RATIO) & (ratio <= _LEVEL_RATIO)
        if inside.mean() >= _LEVEL_SHARE:
            level.append(column)
    return level


def _seasonal_rows(
    panel: SeriesPanel,
    rows: pd.DataFrame,
    horizons: np.ndarray,
    spec: FeatureSpec,
    season_length: int,
) -> pd.DataFrame:
    """(origin, horizon) rows with their seasonal reference values, for the GBT.

    ``seasonal_naive_at_h`` is the seasonal-naive forecast (the value one season before the
    target period), ``seasonal_mean_at_h`` the mean of the values one to three seasons before
    it, ``seasonal_mean_origin`` that mean for the origin period and ``seasonal_change_at_h``
    the difference of the two (last years' change from the origin to the target period), all
    from the reconstructed series (data up to the origin only). Where there is no history that
    far back the values are the target at the origin.

    Args:
        panel: The reconstructed series.
        rows: Origins (time column and series keys), one per output row.
        horizons: The horizon of each row (1..H).
        spec: The feature spec.
        season_length: Periods per season.

    Returns:
        ``rows`` (time as dates, for joining the Spark features) with ``horizon`` and the four
        seasonal columns.
    """
    t = spec.time_column
    r, c = panel.locate(rows, t)
    h = np.asarray(horizons, dtype=int)
    filled = panel.forward_filled()
    at_origin = filled[r, c]
    back = np.stack(
        [
            _values_at(panel, filled, r, c + _seasonal_lag(h, season_length, k))[0]
            for k in range(_SEASONAL_MEAN_SEASONS)
        ]
    )
    naive = np.where(np.isnan(back[0]), at_origin, back[0])
    count = np.sum(~np.isnan(back), axis=0)
    mean = np.divide(np.nansum(back, axis=0), count, out=naive.copy(), where=count > 0)
    # The same mean for the origin period itself: the seasonal change from there to t + h.
    lagged = [c - season_length * k for k in range(1, _SEASONAL_MEAN_SEASONS + 1)]
    before = np.stack([_values_at(panel, filled, r, j)[0] for j in lagged])
    count0 = np.sum(~np.isnan(before), axis=0)
    mean0 = np.divide(np.nansum(before, axis=0), count0, out=at_origin.copy(), where=count0 > 0)
    out = rows.reset_index(drop=True).copy()
    out[t] = pd.to_datetime(out[t]).dt.date
    for key in spec.series_keys:
        out[key] = out[key].astype(str)
    return out.assign(
        **{
            _HORIZON: h.astype(np.int32),
            "seasonal_naive_at_h": naive,
            "seasonal_mean_at_h": mean,
            "seasonal_mean_origin": mean0,
            "seasonal_change_at_h": mean - mean0,
        }
    )


def _gbt_inputs(
    frame: SparkFrame,
    spec: FeatureSpec,
    families: dict[str, list[str]],
    level: Sequence[str],
    change: Sequence[str],
) -> SparkFrame:
    """Add the label and the per-horizon family values; scale the label and the levels.

    With ``y0`` the target at the origin and ``std`` the series' training standard deviation:
    the label is ``(y_{t+h} − y0) / std``, each level feature ``f`` becomes ``(f − y0) / std``,
    each ``change`` feature (a difference in target units) ``f / std``, and the target at the
    origin ``(y0 − mean) / std``. ``y0`` is kept in ``_REF``.
    """
    from pyspark.sql import functions as F

    ref, std = F.col(_REF), F.col(_STD)
    out = frame.withColumn(_REF, F.col(spec.target))
    target = F.element_at(F.array(*[F.col(c) for c in spec.target_columns]), F.col(_HORIZON))
    out = out.withColumn(_LABEL, (target - ref) / std)
    for base, columns in families.items():
        values = F.array(*[F.col(c).cast("double") for c in columns])
        out = out.withColumn(f"{base}_at_h", F.element_at(values, F.col(_HORIZON)))
    for column in level:
        if column != spec.target:
            out = out.withColumn(column, (F.col(column) - ref) / std)
    for column in change:
        out = out.withColumn(column, F.col(column) / std)
    return out.withColumn(spec.target, (ref - F.col(_MEAN)) / std)


def gbt(
    spark: SparkSession,
    features_dir: Path | str,
    spec: FeatureSpec,
    origins: pd.DataFrame,
    *,
    season_length: int,
    config: BaselineConfig | None = None,
) -> pd.DataFrame:
    """Gradient-boosted-tree forecasts of ``origins`` with Spark ML (model ``"gbt"``).

    One pooled ``GBTRegressor`` for all horizons, the horizon being a feature. Spark's cost is
    a fixed ~0.1 s or more per job (a few jobs per tree) plus a pass over the rows per tree
    level, so twelve per-horizon models would cost about twelve times one. Each training origin
    contributes one (origin, horizon) row with a random horizon, sampled down to
    ``config.gbt_max_rows`` rows, so the training set does not grow with H. The (origin,
    horizon) rows are drawn in pandas (seeded) and joined to the feature rows in Spark.

    Label: ``(y_{t+h} − y_t) / std``, the change from the origin scaled by the series'
    training standard deviation (``statistics.json``), so series of any size share the trees
    and a trend carrying the test period above the training range does not push the label out
    of the range the trees saw (trees do not extrapolate: with ``(y − mean) / std`` the GBT
    lost to seasonal naive on tiny crop data, whose test period lies 0.7 std above training).
    Features (see :func:`_gbt_inputs`): ``spec.numeric``,
    those in target units (the target, its lags and rolling means: :func:`_level_features`)
    relative to ``y_t`` and scaled like the label; string categoricals (the series keys...)
    through ``StringIndexer``, treated as categories by the trees; integer categoricals as
    numbers, except families of per-horizon columns (``<base>_h1..H``,
    :func:`horizon_families`), which become one column, the value at the row's horizon; the
    horizon; and seasonal references of the target period from the reconstructed series
    (:func:`_seasonal_rows`): the feature columns hold lags of the origin, which the trees
    cannot line up with the target period's season on their own.

    Quantiles are conformal: the 10 / 50 / 90 % quantiles of the validation residuals (scaled
    label minus prediction) of each horizon are added to the prediction, which is then scaled
    back (the median also moves the squared-error fit towards the median).

    Args:
        spark: The SparkSession.
        features_dir: The preprocessed dataset.
        spec: Its feature spec.
        origins: The origins (time column, series keys, optionally ``target_h*`` actuals); they
            must be rows of the dataset (any split).
        season_length: Periods per season (52 weekly, 12 monthly).
        config: Baseline settings (``gbt_*``, ``seed``).

    Raises:
        ValueError: when an origin is not a row of the dataset, or a horizon has no
            validation residuals.
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StringIndexer, VectorAssembler
    from pyspark.ml.regression import GBTRegressor
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    config = config or BaselineConfig()
    started = time.perf_counter()
    read_split_info(features_dir, spec)
    t, keys, H = spec.time_column, list(spec.series_keys), spec.horizon
    rng = np.random.default_rng(config.seed)
    stats = json.loads((Path(features_dir) / "statistics.json").read_text())
    scales = series_target_stats(features_dir, spec).rename(
        columns={"target_mean": _MEAN, "target_std": _STD}
    )
    features = spark.read.parquet(str(Path(features_dir) / "features"))
    features = features.join(F.broadcast(spark.createDataFrame(scales)), keys, "inner")

    # Use what the dataset holds: one built with an older spec lacks some columns.
    present = set(features.columns)
    absent = [c for c in spec.feature_columns if c not in present]
    if absent:
        log.warning(
            "gbt: %d feature columns of the spec are not in %s, skipped: %s",
            len(absent),
            features_dir,
            ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""),
        )
    families = {
        base: columns
        for base, columns in horizon_families(spec).items()
        if all(c in present for c in columns)
    }
    in_family = {c for columns in families.values() for c in columns}
    plain = [c for c in spec.numeric if c in present and c not in in_family]
    categorical = [c for c in spec.categorical if c in present and c not in in_family]
    schema = {f.name: f.dataType for f in features.schema.fields}
    strings = [c for c in categorical if isinstance(schema[c], T.StringType)]
    numeric = [
        *plain,
        *(c for c in categorical if c not in strings),
        *(f"{base}_at_h" for base in families),
        *_SEASONAL_LEVEL,
        *_SEASONAL_CHANGE,
        _HORIZON,
    ]
    indexed = [f"{c}_idx" for c in strings]
    vocabularies = stats.get("categorical", {})
    vocab = max([len(vocabularies.get(c, {}).get("vocabulary", [])) for c in strings] or [0])

    # The (origin, horizon) rows: training origins sampled with one random horizon each,
    # validation origins sampled with every horizon, the origins with every horizon.
    panel = SeriesPanel.from_series(load_series(features_dir, spec), spec)
    split_rows = read_features(features_dir, spec, [t, *keys], ["train", "validation"])
    train_origins = split_rows[split_rows[SPLIT] == "train"][[t, *keys]]
    train_origins = train_origins.iloc[
        np.sort(rng.permutation(len(train_origins))[: config.gbt_max_rows])
    ]
    train_rows = _seasonal_rows(
        panel, train_origins, rng.integers(1, H + 1, len(train_origins)), spec, season_length
    )
    val_origins = split_rows[split_rows[SPLIT] == "validation"][[t, *keys]]
    val_origins = val_origins.iloc[
        np.sort(rng.permutation(len(val_origins))[: max(1, config.gbt_max_rows // H)])
    ]
    all_h = np.tile(np.arange(1, H + 1), len(val_origins))
    val_rows = _seasonal_rows(
        panel,
        val_origins.iloc[np.repeat(np.arange(len(val_origins)), H)],
        all_h,
        spec,
        season_length,
    )
    wanted = origins[[t, *keys]].assign(**{_ROW: np.arange(len(origins), dtype=np.int64)})
    wanted = wanted.iloc[np.repeat(np.arange(len(wanted)), H)]
    pred_rows = _seasonal_rows(
        panel, wanted, np.tile(np.arange(1, H + 1), len(origins)), spec, season_length
    )

    level = _level_features(features.where(F.col(SPLIT) == "train"), spec, plain)
    log.info("gbt: %d features scaled like the target: %s", len(level), ", ".join(level))
    level += list(_SEASONAL_LEVEL)

    def joined(rows: pd.DataFrame) -> SparkFrame:
        frame = features.join(spark.createDataFrame(rows), [t, *keys], "inner")
        return _gbt_inputs(frame, spec, families, level, _SEASONAL_CHANGE)

    train = joined(train_rows).select(*strings, *numeric, _LABEL)
    train = train.where(F.col(_LABEL).isNotNull()).cache()
    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCols=strings, outputCols=indexed, handleInvalid="keep"),
            VectorAssembler(
                inputCols=[*numeric, *indexed], outputCol="features", handleInvalid="keep"
            ),
            GBTRegressor(
                featuresCol="features",
                labelCol=_LABEL,
                maxIter=config.gbt_max_iter,
                maxDepth=config.gbt_max_depth,
                stepSize=config.gbt_step_size,
                maxBins=max(32, vocab + 1),
                seed=config.seed,
            ),
        ]
    )
    fit_started = time.perf_counter()
    model = pipeline.fit(train)
    train.unpersist()
    log.info(
        "gbt: %d trees of depth %d on %d rows in %.1fs",
        config.gbt_max_iter,
        config.gbt_max_depth,
        len(train_rows),
        time.perf_counter() - fit_started,
    )

    # Conformal quantiles: validation residuals of every horizon.
    residual = F.col(_LABEL) - F.col("prediction")
    levels = F.array(*[F.lit(q) for q in (LOWER, 0.5, UPPER)])
    table = (
        model.transform(joined(val_rows).where(F.col(_LABEL).isNotNull()))
        .groupBy(_HORIZON)
        .agg(F.percentile_approx(residual, levels, 10_000).alias("q"))
        .collect()
    )
    offsets = {int(r[_HORIZON]): list(r["q"]) for r in table}
    missing = sorted(set(range(1, H + 1)) - set(offsets))
    if missing:
        raise ValueError(f"gbt: no validation residuals for horizons {missing}")
    resid_q = np.array([offsets[h] for h in range(1, H + 1)])  # [H, 3]

    # Forecasts of the origins, matched back to them by row number and horizon.
    predicted = model.transform(joined(pred_rows)).select(_ROW, _HORIZON, "prediction", _REF, _STD)
    predicted = predicted.toPandas()
    if len(predicted) != len(pred_rows):
        found = predicted[_ROW].nunique()
        raise ValueError(
            f"gbt: {len(origins) - found} of {len(origins)} origins are not (unique) rows of "
            "the dataset"
        )
    row = predicted[_ROW].to_numpy()
    col = predicted[_HORIZON].to_numpy() - 1
    scaled = np.full((len(origins), H), np.nan)
    scaled[row, col] = predicted["prediction"].to_numpy(dtype=float)
    reference = np.zeros(len(origins))
    std = np.zeros(len(origins))
    reference[row] = predicted[_REF].to_numpy(dtype=float)
    std[row] = predicted[_STD].to_numpy(dtype=float)
    quantiles = {
        name: reference[:, None] + std[:, None] * (scaled + resid_q[None, :, k])
        for k, name in enumerate(("p10", "p50", "p90"))
    }
    frame = _frame(origins, spec, quantiles, "gbt", _nonnegative_target(features_dir, spec))
    log.info(
        "gbt: %d origins x %d horizons in %.1fs", len(origins), H, time.perf_counter() - started
    )
    return frame


# --------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------


def run_baselines(
    spark: SparkSession | None,
    features_dir: Path | str,
    spec: FeatureSpec,
    *,
    season_length: int,
    split: str = "test",
    config: BaselineConfig | None = None,
) -> dict[str, pd.DataFrame]:
    """Every baseline on the same origins (``split`` every ``config.stride`` periods).

    Args:
        spark: The SparkSession for the GBT; None skips the GBT.
        features_dir: The preprocessed dataset.
        spec: Its feature spec.
        season_length: Periods per season (52 weekly, 12 monthly).
        split: The split whose origins are forecast.
        config: Baseline settings.

    Returns:
        Forecast frames by model name (``"seasonal_naive"``, ``"ets"``, ``"gbt"``).
    """
    config = config or BaselineConfig()
    origins = backtest_origins(features_dir, spec, split, config.stride)
    frames = {
        "seasonal_naive": seasonal_naive(features_dir, spec, origins, season_length=season_length),
        "ets": ets(features_dir, spec, origins, season_length=season_length, config=config),
    }
    if spark is not None:
        frames["gbt"] = gbt(
            spark, features_dir, spec, origins, season_length=season_length, config=config
        )
    return frames
