"""Backtest scores of every forecaster, the issue's goals, and the blessing decision.

``score`` turns a long forecast frame (``perucast.forecasts``) into a tidy table: one row per
model and group, where a group is ``overall`` (everything), one ``horizon`` (1..H) or one value of a
segment column (``crop``, ``region``, ``zone``). ``goals`` checks the candidate against the
baselines and the oracle on that table, and ``bless`` applies ``perucast.blessing.decide`` to it.

All models are scored on the same rows only when their forecast frames share origins and series;
the ``n`` column shows how many rows each metric saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perucast.blessing import Blessing, BlessingConfig, decide
from perucast.forecasts import ACTUAL, HORIZON, MODEL, check_forecast_frame
from perucast.metrics import (
    interval_coverage,
    rmse,
    seasonal_naive_scale,
    smape,
    weighted_quantile_loss,
)
from perucast.quantiles import QUANTILE_COLUMNS, QUANTILE_LEVELS

CANDIDATE = "network"
NAIVE = "seasonal_naive"
ORACLE = "oracle"
QUANTILE_BASELINES: tuple[str, ...] = ("ets", "gbt")

# Metric columns of the score table, in order. ``coverage_80`` is the share of actuals inside
# [p10, p90], the central 80% interval.
METRICS: tuple[str, ...] = ("mase", "rmse", "smape", "wql", "coverage_80", "n")
GROUP = "group"
GROUP_VALUE = "group_value"
OVERALL = "overall"
ALL = "all"
SCALE = "scale"

# The MASE goal: the candidate's MASE at most this factor times seasonal naive's.
MASE_FACTORS: dict[str, float] = {"crop_demand": 0.75, "fish_stock": 0.80}

# Models first in tables and plots; others follow alphabetically.
_MODEL_ORDER = (CANDIDATE, "blessed", NAIVE, *QUANTILE_BASELINES, ORACLE)
_SCALED_ERROR = "_scaled_error"


def model_order(models: Sequence[str]) -> list[str]:
    """The models, candidate first, then blessed, seasonal naive, ETS, GBT, oracle, the rest."""
    known = [m for m in _MODEL_ORDER if m in models]
    return known + sorted(set(models) - set(known))


# ---------------------------------------------------------------------------------------------
# Scales


def series_scales(
    history: pd.DataFrame,
    time_column: str,
    series_keys: Sequence[str],
    target: str,
    season_length: int,
) -> pd.DataFrame:
    """The MASE denominator of each series: its in-sample seasonal naive mean absolute error.

    Args:
        history: The training history, one row per series and period (gap-free: the seasonal
            lag is taken by position within each series, sorted by time).
        time_column: The period column.
        series_keys: The columns identifying one series.
        target: The observed target column.
        season_length: The seasonal lag (52 weekly, 12 monthly).

    Returns:
        One row per series: the series keys and ``scale``. NaN when the series has no more than
        ``season_length`` points (its rows are then left out of MASE).
    """
    keys = list(series_keys)
    ordered = history.sort_values([*keys, time_column])
    rows = []
    for key, series in ordered.groupby(keys, sort=True):
        try:
            scale = seasonal_naive_scale(series[target].to_numpy(dtype=float), season_length)
        except ValueError:  # too short for one seasonal difference
            scale = math.nan
        rows.append([*key, scale])
    return pd.DataFrame(rows, columns=[*keys, SCALE])


def _scale_table(scales: pd.DataFrame | Mapping[Any, float], keys: list[str]) -> pd.DataFrame:
    """``scales`` as a frame of string keys and ``scale``, one row per series."""
    if isinstance(scales, pd.DataFrame):
        missing = [c for c in [*keys, SCALE] if c not in scales.columns]
        if missing:
            raise ValueError(f"scales lack columns {missing}")
        table = scales[[*keys, SCALE]].copy()
    else:
        rows = []
        for key, value in scales.items():
            key = key if isinstance(key, tuple) else (key,)
            if len(key) != len(keys):
                raise ValueError(f"scale key {key!r} does not match series keys {keys}")
            rows.append([*key, value])
        table = pd.DataFrame(rows, columns=[*keys, SCALE])
    for k in keys:  # forecast frames hold keys as strings (wide_to_long)
        table[k] = table[k].astype(str)
    table[SCALE] = table[SCALE].astype(float)
    if table.duplicated(keys).any():
        raise ValueError(f"scales hold duplicate series on {keys}")
    return table


# ---------------------------------------------------------------------------------------------
# Scores


def _metrics(group: pd.DataFrame) -> dict[str, float]:
    group = group[group[ACTUAL].notna()]  # unknown actuals are not scored
    y = group[ACTUAL].to_numpy(dtype=float)
    q = {c: group[c].to_numpy(dtype=float) for c in QUANTILE_COLUMNS}
    scaled = group[_SCALED_ERROR].to_numpy(dtype=float)
    scaled = scaled[np.isfinite(scaled)]
    return {
        "mase": float(scaled.mean()) if scaled.size else math.nan,
        "rmse": rmse(y, q["p50"]),
        "smape": smape(y, q["p50"]),
        "wql": weighted_quantile_loss(
            y, {level: q[c] for level, c in zip(QUANTILE_LEVELS, QUANTILE_COLUMNS, strict=True)}
        ),
        "coverage_80": interval_coverage(y, q["p10"], q["p90"]),
        "n": len(y),
    }


def score(
    forecasts: pd.DataFrame,
    scales: pd.DataFrame | Mapping[Any, float],
    series_keys: Sequence[str],
    segments: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Metrics of each model overall, per horizon and per segment value.

    Metrics (rows with a NaN actual are not scored; a group left with none has ``n = 0`` and
    NaN metrics):

    * ``mase``: mean over rows of ``|actual − p50| / scale`` with the series' seasonal naive
      in-sample scale (``series_scales``); rows whose scale is NaN or 0 are left out of it.
    * ``rmse``, ``smape``: of the P50.
    * ``wql``: weighted quantile loss over P10, P50 and P90.
    * ``coverage_80``: share of actuals within [P10, P90].
    * ``n``: rows scored.

    Args:
        forecasts: A long forecast frame (``perucast.forecasts``), all models stacked.
        scales: Per-series scales: a frame with the series keys and ``scale`` (as returned by
            ``series_scales``), or a mapping from the key value (a tuple for several keys) to
            the scale.
        series_keys: The columns identifying one series.
        segments: Columns to group by besides horizon (default: each series key). Each must be a
            column of ``forecasts``.

    Returns:
        Columns ``model``, ``group`` (``"overall"``, ``"horizon"`` or a segment column),
        ``group_value`` (``"all"``, the horizon, the segment value; as strings) and ``METRICS``.
        Models in ``model_order``, horizons ascending, segment values sorted.

    Raises:
        ValueError: on an invalid forecast frame, a missing segment column, or a series of the
            forecasts that has no scale.
    """
    keys = list(series_keys)
    segments = keys if segments is None else list(segments)
    absent = [s for s in segments if s not in forecasts.columns]
    if absent:
        raise ValueError(f"segment columns {absent} are not in the forecast frame")
    frame = check_forecast_frame(forecasts, keys)
    extra = [s for s in segments if s not in frame.columns]
    # Unknown actuals stay in (their groups are listed with n = 0); _metrics skips them.
    frame = frame.assign(**{s: forecasts[s] for s in extra})
    for k in keys:
        frame[k] = frame[k].astype(str)

    table = _scale_table(scales, keys)
    frame = frame.merge(table, on=keys, how="left", indicator=True)
    unmatched = frame.loc[frame["_merge"] == "left_only", keys].drop_duplicates()
    if len(unmatched):
        examples = [tuple(r) for r in unmatched.head(3).itertuples(index=False)]
        raise ValueError(f"{len(unmatched)} forecast series have no scale, e.g. {examples}")
    scale = frame[SCALE].to_numpy(dtype=float)
    error = np.abs(frame[ACTUAL].to_numpy(dtype=float) - frame["p50"].to_numpy(dtype=float))
    usable = np.isfinite(scale) & (scale > 0)  # a flat history has no scale to divide by
    frame[_SCALED_ERROR] = np.where(usable, error / np.where(usable, scale, 1.0), np.nan)

    rows: list[dict[str, Any]] = []
    models = model_order(list(frame[MODEL].unique()))
    for model in models:
        sub = frame[frame[MODEL] == model]
        rows.append({MODEL: model, GROUP: OVERALL, GROUP_VALUE: ALL, **_metrics(sub)})
        for horizon, group in sub.groupby(HORIZON, sort=True):
            rows.append(
                {MODEL: model, GROUP: HORIZON, GROUP_VALUE: str(horizon), **_metrics(group)}
            )
        for segment in segments:
            for value, group in sub.groupby(segment, sort=True):
                rows.append(
                    {MODEL: model, GROUP: segment, GROUP_VALUE: str(value), **_metrics(group)}
                )
    out = pd.DataFrame(rows, columns=[MODEL, GROUP, GROUP_VALUE, *METRICS])
    out["n"] = out["n"].astype(int)
    return out


def _json_number(value: Any) -> float | int | None:
    """A JSON-safe number: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def scores_to_dict(scores: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The score table as nested JSON-ready dicts.

    ``{model: {"overall": {metric: value}, "horizon": {"1": {...}}, "<segment>": {value: {...}}}}``;
    NaN becomes None.
    """
    out: dict[str, dict[str, Any]] = {}
    for row in scores.to_dict("records"):
        metrics = {m: _json_number(row[m]) for m in METRICS}
        groups = out.setdefault(row[MODEL], {})
        if row[GROUP] == OVERALL:
            groups[OVERALL] = metrics
        else:
            groups.setdefault(row[GROUP], {})[str(row[GROUP_VALUE])] = metrics
    return out


def _overall(scores: pd.DataFrame, model: str) -> dict[str, float] | None:
    row = scores[(scores[MODEL] == model) & (scores[GROUP] == OVERALL)]
    if row.empty:
        return None
    return {m: float(row.iloc[0][m]) for m in METRICS}


def _by_horizon(scores: pd.DataFrame, model: str, metric: str) -> dict[int, float]:
    rows = scores[(scores[MODEL] == model) & (scores[GROUP] == HORIZON)]
    return {int(h): float(v) for h, v in zip(rows[GROUP_VALUE], rows[metric], strict=True)}


# ---------------------------------------------------------------------------------------------
# Goals


@dataclass(frozen=True)
class Goal:
    """One goal of the issue, checked on the score table.

    Attributes:
        name: Stable identifier (``mase_vs_naive``, ``rmse_vs_oracle``, ``coverage_80``,
            ``wql_vs_baselines``).
        description: The goal for people, with its numbers.
        value: The candidate's value.
        bound: The bound it is compared with, or the ``(low, high)`` range for coverage.
        passed: True or False; None when a model the goal needs was not evaluated.
        detail: The comparison in words.
        by_horizon: Per-horizon figure listed beside the goal (RMSE ratio to the oracle,
            coverage), if any.
        gaps: For the wQL goal, ``(candidate − baseline) / max(candidate, baseline)`` per
            baseline: positive means the baseline's wQL is that share lower than the
            candidate's, negative that the candidate's is that share lower than the baseline's.
    """

    name: str
    description: str
    value: float
    bound: float | tuple[float, float]
    passed: bool | None
    detail: str
    by_horizon: dict[int, float] = field(default_factory=dict)
    gaps: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``"pass"``, ``"fail"`` or ``"n/a"``."""
        return "n/a" if self.passed is None else ("pass" if self.passed else "fail")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as None)."""
        bound = (
            [_json_number(b) for b in self.bound]
            if isinstance(self.bound, tuple)
            else _json_number(self.bound)
        )
        return {
            "name": self.name,
            "description": self.description,
            "value": _json_number(self.value),
            "bound": bound,
            "passed": self.passed,
            "status": self.status,
            "detail": self.detail,
            "by_horizon": {str(h): _json_number(v) for h, v in self.by_horizon.items()},
            "gaps": {k: _json_number(v) for k, v in self.gaps.items()},
        }


def _le(value: float, bound: float) -> bool:
    """``value ≤ bound``; NaN or infinity on either side fails (unverifiable is not passed)."""
    return math.isfinite(value) and math.isfinite(bound) and value <= bound


def _ratio(a: float, b: float) -> float:
    if b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    return a / b


def _num(value: float) -> str:
    """A number for a sentence: 4 significant digits, or whole with thousands separators."""
    return f"{value:,.0f}" if math.isfinite(value) and abs(value) >= 1000 else f"{value:.4g}"


def _label(model: str) -> str:
    return {NAIVE: "seasonal naive", "ets": "ETS", "gbt": "GBT"}.get(model, model)


def goals(
    scores: pd.DataFrame,
    mase_factor: float,
    *,
    candidate: str = CANDIDATE,
    rmse_factor: float = 1.25,
    coverage_range: tuple[float, float] = (0.75, 0.85),
    wql_baselines: Sequence[str] = QUANTILE_BASELINES,
) -> list[Goal]:
    """The issue's goals for ``candidate``, each with value, bound and pass/fail.

    1. ``mase_vs_naive``: MASE ≤ ``mase_factor`` × seasonal naive's MASE (``MASE_FACTORS``:
       0.75 crop demand, 0.80 fish stock).
    2. ``rmse_vs_oracle``: one-step-ahead (horizon 1) RMSE ≤ ``rmse_factor`` × the oracle's; the
       ratio per horizon is listed in ``by_horizon``.
    3. ``coverage_80``: share of actuals in [P10, P90] within ``coverage_range`` (inclusive).
    4. ``wql_vs_baselines``: wQL strictly lower than each of ``wql_baselines`` present; the
       relative gaps are in ``gaps`` and ``detail``.

    A NaN value fails its goal. A goal whose reference model was not scored has ``passed=None``.

    Raises:
        ValueError: when the candidate has no overall scores.
    """
    cand = _overall(scores, candidate)
    if cand is None:
        raise ValueError(f"no scores for the candidate {candidate!r}")
    out = []

    naive = _overall(scores, NAIVE)
    value = cand["mase"]
    title = f"MASE ≤ {mase_factor:g} × seasonal naive"
    if naive is None:
        out.append(Goal("mase_vs_naive", title, value, math.nan, None, "seasonal naive not scored"))
    else:
        bound = mase_factor * naive["mase"]
        ok = _le(value, bound)
        detail = (
            f"{candidate} MASE {_num(value)} {'≤' if ok else 'not ≤'} {mase_factor:g} × "
            f"seasonal naive {_num(naive['mase'])} = {_num(bound)}"
        )
        out.append(Goal("mase_vs_naive", title, value, bound, ok, detail))

    title = f"1-step RMSE ≤ {rmse_factor:g} × oracle"
    cand_h = _by_horizon(scores, candidate, "rmse")
    value = cand_h.get(1, math.nan)
    if _overall(scores, ORACLE) is None:
        out.append(Goal("rmse_vs_oracle", title, value, math.nan, None, "oracle not scored"))
    else:
        oracle_h = _by_horizon(scores, ORACLE, "rmse")
        ratios = {h: _ratio(v, oracle_h.get(h, math.nan)) for h, v in cand_h.items()}
        bound = rmse_factor * oracle_h.get(1, math.nan)
        ok = _le(value, bound)
        listed = ", ".join(f"h{h} {r:.3g}" for h, r in ratios.items())
        detail = (
            f"{candidate} RMSE at h=1 {_num(value)} {'≤' if ok else 'not ≤'} {rmse_factor:g} × "
            f"oracle {_num(oracle_h.get(1, math.nan))} = {_num(bound)}; ratio to oracle by "
            f"horizon: {listed}"
        )
        out.append(Goal("rmse_vs_oracle", title, value, bound, ok, detail, by_horizon=ratios))

    low, high = coverage_range
    value = cand["coverage_80"]
    ok = math.isfinite(value) and low <= value <= high
    detail = (
        f"{value:.1%} of actuals within [P10, P90] "
        f"({'inside' if ok else 'outside'} {low:.0%}–{high:.0%})"
    )
    out.append(
        Goal(
            "coverage_80",
            f"80% interval coverage in [{low:.0%}, {high:.0%}]",
            value,
            (low, high),
            ok,
            detail,
            by_horizon=_by_horizon(scores, candidate, "coverage_80"),
        )
    )

    present = [(b, _overall(scores, b)) for b in wql_baselines]
    present = [(b, m["wql"]) for b, m in present if m is not None]
    value = cand["wql"]
    title = "wQL lower than " + " and ".join(_label(b) for b in wql_baselines)
    if not present:
        out.append(Goal("wql_vs_baselines", title, value, math.nan, None, "no baseline scored"))
    else:
        gaps, words = {}, []
        for base, base_wql in present:
            gap = _ratio(value - base_wql, max(value, base_wql))
            gaps[base] = gap
            if value < base_wql:
                words.append(
                    f"{candidate} wQL {_num(value)} is {-gap:.1%} lower than "
                    f"{_label(base)} {_num(base_wql)}"
                )
            elif value == base_wql:
                words.append(f"{_label(base)} wQL ties with {candidate} at {_num(value)}")
            elif not math.isfinite(gap):
                words.append(f"{candidate} wQL {_num(value)} vs {_label(base)} {_num(base_wql)}")
            else:
                words.append(
                    f"{_label(base)} wQL {_num(base_wql)} is {gap:.1%} lower than "
                    f"{candidate} {_num(value)}"
                )
        missing = [_label(b) for b in wql_baselines if b not in dict(present)]
        if missing:
            words.append(" and ".join(missing) + " not scored")
        bound = min(w for _, w in present)
        ok = _lt_all(value, [w for _, w in present])
        out.append(Goal("wql_vs_baselines", title, value, bound, ok, "; ".join(words), gaps=gaps))
    return out


def _lt_all(value: float, others: list[float]) -> bool:
    """``value`` strictly below each of ``others``; NaN anywhere fails."""
    return math.isfinite(value) and all(value < o for o in others)


# ---------------------------------------------------------------------------------------------
# Blessing


def bless(
    scores: pd.DataFrame,
    config: BlessingConfig | None = None,
    *,
    candidate: str = CANDIDATE,
    naive: str = NAIVE,
    blessed: str | None = None,
) -> Blessing:
    """The blessing decision (``perucast.blessing.decide``) on the overall scores.

    Args:
        scores: The table of ``score``: every model evaluated on the same origins.
        config: Blessing thresholds and metric; defaults to ``BlessingConfig()``.
        candidate: The model to bless.
        naive: The seasonal naive model's name.
        blessed: The currently served model's name in ``scores``, or None on the first run
            (then the regression rule is skipped).

    Raises:
        ValueError: when a named model has no scores.
    """
    found = {}
    for role, model in (("candidate", candidate), ("naive", naive), ("blessed", blessed)):
        if model is None:
            continue
        metrics = _overall(scores, model)
        if metrics is None:
            raise ValueError(f"no scores for the {role} model {model!r}")
        found[role] = metrics
    return decide(found["candidate"], found["naive"], found.get("blessed"), config)
