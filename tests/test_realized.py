"""Realized accuracy on hand-built frames: origin resolution, states, dedup, hand-computed metrics.

The fish_stock example: two zones, monthly actuals 2020-01 .. 2021-06 (t = 0..17) with
``north = 1000 + t`` and ``south = 2000 + 2 t``, so every seasonal (12-month) difference is 12
and 24: the MASE scales. One forecast per zone from origin 2021-03 (t = 14), H = 3, for
2021-04 .. 2021-06 (north 1015, 1016, 1017; south 2030, 2032, 2034):

    north p50 1016 1016 1020 (errors 1 0 3), P10/P90 = P50 ∓ 2 -> covers 1015, 1016; not 1017
    south p50 2030 2028 2034 (errors 0 4 0), P10/P90 = P50 ∓ 1 -> covers 2030, 2034; not 2032
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from perucast.realized import (
    RealizedConfig,
    compare_with_evaluation,
    realized_accuracy,
    segment_label,
    timestamp_origin,
)

MONTHS = pd.date_range("2020-01-01", "2021-06-01", freq="MS")
ORIGIN = pd.Timestamp("2021-03-01")
P50 = {"north": [1016.0, 1016.0, 1020.0], "south": [2030.0, 2028.0, 2034.0]}
WIDTH = {"north": 2.0, "south": 1.0}
# Pinball sums over the six forecasts: q=0.1: 1.2 + 0.7, q=0.5: 0.5 · 8, q=0.9: 1.0 + 2.9.
SUM_Y = 1015 + 1016 + 1017 + 2030 + 2032 + 2034
WQL_ALL = (2 * 1.9 + 2 * 4.0 + 2 * 3.9) / 3 / SUM_Y
MASE_ALL = (1 / 12 + 0 + 3 / 12 + 0 + 4 / 24 + 0) / 6


def fish_actuals(until: str = "2021-06-01") -> pd.DataFrame:
    t = np.arange(len(MONTHS))
    frame = pd.concat(
        [
            pd.DataFrame({"month": MONTHS.date, "zone": "north", "biomass_tonnes": 1000.0 + t}),
            pd.DataFrame({"month": MONTHS.date, "zone": "south", "biomass_tonnes": 2000.0 + 2 * t}),
        ],
        ignore_index=True,
    )
    frame["catch_tonnes"] = 1.0  # other columns of the table are ignored
    return frame[pd.to_datetime(frame["month"]) <= pd.Timestamp(until)].reset_index(drop=True)


def prediction(
    zone: str | None,
    level: float,
    lag1: float = math.nan,
    lag2: float = math.nan,
    *,
    timestamp: str | None = "2021-09-20T12:00:00Z",
    version: int = 1,
    p50=None,
    width: float = 1.0,
) -> dict:
    """One logged prediction as read_predictions returns it (float32 inputs, H=3 arrays)."""
    mid = np.asarray(p50 if p50 is not None else [1.0, 1.0, 1.0], dtype=np.float64)
    return {
        "timestamp": pd.Timestamp(timestamp) if timestamp else pd.NaT,
        "model_name": "fish_stock",
        "model_version": version,
        "signature": "serving_default",
        "zone": zone,
        # Requests carry float32: the logged value is the float32 of the actual.
        "biomass_tonnes": float(np.float32(level)),
        "biomass_lag1": float(np.float32(lag1)),
        "biomass_lag2": float(np.float32(lag2)),
        "p10": mid - width,
        "p50": mid,
        "p90": mid + width,
    }


def at_origin(zone: str, **kw) -> dict:
    """The forecast of ``zone`` from 2021-03 with the request inputs of that origin."""
    t = 14
    y = (lambda k: 1000.0 + k) if zone == "north" else (lambda k: 2000.0 + 2 * k)
    kw.setdefault("p50", P50[zone])
    kw.setdefault("width", WIDTH[zone])
    return prediction(zone, y(t), y(t - 1), y(t - 2), **kw)


def frame(*records: dict) -> pd.DataFrame:
    out = pd.DataFrame(list(records))
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    out["record"] = range(len(out))
    out["row"] = 0
    return out


def two_zones() -> pd.DataFrame:
    # The timestamp says 2021-08 (a replay months later): content must win over it.
    return frame(at_origin("north"), at_origin("south"))


def test_hand_computed_mase_wql_and_coverage_for_two_series():
    result = realized_accuracy(two_zones(), fish_actuals(), "fish_stock")
    assert result.resolution == {
        "content": 2,
        "content_tiebreak": 0,
        "timestamp": 0,
        "unresolved": 0,
    }
    assert result.states == {"matched": 6, "pending": 0, "missing": 0}
    rows = result.rows
    assert set(rows["origin"]) == {ORIGIN}
    assert list(rows.loc[rows["zone"] == "north", "target_time"]) == list(MONTHS[-3:])
    assert rows.loc[rows["zone"] == "north", "scale"].tolist() == [12.0] * 3
    assert rows.loc[rows["zone"] == "south", "scale"].tolist() == [24.0] * 3
    assert rows.loc[rows["zone"] == "south", "actual"].tolist() == [2030.0, 2032.0, 2034.0]

    overall = result.segment("all")
    assert overall["n"] == 6
    assert overall["mase"] == pytest.approx(MASE_ALL) == 1 / 12
    assert overall["wql"] == pytest.approx(WQL_ALL)
    assert overall["coverage_80"] == pytest.approx(4 / 6)
    assert overall["rmse"] == pytest.approx(math.sqrt((1 + 9 + 16) / 6))

    expected = {
        "zone=north": (1 / 9, 2 / 3, 3),
        "zone=south": (1 / 18, 2 / 3, 3),
        "h=1": (1 / 24, 1.0, 2),
        "h=2": (1 / 12, 0.5, 2),
        "h=3": (1 / 8, 0.5, 2),
    }
    for label, (mase, coverage, n) in expected.items():
        got = result.segment(label)
        assert (got["mase"], got["coverage_80"], got["n"]) == pytest.approx((mase, coverage, n))
    assert result.segments == ["all", "h=1", "h=2", "h=3", "zone=north", "zone=south"]
    north_wql = (2 * 1.2 + 2 * 2.0 + 2 * 1.0) / 3 / (1015 + 1016 + 1017)
    assert result.segment("zone=north")["wql"] == pytest.approx(north_wql)

    # Per target period, for plots: the h=1 .. h=3 periods of both zones.
    by_period = result.by_period
    assert list(by_period["target_time"]) == list(MONTHS[-3:])
    assert by_period["n"].tolist() == [2, 2, 2]
    assert by_period["mase"].tolist() == pytest.approx([1 / 24, 1 / 12, 1 / 8])
    with pytest.raises(KeyError, match="no segment 'zone=east'"):
        result.segment("zone=east")
    json.dumps(result.to_dict())  # JSON-ready: no NaN, no Timestamps


def test_origin_by_timestamp_when_the_content_matches_no_period():
    # The origin's value is revised (or not loaded yet): content fails, the timestamp decides.
    revised = at_origin("north", timestamp="2021-04-10T03:00:00Z")
    revised["biomass_tonnes"] = 1014.5
    no_level = at_origin("south", timestamp="2021-04-01T00:30:00Z")
    no_level["biomass_tonnes"] = math.nan
    result = realized_accuracy(frame(revised, no_level), fish_actuals(), "fish_stock")
    assert result.resolution["timestamp"] == 2 and result.resolution["content"] == 0
    # The last complete month before 2021-04-10 and before 2021-04-01T00:30Z: March.
    assert set(result.rows["origin"]) == {ORIGIN}
    assert set(result.rows["resolution"]) == {"timestamp"}
    assert result.segment("all")["mase"] == pytest.approx(MASE_ALL)

    strict = realized_accuracy(
        frame(revised, no_level),
        fish_actuals(),
        "fish_stock",
        config=RealizedConfig(fallback="none"),
    )
    assert strict.resolution["unresolved"] == 2 and strict.unresolved == {"no_content_match": 2}
    assert strict.rows.empty and strict.segment("all")["n"] == 0
    assert math.isnan(strict.segment("all")["mase"])


def test_content_beyond_float32_tolerance_does_not_match():
    shifted = at_origin("north", timestamp="2021-06-15T00:00:00Z")
    shifted["biomass_tonnes"] = 1014.0 * (1 + 5e-6)
    result = realized_accuracy(frame(shifted), fish_actuals(), "fish_stock")
    assert result.resolution["timestamp"] == 1
    assert result.rows["origin"].iloc[0] == pd.Timestamp("2021-05-01")


@pytest.mark.parametrize(
    ("when", "period", "origin"),
    [
        ("2024-03-13T10:00:00Z", "W-MON", "2024-03-04"),  # Wednesday: the week before
        ("2024-03-11T00:00:00Z", "W-MON", "2024-03-04"),  # Monday 00:00: last week just ended
        ("2024-03-10T23:00:00-05:00", "W-MON", "2024-03-04"),  # Lima Sunday = Monday 04:00 UTC
        ("2024-03-10T18:00:00-05:00", "W-MON", "2024-02-26"),  # Sunday 23:00 UTC
        ("2024-03-13T10:00:00", "MS", "2024-02-01"),  # naive times are UTC
        ("2024-03-01T00:00:00Z", "MS", "2024-02-01"),
        ("2024-02-29T23:59:00Z", "MS", "2024-01-01"),
    ],
)
def test_timestamp_origin_is_the_last_complete_period_before_the_request(when, period, origin):
    from pandas.tseries.frequencies import to_offset

    assert timestamp_origin(pd.Timestamp(when), to_offset(period)) == pd.Timestamp(origin)
    assert timestamp_origin(pd.NaT, to_offset(period)) is None


def test_lag_inputs_disambiguate_a_repeated_level_and_ties_go_to_the_timestamp():
    # east: 7 at 2021-02 (after 2) and at 2021-05 (after 6, 4); flat at 5 elsewhere.
    values = np.full(len(MONTHS), 5.0)
    values[12:17] = [2.0, 7.0, 4.0, 6.0, 7.0]  # 2021-01 .. 2021-05
    actuals = pd.DataFrame({"month": MONTHS, "zone": "east", "biomass_tonnes": values})
    # Request for 2021-05 (7 after 6, 4): the lags rule out 2021-02 (7 after 2).
    by_lags = prediction("east", 7.0, 6.0, 4.0, timestamp="2021-03-15T00:00:00Z")
    # Without lags both 7s match: the timestamp's origin (2021-02) is the nearer one.
    tie = prediction("east", 7.0, timestamp="2021-03-15T00:00:00Z")
    # A flat stretch (5) with no timestamp: ambiguous.
    flat = prediction("east", 5.0, 5.0, 5.0, timestamp=None)
    result = realized_accuracy(frame(by_lags, tie, flat), actuals, "fish_stock")
    origins = result.rows.groupby("prediction")["origin"].first()
    assert origins[0] == pd.Timestamp("2021-05-01") and origins[1] == pd.Timestamp("2021-02-01")
    methods = result.rows.groupby("prediction")["resolution"].first()
    assert methods.tolist() == ["content", "content_tiebreak"]
    assert result.unresolved == {"ambiguous": 1}
    assert result.resolution == {
        "content": 1,
        "content_tiebreak": 1,
        "timestamp": 0,
        "unresolved": 1,
    }


def test_late_actuals_are_pending_then_matched_when_they_arrive():
    early = realized_accuracy(two_zones(), fish_actuals(until="2021-04-01"), "fish_stock")
    assert early.resolution["content"] == 2
    assert early.states == {"matched": 2, "pending": 4, "missing": 0}
    assert early.segment("all")["n"] == 2 and early.segment("all")["pending"] == 4
    assert early.segment("all")["mase"] == pytest.approx((1 / 12 + 0) / 2)
    assert early.segment("all")["coverage_80"] == 1.0
    assert early.segment("h=2")["n"] == 0 and early.segment("h=2")["pending"] == 2
    assert math.isnan(early.segment("h=2")["mase"])
    pending = early.rows[early.rows["state"] == "pending"]
    assert pending["actual"].isna().all()
    assert set(pending["target_time"]) == set(MONTHS[-2:])

    # The same actuals table seen as of mid-April: identical to the truncated one.
    as_of = realized_accuracy(two_zones(), fish_actuals(), "fish_stock", as_of="2021-04-15")
    assert as_of.states == early.states
    assert as_of.segment("all") == early.segment("all")
    assert as_of.as_of == pd.Timestamp("2021-04-15")

    # One month later, then everything: pending rows turn into matched, numbers move.
    may = realized_accuracy(two_zones(), fish_actuals(until="2021-05-01"), "fish_stock")
    assert may.states == {"matched": 4, "pending": 2, "missing": 0}
    assert may.segment("all")["mase"] == pytest.approx((1 / 12 + 0 + 0 + 4 / 24) / 4)
    assert may.segment("all")["coverage_80"] == pytest.approx(3 / 4)
    late = realized_accuracy(two_zones(), fish_actuals(), "fish_stock")
    assert late.states == {"matched": 6, "pending": 0, "missing": 0}
    assert late.segment("all")["mase"] == pytest.approx(MASE_ALL)


@pytest.mark.parametrize("gap", ["row_absent", "value_null"])
def test_a_gap_in_the_actuals_is_missing_excluded_and_counted(gap):
    actuals = fish_actuals()
    hole = (actuals["zone"] == "south") & (pd.to_datetime(actuals["month"]) == "2021-05-01")
    if gap == "row_absent":
        actuals = actuals[~hole]
    else:
        actuals.loc[hole, "biomass_tonnes"] = None
    result = realized_accuracy(two_zones(), actuals, "fish_stock")
    assert result.states == {"matched": 5, "pending": 0, "missing": 1}
    missing = result.rows[result.rows["state"] == "missing"]
    assert missing[["zone", "horizon"]].values.tolist() == [["south", 2]]
    overall = result.segment("all")
    assert overall["n"] == 5 and overall["missing"] == 1
    assert overall["mase"] == pytest.approx((1 / 12 + 0 + 3 / 12 + 0 + 0) / 5)
    assert overall["coverage_80"] == pytest.approx(4 / 5)
    assert result.segment("h=2")["n"] == 1 and result.segment("h=2")["missing"] == 1
    assert result.by_period.set_index("target_time").loc["2021-05-01", "missing"] == 1


def test_a_missing_last_period_is_pending_not_missing():
    actuals = fish_actuals()
    last = (actuals["zone"] == "south") & (pd.to_datetime(actuals["month"]) == "2021-06-01")
    result = realized_accuracy(two_zones(), actuals[~last], "fish_stock")
    assert result.states == {"matched": 5, "pending": 1, "missing": 0}


def test_duplicates_count_once_and_the_latest_wins_per_model_version():
    first = at_origin("north", timestamp="2021-04-02T08:00:00Z", p50=[0.0, 0.0, 0.0])
    retry = at_origin("north", timestamp="2021-04-02T08:00:05Z")  # the answer scored
    replay_older = at_origin("north", timestamp="2021-04-01T08:00:00Z", p50=[9.0, 9.0, 9.0])
    other_version = at_origin("north", timestamp="2021-04-01T09:00:00Z", version=2)
    result = realized_accuracy(
        frame(first, retry, replay_older, other_version),
        fish_actuals(),
        "fish_stock",
        segment_by=["zone", "model_version"],
    )
    assert result.resolution["content"] == 4 and result.duplicates == 2
    assert sorted(result.rows["prediction"].unique()) == [1, 3]
    v1 = result.rows[result.rows["model_version"] == 1]
    assert v1["p50"].tolist() == P50["north"]
    assert result.segment("model_version=1")["mase"] == pytest.approx(1 / 9)
    assert result.segment("model_version=2")["n"] == 3
    assert result.segment("all")["n"] == 6

    # Equal timestamps: the later row of the log wins.
    a = at_origin("north", timestamp="2021-04-02T08:00:00Z", p50=[0.0, 0.0, 0.0])
    b = at_origin("north", timestamp="2021-04-02T08:00:00Z")
    tied = realized_accuracy(frame(a, b), fish_actuals(), "fish_stock")
    assert tied.duplicates == 1 and tied.rows["prediction"].unique().tolist() == [1]


def test_unresolved_predictions_are_counted_by_reason_and_never_scored():
    no_forecast = at_origin("south")
    no_forecast["p50"] = np.array([])
    revised = at_origin("north", timestamp=None)
    revised["biomass_tonnes"] = 1.0
    result = realized_accuracy(
        frame(
            at_origin("north"),
            prediction("atlantis", 5.0),  # a zone the actuals do not have
            prediction(None, 5.0),  # no series key in the request
            revised,  # no content match and no timestamp
            no_forecast,
        ),
        fish_actuals(),
        "fish_stock",
    )
    assert result.predictions == 5
    assert result.resolution == {
        "content": 1,
        "content_tiebreak": 0,
        "timestamp": 0,
        "unresolved": 4,
    }
    assert result.unresolved == {
        "no_forecast": 1,
        "no_series_key": 1,
        "no_timestamp": 1,
        "unknown_series": 1,
    }
    assert result.rows["prediction"].unique().tolist() == [0]
    assert result.segment("all")["n"] == 3


def test_weekly_crop_demand_by_content_with_region_and_crop_segments():
    weeks = pd.date_range("2023-01-02", periods=60, freq="W-MON")
    t = np.arange(60)
    actuals = pd.concat(
        [
            pd.DataFrame(
                {
                    "week_start": weeks,
                    "region": "lima",
                    "crop": "potato",
                    "demand_tonnes": 100.0 + t,
                }
            ),
            pd.DataFrame(
                {
                    "week_start": weeks,
                    "region": "cusco",
                    "crop": "maize",
                    "demand_tonnes": 50.0 + 0.5 * t,
                }
            ),
        ]
    )

    def request(region: str, crop: str, y, origin: int, p50: list[float]) -> dict:
        return {
            "timestamp": pd.Timestamp("2024-06-01T00:00:00Z"),
            "model_version": 4,
            "region": region,
            "crop": crop,
            "demand_tonnes": y(origin),
            "demand_lag_1": y(origin - 1),
            "demand_lag_2": y(origin - 2),
            "p10": np.asarray(p50) - 1,
            "p50": np.asarray(p50, dtype=float),
            "p90": np.asarray(p50) + 1,
        }

    # Origin t=57 (seasonal scale 52 for lima, 26 for cusco); targets t=58, 59.
    preds = pd.DataFrame(
        [
            request("lima", "potato", lambda k: 100.0 + k, 57, [158.0, 161.0]),
            request("cusco", "maize", lambda k: 50.0 + 0.5 * k, 57, [79.0, 79.5]),
        ]
    )
    result = realized_accuracy(preds, actuals, "crop_demand")
    assert result.resolution["content"] == 2
    assert set(result.rows["origin"]) == {weeks[57]}
    assert result.segments == [
        "all", "h=1", "h=2", "region=cusco", "region=lima", "crop=maize", "crop=potato"
    ]  # fmt: skip
    # lima errors 0, 2 over 52; cusco errors 0, 0 over 26.
    assert result.segment("region=lima")["mase"] == pytest.approx(1 / 52)
    assert result.segment("crop=maize")["mase"] == 0.0
    assert result.segment("all")["mase"] == pytest.approx((2 / 52) / 4)


def test_too_short_a_history_leaves_mase_out_but_scores_the_rest():
    # Origin 2020-06 (t=5): fewer than 13 months before it, no seasonal scale.
    early = prediction("north", 1005.0, 1004.0, 1003.0, p50=[1006.0, 1007.0, 1008.0])
    result = realized_accuracy(frame(early), fish_actuals(), "fish_stock")
    assert result.rows["scale"].isna().all()
    overall = result.segment("all")
    assert math.isnan(overall["mase"]) and overall["n"] == 3
    # P50 exact, P10/P90 one tonne off each: (2·0.3 + 0 + 2·0.3) / 3 / Σy.
    assert overall["wql"] == pytest.approx(0.4 / (1006 + 1007 + 1008))
    assert overall["coverage_80"] == 1.0


def test_compare_with_evaluation_by_segment():
    result = realized_accuracy(two_zones(), fish_actuals(), "fish_stock")
    evaluation = {
        "segments": {
            "all": {"mase": 1 / 6, "wql": None, "coverage_80": 0.8},
            "h=1": {"mase": 0.0, "wql": 0.01, "coverage_80": 0.8},
        }
    }
    table = compare_with_evaluation(result, evaluation).set_index(["segment", "metric"])
    assert table.loc[("all", "mase"), "ratio"] == pytest.approx(0.5)
    assert table.loc[("all", "coverage_80"), "realized"] == pytest.approx(4 / 6)
    assert math.isnan(table.loc[("all", "wql"), "ratio"])  # no evaluation value
    assert math.isnan(table.loc[("h=1", "mase"), "ratio"])  # evaluation value 0
    assert table.loc[("h=1", "mase"), "n"] == 2
    assert {s for s, _ in table.index} == {"all", "h=1"}


def test_bad_inputs_are_clear_errors():
    preds = two_zones()
    with pytest.raises(ValueError, match=r"predictions lack columns \['p90'\]"):
        realized_accuracy(preds.drop(columns=["p90"]), fish_actuals(), "fish_stock")
    with pytest.raises(ValueError, match=r"actuals lack columns \['biomass_tonnes'\]"):
        realized_accuracy(preds, fish_actuals().drop(columns=["biomass_tonnes"]), "fish_stock")
    doubled = pd.concat([fish_actuals(), fish_actuals().tail(1)])
    with pytest.raises(ValueError, match="1 duplicate rows"):
        realized_accuracy(preds, doubled, "fish_stock")
    off_grid = fish_actuals()
    off_grid.loc[0, "month"] = pd.Timestamp("2019-12-15").date()
    with pytest.raises(ValueError, match="not on the MS period grid"):
        realized_accuracy(preds, off_grid, "fish_stock")
    with pytest.raises(ValueError, match=r"segment_by columns \['season'\]"):
        realized_accuracy(preds, fish_actuals(), "fish_stock", segment_by=["season"])
    with pytest.raises(ValidationError, match="extra_forbidden"):
        RealizedConfig(tolerance=1e-3)


def test_segment_labels():
    assert segment_label("overall", None) == "all"
    assert segment_label("horizon", "3") == "h=3"
    assert segment_label("zone", "north_central") == "zone=north_central"


def test_the_mase_scale_is_the_evaluations_seasonal_naive_scale_at_each_origin():
    from perucast.metrics import seasonal_naive_scale
    from perucast.realized import _expanding_scale

    values = np.random.default_rng(3).gamma(4.0, 10.0, 40)
    values[[5, 17, 18, 30]] = np.nan  # gaps of the actuals
    scales = _expanding_scale(values, 12)
    for end in range(40):
        try:
            expected = seasonal_naive_scale(values[: end + 1], 12)
        except ValueError:
            expected = math.nan
        assert scales[end] == pytest.approx(expected, nan_ok=True), end
    assert np.isnan(scales[:12]).all() and np.isfinite(scales[12:]).all()
