"""Realized accuracy: how the served forecasts did once the actual values came in.

``realized_accuracy`` takes the logged predictions (``perucast.prediction_logs.read_predictions``:
one row per forecast instance with its request inputs and ``p10``/``p50``/``p90`` arrays of
length H) and the use case's target table (``TargetSpec.table``), and scores every forecast
whose actual is known with the evaluation's metrics, so realized and evaluation-time values
(``assets.extra/evaluation.json``, ``perucast.export.evaluation_summary``) compare key by key.

**Origin resolution.** A logged request does not say which period it forecasts from, and its
time is unreliable (replays, back-fills, client clock skew), so each prediction is placed by
content first:

1. ``content``: the request's target-at-origin input (``UseCase.target_history_inputs[0]``,
   e.g. ``demand_tonnes``) equals the series' actual of exactly one period (to float32
   precision: requests carry float32), and its lag-1 / lag-2 inputs equal the actuals one and
   two periods earlier (a lag input that is NaN, or whose actual is absent, does not count
   against a period). The lags also reject the crop demand panel's forward-filled weeks, whose
   target input repeats an earlier week.
2. ``content_tiebreak``: several periods match (a flat stretch of the series); the one nearest
   to the timestamp origin below is taken (the earlier on a tie).
3. ``timestamp``: no period matches (the actual of the origin is not in the table yet, or was
   revised since); the origin is the **last complete period before the request's timestamp**
   (UTC): the period start before the one the timestamp falls in (a request on Wednesday
   2024-03-13 forecasts from Monday 2024-03-04; one on 2024-03-13 of a monthly series from
   2024-02-01). ``RealizedConfig(fallback="none")`` leaves these unresolved instead.
4. ``unresolved``, counted per reason and never scored: ``no_series_key`` (a series key input
   is missing), ``unknown_series`` (the actuals have no value of that series), ``ambiguous``
   (several periods match and there is no timestamp), ``no_content_match`` (with
   ``fallback="none"``), ``no_timestamp`` (no match and no usable timestamp), ``no_forecast``
   (no usable ``p10``/``p50``/``p90`` arrays).

**Duplicates.** The same (series, origin, model version) forecast logged more than once (client
retries, replays) counts once: the latest by ``timestamp`` wins (on equal times the later row
of the frame, i.e. log order; a missing timestamp loses), so the answer the client saw last is
the one scored. Different
model versions stay apart; pass ``segment_by`` with ``model_version`` to compare them.

**States.** Each forecast is exploded to H rows (``horizon`` 1..H, ``target_time`` = origin + h
periods) and joined with the actuals of its series:

* ``matched``: the actual is present: scored;
* ``pending``: ``target_time`` is after the series' last observed period (or after ``as_of``):
  the actual is late or not due yet. Running again with more actuals turns these into matched;
* ``missing``: ``target_time`` is within the covered period but its actual is absent or null
  (a gap in the table): not scored, counted.

**Metrics** (over matched rows, as ``perucast.evaluation.score`` defines them): ``mase`` (mean of
``|actual − p50| / scale`` where scale is the seasonal naive in-sample MAE,
``perucast.metrics.seasonal_naive_scale``, of the series' actuals up to and including the
origin on the period grid, gaps as NaN: the history the forecast was made with. The evaluation
takes the same formula over the history before its test period, one scale per series. Rows
whose scale is NaN (under one season plus one period of history) or 0 are left out), ``wql``
(weighted quantile loss over P10/P50/P90), ``coverage_80`` (share within [P10, P90]), ``rmse``
and ``smape`` of the P50, ``n`` (rows scored). Segments: ``"all"``, ``"h=1"`` ..
``"h=H"`` and ``"<column>=<value>"`` for each ``segment_by`` column (default: the series keys,
e.g. ``"region=lima"``, ``"crop=potato"``, ``"zone=north"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from perucast.metrics import (
    interval_coverage,
    rmse,
    smape,
    weighted_quantile_loss,
)
from perucast.quantiles import QUANTILE_COLUMNS, QUANTILE_LEVELS

if TYPE_CHECKING:
    from pandas.tseries.offsets import DateOffset

    from models.base import UseCase

# Columns of the rows frame (besides the series keys, the quantiles and ``segment_by`` columns).
PREDICTION = "prediction"  # position of the logged prediction in the input frame
TIMESTAMP = "timestamp"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
ORIGIN = "origin"
RESOLUTION = "resolution"
HORIZON = "horizon"
TARGET_TIME = "target_time"
ACTUAL = "actual"
STATE = "state"
SCALE = "scale"

MATCHED, PENDING, MISSING = "matched", "pending", "missing"
STATES: tuple[str, ...] = (MATCHED, PENDING, MISSING)
CONTENT, TIEBREAK, BY_TIMESTAMP, UNRESOLVED = (
    "content",
    "content_tiebreak",
    "timestamp",
    "unresolved",
)
RESOLUTIONS: tuple[str, ...] = (CONTENT, TIEBREAK, BY_TIMESTAMP, UNRESOLVED)
METRICS: tuple[str, ...] = ("mase", "wql", "coverage_80", "rmse", "smape", "n")
ALL = "all"


class RealizedConfig(BaseModel):
    """How logged predictions are placed on their origin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rtol: float = Field(
        default=1e-6,
        ge=0,
        description="Relative tolerance of content matching (float32 carries ~6e-8).",
    )
    atol: float = Field(default=1e-6, ge=0, description="Absolute tolerance of content matching.")
    fallback: Literal["timestamp", "none"] = Field(
        default="timestamp",
        description="Origin of a prediction no period matches: the last complete period "
        "before its timestamp, or none (unresolved).",
    )


def segment_label(group: str, value: Any) -> str:
    """The name of a segment: ``"all"``, ``"h=3"``, ``"region=lima"``.

    Args:
        group: ``"all"`` or ``"overall"`` (everything), ``"horizon"`` or a column name.
        value: The horizon or the column's value (ignored for everything).
    """
    if group in (ALL, "overall"):
        return ALL
    if group in (HORIZON, "h"):
        return f"h={int(value)}"
    return f"{group}={value}"


@dataclass
class RealizedAccuracy:
    """Realized accuracy of logged forecasts against the actuals.

    Attributes:
        use_case: The use case's name.
        as_of: Actuals after this time were ignored (None: all of them).
        rows: One row per forecast period: ``prediction`` (position in the input frame),
            ``timestamp``, ``model_name``, ``model_version``, the series keys, ``origin``,
            ``resolution``, ``horizon``, ``target_time``, ``p10``, ``p50``, ``p90``, ``actual``
            (NaN unless matched), ``state``, ``scale`` (the MASE denominator at the origin),
            then the ``segment_by`` columns that are not series keys.
        by_segment: One row per segment: ``segment`` (its label), ``group`` (``"all"``,
            ``"horizon"`` or the column), ``value``, ``METRICS`` over matched rows, and the
            ``pending`` and ``missing`` row counts. Order: all, horizons, then each column's
            values sorted.
        by_period: One row per ``target_time``, ascending: ``METRICS`` over matched rows and
            the ``pending`` and ``missing`` counts (for plots of accuracy over time).
        resolution: Logged predictions per method (``RESOLUTIONS``), before deduplication.
        unresolved: Unresolved predictions per reason.
        duplicates: Resolved predictions dropped as duplicates of a later one.
        states: Forecast rows per state (``STATES``).
        predictions: Logged predictions given.
    """

    use_case: str
    as_of: pd.Timestamp | None
    rows: pd.DataFrame
    by_segment: pd.DataFrame
    by_period: pd.DataFrame
    resolution: dict[str, int]
    unresolved: dict[str, int]
    duplicates: int
    states: dict[str, int]
    predictions: int

    @property
    def segments(self) -> list[str]:
        """The segment labels, in ``by_segment`` order."""
        return list(self.by_segment["segment"])

    def segment(self, label: str = ALL) -> dict[str, float | int]:
        """The metrics and counts of one segment (``"all"``, ``"h=1"``, ``"zone=north"``).

        Raises:
            KeyError: An unknown segment, with the known ones.
        """
        found = self.by_segment[self.by_segment["segment"] == label]
        if found.empty:
            raise KeyError(f"no segment {label!r}; segments: {', '.join(self.segments)}")
        row = found.iloc[0]
        return {k: row[k] for k in (*METRICS, PENDING, MISSING)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: counts, and metrics per segment and per period (NaN as None)."""
        return {
            "use_case": self.use_case,
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
            "predictions": self.predictions,
            "resolution": dict(self.resolution),
            "unresolved": dict(self.unresolved),
            "duplicates": self.duplicates,
            "states": dict(self.states),
            "segments": {
                r["segment"]: {k: _json(r[k]) for k in (*METRICS, PENDING, MISSING)}
                for r in self.by_segment.to_dict("records")
            },
            "by_period": [
                {
                    TARGET_TIME: pd.Timestamp(r[TARGET_TIME]).isoformat(),
                    **{k: _json(r[k]) for k in (*METRICS, PENDING, MISSING)},
                }
                for r in self.by_period.to_dict("records")
            ],
        }


def _json(value: Any) -> float | int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def compare_with_evaluation(
    realized: RealizedAccuracy, evaluation: dict[str, Any], metrics: Sequence[str] = METRICS[:3]
) -> pd.DataFrame:
    """Realized against evaluation-time accuracy, for the segments both have.

    Args:
        realized: ``realized_accuracy``'s result.
        evaluation: A version's ``evaluation.json`` (``perucast.export.evaluation_summary``).
        metrics: The metrics compared.

    Returns:
        Columns ``segment``, ``metric``, ``evaluation``, ``realized``, ``n`` (realized rows
        scored), ``ratio`` (realized / evaluation; NaN when either is missing or 0), in the
        realized segments' order.
    """
    ev = evaluation.get("segments") or {}
    rows = []
    for rec in realized.by_segment.to_dict("records"):
        seg = rec["segment"]
        if seg not in ev or not isinstance(ev[seg], dict):
            continue
        for metric in metrics:
            then = ev[seg].get(metric)
            then = math.nan if then is None else float(then)
            now = float(rec[metric])
            ratio = now / then if then and math.isfinite(then) and math.isfinite(now) else math.nan
            rows.append([seg, metric, then, now, int(rec["n"]), ratio])
    return pd.DataFrame(rows, columns=["segment", "metric", "evaluation", "realized", "n", "ratio"])


# ---------------------------------------------------------------------------------------------
# Actuals


@dataclass
class _Series:
    """One series of the actuals on its regular period grid (gaps are NaN)."""

    times: pd.DatetimeIndex
    values: np.ndarray
    last_observed: pd.Timestamp


def _offset(use_case: UseCase) -> DateOffset:
    from pandas.tseries.frequencies import to_offset

    return to_offset(use_case.feature_spec(use_case.default_horizon).period)


def _actual_series(
    actuals: pd.DataFrame, use_case: UseCase, offset: DateOffset, as_of: pd.Timestamp | None
) -> dict[tuple[str, ...], _Series]:
    t = use_case.target
    keys = list(t.series_keys)
    missing = [c for c in [t.time_column, *keys, t.column] if c not in actuals.columns]
    if missing:
        raise ValueError(f"the actuals lack columns {missing} (the {t.table!r} table)")
    frame = actuals[[t.time_column, *keys, t.column]].copy()
    frame[t.time_column] = pd.to_datetime(frame[t.time_column]).dt.tz_localize(None)
    for k in keys:
        frame[k] = frame[k].astype(str)
    frame[t.column] = pd.to_numeric(frame[t.column], errors="coerce").astype(float)
    if as_of is not None:
        frame = frame[frame[t.time_column] <= as_of]
    dup = frame.duplicated([*keys, t.time_column])
    if dup.any():
        raise ValueError(
            f"the actuals hold {int(dup.sum())} duplicate rows on {[*keys, t.time_column]}"
        )
    out: dict[tuple[str, ...], _Series] = {}
    if frame.empty:
        return out
    # One grid for all series (date_range is slow per element for anchored offsets).
    grid = pd.date_range(frame[t.time_column].min(), frame[t.time_column].max(), freq=offset)
    frame["_pos"] = grid.get_indexer(frame[t.time_column])
    off = frame[frame["_pos"] < 0]
    if len(off):
        bad = off.iloc[0]
        raise ValueError(
            f"actual of series {tuple(bad[k] for k in keys)} at {bad[t.time_column].date()} is "
            f"not on the {offset.freqstr} period grid"
        )
    for key, group in frame.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        observed = group[group[t.column].notna()]
        if observed.empty:
            continue  # no value at all: the series counts as unknown
        pos = group["_pos"].to_numpy()
        first, last = int(pos.min()), int(pos.max())
        values = np.full(last - first + 1, np.nan)
        values[pos - first] = group[t.column].to_numpy(dtype=float)
        out[tuple(str(k) for k in key)] = _Series(
            times=grid[first : last + 1],
            values=values,
            last_observed=observed[t.time_column].max(),
        )
    return out


# ---------------------------------------------------------------------------------------------
# Origins


def timestamp_origin(timestamp: Any, offset: DateOffset) -> pd.Timestamp | None:
    """The last complete period before ``timestamp`` (UTC; naive times are taken as UTC).

    The start of the period before the one ``timestamp`` falls in; None for a missing time.
    """
    if timestamp is None or pd.isna(timestamp):
        return None
    ts = pd.Timestamp(timestamp)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    current = offset.rollback(ts.normalize())  # start of the (incomplete) period of ts
    return pd.Timestamp(current - offset)


def _close(a: np.ndarray, b: float, config: RealizedConfig) -> np.ndarray:
    return np.abs(a - b) <= config.atol + config.rtol * np.abs(b)


def _timestamp_origins(timestamps: pd.Series, offset: DateOffset) -> list[pd.Timestamp | None]:
    """``timestamp_origin`` of each timestamp (computed once per UTC day: it only needs the day)."""
    times = pd.to_datetime(timestamps, utc=True, errors="coerce")
    days = times.dt.tz_localize(None).dt.normalize()
    cache = {d: timestamp_origin(d, offset) for d in days.dropna().unique()}
    return [None if pd.isna(d) else cache[d] for d in days]


def _resolve_one(
    record: dict[str, Any],
    series: _Series | None,
    fallback: pd.Timestamp | None,
    inputs: list[str],
    config: RealizedConfig,
) -> tuple[pd.Timestamp | None, str, str]:
    """(origin, method, unresolved reason) of one logged prediction."""
    if series is None:
        return None, UNRESOLVED, "unknown_series"
    candidates = np.array([], dtype=int)
    level = _float(record.get(inputs[0])) if inputs else math.nan
    if math.isfinite(level):
        candidates = np.flatnonzero(_close(series.values, level, config))
        for lag, name in enumerate(inputs[1:], start=1):
            value = _float(record.get(name))
            if not math.isfinite(value) or candidates.size == 0:
                continue
            before = candidates - lag
            known = before >= 0
            lagged = np.where(known, series.values[np.maximum(before, 0)], np.nan)
            # An absent actual cannot contradict the lag input; a different one does.
            keep = np.isnan(lagged) | _close(lagged, value, config)
            candidates = candidates[keep]
    if candidates.size == 1:
        return series.times[candidates[0]], CONTENT, ""
    if candidates.size > 1:
        if fallback is None:
            return None, UNRESOLVED, "ambiguous"
        times = series.times[candidates]
        distance = np.abs((times - fallback).to_numpy().astype("int64"))
        return times[int(np.argmin(distance))], TIEBREAK, ""  # argmin: the earlier on a tie
    if config.fallback == "none":
        return None, UNRESOLVED, "no_content_match"
    if fallback is None:
        return None, UNRESOLVED, "no_timestamp"
    return fallback, BY_TIMESTAMP, ""


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _quantiles(record: dict[str, Any]) -> np.ndarray | None:
    """``[H, 3]`` quantiles of one prediction, or None when it has no usable arrays."""
    try:
        arrays = [np.asarray(record[q], dtype=float).ravel() for q in QUANTILE_COLUMNS]
    except (KeyError, TypeError, ValueError):
        return None
    if arrays[0].size == 0 or any(a.shape != arrays[0].shape for a in arrays):
        return None
    return np.stack(arrays, axis=1)


# ---------------------------------------------------------------------------------------------
# Metrics


def _metrics(group: pd.DataFrame) -> dict[str, float | int]:
    matched = group[group[STATE] == MATCHED]
    y = matched[ACTUAL].to_numpy(dtype=float)
    q = {c: matched[c].to_numpy(dtype=float) for c in QUANTILE_COLUMNS}
    scale = matched[SCALE].to_numpy(dtype=float)
    usable = np.isfinite(scale) & (scale > 0)  # as the evaluation: a flat history has no scale
    scaled = np.abs(y - q["p50"])[usable] / scale[usable]
    n = len(y)
    return {
        "mase": float(scaled.mean()) if scaled.size else math.nan,
        "wql": weighted_quantile_loss(
            y, {lv: q[c] for lv, c in zip(QUANTILE_LEVELS, QUANTILE_COLUMNS, strict=True)}
        )
        if n
        else math.nan,
        "coverage_80": interval_coverage(y, q["p10"], q["p90"]),
        "rmse": rmse(y, q["p50"]),
        "smape": smape(y, q["p50"]),
        "n": n,
        PENDING: int((group[STATE] == PENDING).sum()),
        MISSING: int((group[STATE] == MISSING).sum()),
    }


_TABLE_METRICS = [*METRICS, PENDING, MISSING]


def _by_segment(rows: pd.DataFrame, segment_by: Sequence[str]) -> pd.DataFrame:
    out = [{"segment": ALL, "group": ALL, "value": ALL, **_metrics(rows)}]
    for h, group in rows.groupby(HORIZON, sort=True):
        out.append({"segment": segment_label(HORIZON, h), "group": HORIZON, "value": str(h)})
        out[-1].update(_metrics(group))
    for column in segment_by:
        for value, group in rows.groupby(column, sort=True):
            out.append(
                {"segment": segment_label(column, value), "group": column, "value": str(value)}
            )
            out[-1].update(_metrics(group))
    table = pd.DataFrame(out, columns=["segment", "group", "value", *_TABLE_METRICS])
    return table.astype({"n": int, PENDING: int, MISSING: int})


def _by_period(rows: pd.DataFrame) -> pd.DataFrame:
    out = [{TARGET_TIME: t, **_metrics(g)} for t, g in rows.groupby(TARGET_TIME, sort=True)]
    table = pd.DataFrame(out, columns=[TARGET_TIME, *_TABLE_METRICS])
    return table.astype({"n": int, PENDING: int, MISSING: int})


# ---------------------------------------------------------------------------------------------
# The entry point


def realized_accuracy(
    predictions: pd.DataFrame,
    actuals: pd.DataFrame,
    use_case: UseCase | str,
    *,
    as_of: Any = None,
    segment_by: Sequence[str] | None = None,
    config: RealizedConfig | None = None,
) -> RealizedAccuracy:
    """Score logged forecasts against the actuals known now (or at ``as_of``).

    Args:
        predictions: Logged predictions, one row per instance (``read_predictions``):
            ``timestamp``, ``model_version`` (``model_name``, ``record``, ``row`` optional),
            the request's inputs (at least the series keys; the use case's
            ``target_history_inputs`` for resolution by content) and ``p10``/``p50``/``p90``
            arrays of length H.
        actuals: The target table (``use_case.target.table``): its time column, series keys
            and target column; other columns are ignored.
        use_case: The use case or its name.
        as_of: Ignore actuals of periods after this time (a replay of what was known then);
            forecasts for later periods are ``pending``. None: every actual given.
        segment_by: Columns to segment by besides ``"all"`` and the horizons: series keys or
            columns of ``predictions`` (e.g. ``model_version``). Default: the series keys.
        config: Matching tolerances and the fallback; ``RealizedConfig()`` by default.

    Returns:
        The scored rows, the metrics per segment and per target period, and the counts.

    Raises:
        ValueError: Missing columns in either frame, duplicate actuals, actuals off the
            use case's period grid, or an unknown ``segment_by`` column.
    """
    from models import get_use_case

    uc = get_use_case(use_case) if isinstance(use_case, str) else use_case
    config = config or RealizedConfig()
    keys = list(uc.target.series_keys)
    segment_by = keys if segment_by is None else list(segment_by)
    required = [TIMESTAMP, MODEL_VERSION, *QUANTILE_COLUMNS]
    absent = [c for c in required if c not in predictions.columns]
    if absent:
        raise ValueError(f"the predictions lack columns {absent}")
    unknown = [c for c in segment_by if c not in keys and c not in predictions.columns]
    if unknown:
        raise ValueError(f"segment_by columns {unknown} are neither series keys nor logged")
    offset = _offset(uc)
    cutoff = None
    if as_of is not None:
        cutoff = pd.Timestamp(as_of)
        if cutoff.tzinfo is not None:
            cutoff = cutoff.tz_convert("UTC").tz_localize(None)
    series = _actual_series(actuals, uc, offset, cutoff)
    inputs = [c for c in uc.target_history_inputs if c in predictions.columns]
    carried = (PREDICTION, TIMESTAMP, MODEL_NAME, MODEL_VERSION, *keys)
    extra = [c for c in dict.fromkeys(segment_by) if c not in carried]

    counts = dict.fromkeys(RESOLUTIONS, 0)
    reasons: dict[str, int] = {}
    resolved: list[dict[str, Any]] = []
    fallbacks = _timestamp_origins(predictions[TIMESTAMP], offset)
    for position, record in enumerate(predictions.to_dict("records")):
        quantiles = _quantiles(record)
        key = tuple(record.get(k) for k in keys)
        if quantiles is None:
            origin, method, reason = None, UNRESOLVED, "no_forecast"
        elif any(v is None or pd.isna(v) for v in key):
            origin, method, reason = None, UNRESOLVED, "no_series_key"
        else:
            key = tuple(str(v) for v in key)
            origin, method, reason = _resolve_one(
                record, series.get(key), fallbacks[position], inputs, config
            )
        counts[method] += 1
        if origin is None:
            reasons[reason] = reasons.get(reason, 0) + 1
            continue
        resolved.append(
            {
                PREDICTION: position,
                TIMESTAMP: record.get(TIMESTAMP),
                MODEL_NAME: record.get(MODEL_NAME),
                MODEL_VERSION: record.get(MODEL_VERSION),
                **dict(zip(keys, key, strict=True)),
                ORIGIN: origin,
                RESOLUTION: method,
                **{c: record.get(c) for c in extra},
                "_q": quantiles,
            }
        )

    columns = [
        PREDICTION,
        TIMESTAMP,
        MODEL_NAME,
        MODEL_VERSION,
        *keys,
        ORIGIN,
        RESOLUTION,
        HORIZON,
        TARGET_TIME,
        *QUANTILE_COLUMNS,
        ACTUAL,
        STATE,
        SCALE,
        *extra,
    ]
    found = pd.DataFrame(resolved)
    duplicates = 0
    if len(found):
        # Latest wins: order by time (unknown times lose), then by position in the frame.
        found["_t"] = pd.to_datetime(found[TIMESTAMP], utc=True)
        found = found.sort_values(["_t", PREDICTION], kind="stable", na_position="first")
        before = len(found)
        found = found.drop_duplicates([*keys, ORIGIN, MODEL_VERSION], keep="last")
        duplicates = before - len(found)
        rows = _explode(found.sort_values(PREDICTION), keys, extra, series, offset, uc)
    else:
        rows = pd.DataFrame(columns=columns)
    rows = rows[columns].reset_index(drop=True)
    return RealizedAccuracy(
        use_case=uc.name,
        as_of=cutoff,
        rows=rows,
        by_segment=_by_segment(rows, segment_by),
        by_period=_by_period(rows),
        resolution=counts,
        unresolved=dict(sorted(reasons.items())),
        duplicates=duplicates,
        states={s: int((rows[STATE] == s).sum()) for s in STATES},
        predictions=len(predictions),
    )


def _explode(
    found: pd.DataFrame,
    keys: list[str],
    extra: list[str],
    series: dict[tuple[str, ...], _Series],
    offset: DateOffset,
    uc: UseCase,
) -> pd.DataFrame:
    """H rows per prediction with target time, actual, state and the MASE scale.

    Vectorized on period numbers: positions on one regular grid covering every series, origin
    and target period, so a target is ``origin + h`` and a series value is a flat-array lookup.
    """
    codes, used = pd.MultiIndex.from_frame(found[keys]).factorize()
    sid = np.asarray(codes)
    chosen = [series[tuple(k)] for k in used]
    lengths = np.array([len(q) for q in found["_q"]])
    origins = pd.DatetimeIndex(found[ORIGIN])
    lo = min(origins.min(), min(s.times[0] for s in chosen))
    hi = max(origins.max() + int(lengths.max()) * offset, max(s.times[-1] for s in chosen))
    grid = pd.date_range(lo, hi, freq=offset)
    start = grid.get_indexer([s.times[0] for s in chosen])
    last = grid.get_indexer([s.last_observed for s in chosen])
    size = np.array([len(s.values) for s in chosen])
    base = np.concatenate([[0], np.cumsum(size)[:-1]])
    values = np.concatenate([s.values for s in chosen])
    season = uc.target.season_length
    scale_at = np.concatenate([_expanding_scale(s.values, season) for s in chosen])
    origin_no = grid.get_indexer(origins)  # origins are period starts: on the grid

    # Per prediction: the MASE scale of the history up to and including its origin.
    upto = origin_no - start[sid]
    known = upto >= 0
    scale = np.where(
        known, scale_at[base[sid] + np.clip(upto, 0, size[sid] - 1)], np.nan
    )  # an origin after the series' end sees the whole series

    # Per row: prediction index, horizon, target period.
    rep_ = np.repeat(np.arange(len(found)), lengths)
    horizon = np.arange(len(rep_)) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    target_no = origin_no[rep_] + horizon
    s_ = sid[rep_]
    rel = target_no - start[s_]
    inside = (rel >= 0) & (rel < size[s_])
    actual = np.where(inside, values[base[s_] + np.clip(rel, 0, size[s_] - 1)], np.nan)
    state = np.where(target_no > last[s_], PENDING, np.where(np.isnan(actual), MISSING, MATCHED))

    carried = [PREDICTION, TIMESTAMP, MODEL_NAME, MODEL_VERSION, *keys, ORIGIN, RESOLUTION, *extra]
    rows = found[carried].iloc[rep_].reset_index(drop=True)
    q = np.concatenate(list(found["_q"]))
    rows[HORIZON] = horizon
    rows[TARGET_TIME] = grid[target_no]
    for i, name in enumerate(QUANTILE_COLUMNS):
        rows[name] = q[:, i]
    rows[ACTUAL] = np.where(state == MATCHED, actual, np.nan)
    rows[STATE] = state
    rows[SCALE] = scale[rep_]
    return rows


def _expanding_scale(values: np.ndarray, season: int) -> np.ndarray:
    """``seasonal_naive_scale(values[: e + 1], season)`` for every end ``e``, NaN where it
    raises (``e + 1 ≤ season``) or has no pair of observed values: one cumulative pass."""
    out = np.full(len(values), np.nan)
    if len(values) <= season:
        return out
    diff = np.abs(values[season:] - values[:-season])
    seen = ~np.isnan(diff)
    total = np.cumsum(np.where(seen, diff, 0.0))
    count = np.cumsum(seen)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[season:] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out
