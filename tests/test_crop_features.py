"""The crop demand Spark feature transform against an independent pandas implementation.

``reference_features`` below recomputes every feature and target with plain pandas (reindex,
ffill, shift, rolling with ``min_periods``, groupby) straight from the raw Parquet files, so an
off-by-one lag, a window edge or a look-ahead in the Spark transform shows up as a mismatch.
Spark runs in the session's one SparkSession; the features of the tiny data set are built once
per module.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dateutil.easter import easter
from pyspark.sql import functions as F

from models import get_use_case
from models.crop_demand.features import feature_spec
from perucast.datasets import read_table
from perucast.spark import TableInputError, read_tables

CROP = get_use_case("crop_demand")
H = CROP.default_horizon
KEYS = ["region", "crop", "week_start"]
TABLES = ("historical_demand", "market_trends", "weather")

# The fill test deletes these raw rows: (table, region, crop or None for weather, week).
GAPS = [
    ("historical_demand", "lima", "potato", "1998-03-02"),
    ("historical_demand", "lima", "potato", "1998-03-09"),
    ("historical_demand", "lima", "potato", "1998-03-16"),
    ("market_trends", "lima", "potato", "1998-06-01"),
    ("weather", "cusco", None, "1999-01-04"),
    ("weather", "cusco", None, "1999-01-11"),
]
GAP_REGIONS = ("lima", "cusco")
LEAK_T = pd.Timestamp("1998-06-29")  # the last week the leakage test leaves untouched
LEAK_REGIONS = ("lima", "piura", "cusco", "loreto")


# --- the independent pandas implementation -------------------------------------------------


def _complete(raw: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Every Monday of each series' span, values forward-filled per series, filled weeks flagged."""
    spans = raw.groupby(keys)["week_start"].agg(["min", "max"]).reset_index()
    spans["week_start"] = [
        pd.date_range(first, last, freq="W-MON")
        for first, last in zip(spans["min"], spans["max"], strict=True)
    ]
    grid = spans[[*keys, "week_start"]].explode("week_start")
    grid["week_start"] = pd.to_datetime(grid["week_start"])
    out = grid.merge(raw, on=[*keys, "week_start"], how="left")
    out = out.sort_values([*keys, "week_start"], ignore_index=True)
    out["filled"] = out[values].isna().any(axis=1).astype(float)
    out["observed"] = out[values[0]]
    out[values] = out.groupby(keys)[values].ffill()
    return out


def _holiday_code(monday: pd.Timestamp) -> int:
    """0 none, 1 week holding Good Friday, 2 holding 28 July, 3 holding 25 Dec or 1 Jan."""
    first, last = monday.date(), (monday + pd.Timedelta(days=6)).date()

    def holds(day: dt.date) -> bool:
        return first <= day <= last

    y = first.year
    if holds(easter(y) - dt.timedelta(days=2)):
        return 1
    if holds(dt.date(y, 7, 28)):
        return 2
    if holds(dt.date(y, 12, 25)) or holds(dt.date(y + 1, 1, 1)) or holds(dt.date(y, 1, 1)):
        return 3
    return 0


def reference_features(raw: dict[str, pd.DataFrame], horizon: int) -> pd.DataFrame:
    """Every feature and target of the crop demand transform, computed with pandas."""
    raw = {name: df.assign(week_start=pd.to_datetime(df["week_start"])) for name, df in raw.items()}

    d = _complete(raw["historical_demand"], ["region", "crop"], ["demand_tonnes", "supply_tonnes"])
    g = d.groupby(["region", "crop"], sort=False)
    for k in sorted({1, 2, 3, 4, 8, 13, 26, 52, *(52 - h for h in range(1, horizon + 1))}):
        d[f"demand_lag_{k}"] = g["demand_tonnes"].shift(k)
    for n in (4, 13, 52):
        roll = g["demand_tonnes"].rolling(n, min_periods=n)
        d[f"demand_mean_{n}"] = roll.mean().reset_index(level=[0, 1], drop=True)
        # Exact per-window std: pandas' online rolling std drifts by ~1e-9 when a series falls
        # from thousands of tonnes to hundreds (Spark's stddev_samp recomputes each frame).
        std = roll.apply(lambda x: np.std(x, ddof=1), raw=True)
        d[f"demand_std_{n}"] = std.reset_index(level=[0, 1], drop=True)
    d["supply_lag_1"] = g["supply_tonnes"].shift(1)
    d["supply_mean_4"] = (
        g["supply_tonnes"].rolling(4, min_periods=4).mean().reset_index(level=[0, 1], drop=True)
    )
    for h in range(1, horizon + 1):
        d[f"target_h{h}"] = g["observed"].shift(-h)
    d = d.rename(columns={"filled": "filled_demand"})

    m = _complete(raw["market_trends"], ["region", "crop"], ["price_pen_per_kg", "usd_pen"])
    g = m.groupby(["region", "crop"], sort=False)
    mean_52 = g["price_pen_per_kg"].rolling(52, min_periods=52).mean()
    m["price_logret_4"] = np.log(m["price_pen_per_kg"] / g["price_pen_per_kg"].shift(4))
    m["price_log_vs_mean_52"] = np.log(
        m["price_pen_per_kg"] / mean_52.reset_index(level=[0, 1], drop=True)
    )
    m["usd_logret_4"] = np.log(m["usd_pen"] / g["usd_pen"].shift(4))
    m = m.drop(columns="observed").rename(columns={"filled": "filled_market"})

    w = _complete(raw["weather"], ["region"], ["temp_mean_c", "precip_mm", "nino12_anomaly_c"])
    g = w.groupby("region", sort=False)
    w["temp_lag_1"] = g["temp_mean_c"].shift(1)
    for k in (1, 2, 4):
        w[f"precip_lag_{k}"] = g["precip_mm"].shift(k)
    w["precip_sum_4"] = (
        g["precip_mm"].rolling(4, min_periods=4).sum().reset_index(level=0, drop=True)
    )
    for k in (1, 2, 4, 8, 13, 26):
        w[f"nino12_lag_{k}"] = g["nino12_anomaly_c"].shift(k)
    w = w.drop(columns="observed").rename(columns={"filled": "filled_weather"})

    out = d.merge(m, on=KEYS, how="left").merge(w, on=["region", "week_start"], how="left")
    out["is_filled"] = out[["filled_demand", "filled_market", "filled_weather"]].max(axis=1)

    weeks = pd.DataFrame({"week_start": out["week_start"].drop_duplicates()})
    angle = 2 * math.pi * weeks["week_start"].dt.isocalendar().week.astype(float) / (365.2425 / 7)
    weeks["week_sin"], weeks["week_cos"] = np.sin(angle), np.cos(angle)
    code = weeks["week_start"].map(_holiday_code)
    weeks["is_semana_santa"] = (code == 1).astype(float)
    weeks["is_fiestas_patrias"] = (code == 2).astype(float)
    weeks["is_christmas_new_year"] = (code == 3).astype(float)
    for h in range(1, horizon + 1):
        target_week = weeks["week_start"] + pd.Timedelta(weeks=h)
        weeks[f"fut_holiday_h{h}"] = target_week.map(_holiday_code)
    return out.merge(weeks, on="week_start", how="left")


# --- helpers and fixtures --------------------------------------------------------------------


def _raw(directory: Path, regions: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    raw = {name: read_table(directory, name) for name in TABLES}
    if regions is not None:
        raw = {name: df[df["region"].isin(regions)] for name, df in raw.items()}
    return raw


def _to_pandas(frame) -> pd.DataFrame:
    out = frame.toPandas()
    out["week_start"] = pd.to_datetime(out["week_start"])
    return out.sort_values(KEYS, ignore_index=True)


def assert_features_match(actual: pd.DataFrame, expected: pd.DataFrame, horizon: int) -> None:
    """Same keys in the same order; every feature and target equal, nulls in the same places."""
    spec = feature_spec(horizon)
    expected = expected.sort_values(KEYS, ignore_index=True)
    pd.testing.assert_frame_equal(actual[KEYS], expected[KEYS], check_dtype=False)
    for column in (*spec.numeric, *spec.target_columns):
        a = actual[column].to_numpy(dtype=float)
        e = expected[column].to_numpy(dtype=float)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"nulls of {column}")
        # atol only absorbs summation-order noise around 0 (log ratios near 1, dry weeks).
        np.testing.assert_allclose(
            a[~np.isnan(a)], e[~np.isnan(e)], rtol=1e-9, atol=1e-10, err_msg=column
        )
    for column in [c for c in spec.categorical if c.startswith("fut_holiday_")]:
        np.testing.assert_array_equal(actual[column], expected[column], err_msg=column)


@pytest.fixture(scope="module")
def tables(spark, crop_tiny: Path):
    return read_tables(spark, list(CROP.tables), crop_tiny)


@pytest.fixture(scope="module")
def tiny(tables):
    """Features of the whole tiny data set: the FeatureResult and its rows in pandas."""
    result = CROP.build_features(tables, H)
    return result, _to_pandas(result.frame)


# --- tests ------------------------------------------------------------------------------------


def test_features_match_pandas_reference(tiny, crop_tiny: Path) -> None:
    _, actual = tiny
    assert_features_match(actual, reference_features(_raw(crop_tiny), H), H)
    # Sanity: the calendar and the targets are really exercised by the tiny data.
    assert set(actual["fut_holiday_h3"]) == {0, 1, 2, 3}
    assert actual["demand_mean_52"].notna().sum() > 0.8 * len(actual)


def test_fill_rule_restores_missing_weeks(tables, crop_tiny: Path) -> None:
    def without_gaps(name, frame):
        frame = frame.filter(F.col("region").isin(*GAP_REGIONS))
        for table, region, crop, week in GAPS:
            if table == name:
                hit = (F.col("region") == region) & (
                    F.col("week_start") == F.lit(week).cast("date")
                )
                frame = frame.filter(~(hit & (F.col("crop") == crop)) if crop else ~hit)
        return frame

    gappy = {name: without_gaps(name, frame) for name, frame in tables.items()}
    assert gappy["historical_demand"].filter("region = 'lima' AND crop = 'potato'").count() == 363
    result = CROP.build_features(gappy, H)
    actual = _to_pandas(result.frame)

    # The same gaps in pandas, filled by the reference implementation.
    raw = _raw(crop_tiny, GAP_REGIONS)
    for table, region, crop, week in GAPS:
        df = raw[table]
        hit = (df["region"] == region) & (pd.to_datetime(df["week_start"]) == pd.Timestamp(week))
        raw[table] = df[~(hit & (df["crop"] == crop))] if crop else df[~hit]
    assert_features_match(actual, reference_features(raw, H), H)

    # The deleted weeks are back, carrying the last observed week's values.
    assert len(actual) == len(GAP_REGIONS) * 5 * 366
    series = actual[(actual["region"] == "lima") & (actual["crop"] == "potato")].set_index(
        "week_start"
    )
    ts = pd.Timestamp
    before = series.loc[ts("1998-02-23")]
    for week in ("1998-03-02", "1998-03-09", "1998-03-16"):
        row = series.loc[ts(week)]
        assert row["demand_tonnes"] == before["demand_tonnes"]
        assert row["supply_tonnes"] == before["supply_tonnes"]
        assert row["is_filled"] == 1.0
    assert series.loc[ts("1998-03-23"), "demand_lag_1"] == before["demand_tonnes"]
    # Targets are observed demand only: a filled week is an unknown target.
    assert np.isnan(before["target_h1"]) and np.isnan(before["target_h3"])
    assert before["target_h4"] == series.loc[ts("1998-03-23"), "demand_tonnes"]
    price = series["price_pen_per_kg"]
    assert price[ts("1998-06-01")] == price[ts("1998-05-25")]
    assert series.loc[ts("1998-06-01"), "is_filled"] == 1.0
    cusco = actual[actual["region"] == "cusco"].set_index(["crop", "week_start"])
    for crop in cusco.index.levels[0]:
        last_seen = cusco.loc[(crop, ts("1998-12-28"))]
        for week in ("1999-01-04", "1999-01-11"):
            row = cusco.loc[(crop, ts(week))]
            for column in ("temp_mean_c", "precip_mm", "nino12_anomaly_c"):
                assert row[column] == last_seen[column]
            assert row["is_filled"] == 1.0

    assert actual["is_filled"].sum() == 3 + 1 + 2 * 5
    assert result.counts["filled_weeks"] == 3 + 1 + 2 * 5
    assert result.counts["filled_weeks_historical_demand"] == 3
    assert result.counts["filled_weeks_market_trends"] == 1
    assert result.counts["filled_weeks_weather"] == 2
    assert result.counts["rows"] == len(actual)


def test_no_leakage_from_the_future(tiny, tables) -> None:
    _, base = tiny
    # A few regions keep the Spark job small; every window is per series or per region anyway.
    base = base[base["region"].isin(LEAK_REGIONS)].reset_index(drop=True)
    later = F.col("week_start") > F.lit(LEAK_T.date())
    changed = {
        "historical_demand": ("demand_tonnes", "supply_tonnes"),
        "market_trends": ("price_pen_per_kg", "usd_pen"),
        "weather": ("temp_mean_c", "precip_mm", "nino12_anomaly_c"),
    }
    future = {}
    for name, frame in tables.items():
        frame = frame.filter(F.col("region").isin(*LEAK_REGIONS))
        for column in changed[name]:
            frame = frame.withColumn(
                column, F.when(later, F.col(column) * 10 + 1).otherwise(F.col(column))
            )
        if name != "weather":  # one series also ends at T: the panel must not depend on it
            cut = later & (F.col("region") == "lima") & (F.col("crop") == "rice")
            frame = frame.filter(~cut)
        future[name] = frame
    actual = _to_pandas(CROP.build_features(future, H).frame)

    spec = feature_spec(H)
    past = lambda df: df[df["week_start"] <= LEAK_T].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(
        past(actual)[[*KEYS, *spec.feature_columns]],
        past(base)[[*KEYS, *spec.feature_columns]],
        check_exact=True,
    )
    # The perturbation did reach later origins, and the targets of origin T see it.
    after = actual[actual["week_start"] > LEAK_T]
    base_after = base[base["week_start"] > LEAK_T].merge(after[KEYS], on=KEYS)
    assert (after["demand_tonnes"].to_numpy() != base_after["demand_tonnes"].to_numpy()).all()
    at_t = actual[(actual["week_start"] == LEAK_T) & (actual["crop"] != "rice")]
    at_t_base = base[(base["week_start"] == LEAK_T) & (base["crop"] != "rice")]
    np.testing.assert_allclose(
        at_t["target_h1"].to_numpy(), at_t_base["target_h1"].to_numpy() * 10 + 1, rtol=1e-12
    )


def test_targets_are_demand_h_weeks_later(tiny) -> None:
    _, frame = tiny
    demand = frame[[*KEYS, "demand_tonnes"]]
    for h in range(1, H + 1):
        ahead = demand.assign(week_start=demand["week_start"] - pd.Timedelta(weeks=h))
        joined = frame[[*KEYS, f"target_h{h}"]].merge(ahead, on=KEYS, how="left")
        np.testing.assert_array_equal(joined[f"target_h{h}"], joined["demand_tonnes"])
        last = frame.groupby(["region", "crop"])["week_start"].transform("max")
        beyond = frame["week_start"] > last - pd.Timedelta(weeks=h)
        assert frame.loc[beyond, f"target_h{h}"].isna().all()


def test_spec_columns_types_and_keys(tiny, tables) -> None:
    result, frame = tiny
    spec = result.spec
    assert spec == feature_spec(H) == CROP.feature_spec(H)
    assert (spec.time_column, spec.series_keys, spec.period) == (
        "week_start",
        ("region", "crop"),
        "W-MON",
    )
    assert spec.target == "demand_tonnes" and {"region", "crop"} <= set(spec.categorical)
    assert result.frame.columns == spec.columns
    types = dict(result.frame.dtypes)
    assert types["week_start"] == "date"
    assert types["region"] == types["crop"] == "string"
    assert {types[c] for c in spec.categorical if c.startswith("fut_")} == {"int"}
    assert {types[c] for c in (*spec.numeric, *spec.target_columns)} == {"double"}
    # One row per series and Monday, every Monday of 1995–2001 present for all 125 series.
    assert not frame.duplicated(KEYS).any()
    assert len(frame) == 25 * 5 * 366 == result.counts["rows"]
    assert result.counts["series"] == 125
    assert (frame["week_start"].dt.day_of_week == 0).all()
    assert result.counts["filled_weeks"] == 0 == frame["is_filled"].sum()
    # Calendar covariates of the target weeks are known, never null.
    assert frame[[c for c in spec.categorical if c.startswith("fut_")]].notna().all().all()

    with pytest.raises(ValueError, match="horizon"):
        feature_spec(0)
    with pytest.raises(TableInputError, match="weather"):
        CROP.build_features({k: v for k, v in tables.items() if k != "weather"}, H)


def _plan_nodes(node):
    yield node
    children = node.children()
    for i in range(children.size()):
        yield from _plan_nodes(children.apply(i))


def test_plan_has_no_udf_and_no_unpartitioned_window(tiny) -> None:
    result, _ = tiny
    nodes = list(_plan_nodes(result.frame._jdf.queryExecution().optimizedPlan()))
    windows = [n for n in nodes if n.nodeName() == "Window"]
    assert windows, "the transform should use window functions"
    # A window without partitionBy moves all rows to one partition (Spark warns about it).
    assert all(not n.partitionSpec().isEmpty() for n in windows)
    names = {n.nodeName() for n in nodes}
    assert not any("Python" in name or "Pandas" in name for name in names), names
