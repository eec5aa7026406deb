"""The fish stock Spark features against an independent pandas implementation, leakage, survey
visibility and the spec.

The pandas side below is written from the feature definitions, not from the Spark code: lags and
targets by calendar arithmetic on the month (not row shifts), survey carry-forward with
``merge_asof``, quantiles with numpy. Off-by-one lags and window edges show up as mismatches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose

from models.fish_stock import schema
from models.fish_stock.features import (
    PERCENTILE_ACCURACY,
    build_features,
    feature_spec,
    satellite_monthly,
)
from perucast.spark import TableMissingError, read_tables

HORIZON = 6
QUANTILES = (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))
TABLES = list(schema.TABLES)


def _to_pandas(frame) -> pd.DataFrame:
    out = frame.toPandas()
    out["month"] = pd.to_datetime(out["month"]).astype("datetime64[ns]")
    return out.sort_values(["zone", "month"]).reset_index(drop=True)


def _raw(directory: Path) -> dict[str, pd.DataFrame]:
    """The raw tables as pandas frames (dates as datetime64)."""
    out = {}
    for table in TABLES:
        frame = pq.read_table(directory / f"{table.name}.parquet").to_pandas()
        frame[table.time_column] = pd.to_datetime(frame[table.time_column]).astype("datetime64[ns]")
        out[table.name] = frame
    return out


def _write_raw(frames: dict[str, pd.DataFrame], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        frame = frames[table.name].copy()
        frame[table.time_column] = frame[table.time_column].dt.date
        pq.write_table(
            pa.Table.from_pandas(frame, schema=table.arrow_schema(), preserve_index=False),
            directory / f"{table.name}.parquet",
        )
    return directory


@pytest.fixture(scope="module")
def raw(fish_tiny: Path) -> dict[str, pd.DataFrame]:
    return _raw(fish_tiny)


@pytest.fixture(scope="module")
def built(spark, fish_tiny: Path):
    result = build_features(read_tables(spark, TABLES, fish_tiny), HORIZON)
    return result, _to_pandas(result.frame)


# --- independent pandas implementation ------------------------------------------------------


def _month_start(dates: pd.Series) -> pd.Series:
    return dates.dt.to_period("M").dt.to_timestamp().astype("datetime64[ns]")


def _satellite_expected(sat: pd.DataFrame) -> pd.DataFrame:
    """Zone × month statistics of the (monthly-composite) satellite grid."""
    sat = sat.assign(month=_month_start(sat["date"]))
    rows = []
    for (zone, month), g in sat.groupby(["zone", "month"]):
        row = {"zone": zone, "month": month}
        for prefix, col in (
            ("sat_sst", "sst_c"),
            ("sat_sst_anom", "sst_anomaly_c"),
            ("sat_chl", "chlorophyll_mg_m3"),
        ):
            values = g[col].dropna().to_numpy()
            row[f"{prefix}_mean"] = values.mean()
            row[f"{prefix}_std"] = values.std(ddof=1)
            row[f"{prefix}_values"] = np.sort(values)
        row["sat_chl_missing_share"] = g["chlorophyll_mg_m3"].isna().mean()
        row["sat_wind_mean"] = g["wind_speed_m_s"].mean()
        row["sat_warm_share"] = (g["sst_anomaly_c"] > 1.0).mean()
        row["sat_n_obs"] = float(len(g))
        rows.append(row)
    return pd.DataFrame(rows)


def _surveys_expected(sonar: pd.DataFrame) -> pd.DataFrame:
    """One estimate per survey × zone, dated to the month of the survey's last EDSU."""
    sonar = sonar.assign(
        fish=sonar["nasc_m2_nmi2"] / sonar["mean_length_cm"] ** 2,
        end=sonar.groupby("survey_id")["date"].transform("max"),
    )
    sonar["fish_len"] = sonar["fish"] * sonar["mean_length_cm"]
    sonar["fish_juv"] = sonar["fish"] * sonar["juvenile_fraction"]
    g = sonar.groupby(["survey_id", "zone"], as_index=False).agg(
        nasc=("nasc_m2_nmi2", "mean"),
        fish=("fish", "sum"),
        fish_len=("fish_len", "sum"),
        fish_juv=("fish_juv", "sum"),
        end=("end", "max"),
    )
    g["length"] = g["fish_len"] / g["fish"]
    g["juvenile"] = g["fish_juv"] / g["fish"]
    g["survey_month"] = _month_start(g["end"])
    return g


def _carried_expected(spine: pd.DataFrame, surveys: pd.DataFrame) -> pd.DataFrame:
    """The latest survey ended in or before each spine month, by zone."""
    surveys = surveys.sort_values(["survey_month", "end"])
    out = pd.merge_asof(
        spine.sort_values("month"),
        surveys[["zone", "survey_month", "nasc", "length", "juvenile"]],
        left_on="month",
        right_on="survey_month",
        by="zone",
        direction="backward",
    )
    out["age"] = (out["month"].dt.year - out["survey_month"].dt.year) * 12 + (
        out["month"].dt.month - out["survey_month"].dt.month
    )
    return out.sort_values(["zone", "month"]).reset_index(drop=True)


def _stock_expected(stock: pd.DataFrame) -> pd.DataFrame:
    """Lags, leads and rolling sums by looking up the month k months away."""
    base = stock.set_index(["zone", "month"])

    def shifted(column: str, months: int) -> np.ndarray:
        keys = zip(stock["zone"], stock["month"] + pd.DateOffset(months=months), strict=True)
        return base[column].reindex(list(keys)).to_numpy()

    out = stock[["zone", "month", "biomass_tonnes", "catch_tonnes"]].copy()
    for k in (1, 2, 3, 6, 12):
        out[f"biomass_lag{k}"] = shifted("biomass_tonnes", -k)
        out[f"nino12_lag{k}"] = shifted("nino12_anomaly_c", -k)
    for k in (1, 2, 12):
        out[f"catch_lag{k}"] = shifted("catch_tonnes", -k)
    window = np.column_stack([shifted("catch_tonnes", -k) for k in range(12)])
    out["catch_roll12"] = np.where(np.isnan(window).any(axis=1), np.nan, window.sum(axis=1))
    for h in range(1, HORIZON + 1):
        out[f"target_h{h}"] = shifted("biomass_tonnes", h)
    angle = 2 * np.pi * (stock["month"].dt.month - 1) / 12
    out["month_sin"], out["month_cos"] = np.sin(angle), np.cos(angle)
    return out.sort_values(["zone", "month"]).reset_index(drop=True)


# --- 1. Spark equals pandas -----------------------------------------------------------------


def test_satellite_aggregation_matches_pandas(built, raw) -> None:
    result, frame = built
    expected = _satellite_expected(raw["satellite"])
    got = expected[["zone", "month"]].merge(frame, on=["zone", "month"], how="left")
    assert len(got) == len(expected) == result.counts["satellite_zone_months"]
    for col in ("sat_chl_missing_share", "sat_wind_mean", "sat_warm_share", "sat_n_obs"):
        assert_allclose(got[col], expected[col], rtol=1e-12, err_msg=col)
    for prefix in ("sat_sst", "sat_sst_anom", "sat_chl"):
        assert_allclose(got[f"{prefix}_mean"], expected[f"{prefix}_mean"], rtol=1e-12)
        assert_allclose(got[f"{prefix}_std"], expected[f"{prefix}_std"], rtol=1e-9, atol=1e-12)
        # Exact quantiles (Spark's percentile): linear interpolation, numpy's default method.
        for name, p in QUANTILES:
            want = [np.quantile(values, p) for values in expected[f"{prefix}_values"]]
            assert_allclose(got[f"{prefix}_{name}"], want, rtol=1e-12, err_msg=f"{prefix}_{name}")
    # Before the satellite era: no satellite features at all.
    before = frame[frame["month"] < expected["month"].min()]
    assert len(before) == result.counts["origins_without_satellite"] > 0
    assert before[[c for c in frame.columns if c.startswith("sat_")]].isna().all().all()
    assert result.counts["satellite_rows_aggregated"] == len(raw["satellite"])


def test_approximate_quantiles_are_within_their_rank_guarantee(spark, fish_tiny, raw) -> None:
    sat = read_tables(spark, [schema.SATELLITE], fish_tiny)["satellite"]
    got = _to_pandas(satellite_monthly(sat, exact_quantiles=False))
    expected = _satellite_expected(raw["satellite"])
    assert (got[["zone", "month"]].to_numpy() == expected[["zone", "month"]].to_numpy()).all()
    for prefix in ("sat_sst", "sat_sst_anom", "sat_chl"):
        for name, p in QUANTILES:
            for values, value in zip(expected[f"{prefix}_values"], got[f"{prefix}_{name}"],
                                     strict=True):  # fmt: skip
                # percentile_approx returns a value whose rank is within n / accuracy of
                # ceil(p n), the "inverted CDF" order statistic. These zone-months hold a few
                # dozen cells (n << accuracy): no rank error is allowed, the value is exact.
                n = len(values)
                slack = n // PERCENTILE_ACCURACY
                rank = max(int(np.ceil(p * n)), 1) - 1
                low, high = values[max(rank - slack, 0)], values[min(rank + slack, n - 1)]
                assert low <= value <= high, (prefix, name, n, value, low, high)
                assert slack > 0 or value == np.quantile(values, p, method="inverted_cdf")


def test_survey_carry_forward_matches_pandas(built, raw) -> None:
    result, frame = built
    surveys = _surveys_expected(raw["sonar"])
    expected = _carried_expected(frame[["zone", "month"]], surveys)
    assert result.counts["surveys"] == raw["sonar"]["survey_id"].nunique()
    assert result.counts["survey_zone_estimates"] == len(surveys)
    assert result.counts["origins_without_survey"] == expected["nasc"].isna().sum() > 0
    assert_allclose(frame["sonar_nasc_mean"], expected["nasc"], rtol=1e-12)
    assert_allclose(frame["sonar_mean_length_cm"], expected["length"], rtol=1e-12)
    assert_allclose(frame["sonar_juvenile_share"], expected["juvenile"], rtol=1e-12)
    assert_allclose(frame["survey_age_months"], expected["age"])


def test_stock_lags_rolls_and_targets_match_pandas(built, raw) -> None:
    _, frame = built
    expected = _stock_expected(raw["stock"])
    assert (frame[["zone", "month"]].to_numpy() == expected[["zone", "month"]].to_numpy()).all()
    for col in expected.columns.drop(["zone", "month"]):
        assert_allclose(frame[col], expected[col], rtol=1e-12, atol=1e-12, err_msg=col)
    stock = raw["stock"].sort_values(["zone", "month"]).reset_index(drop=True)
    assert (frame["season"] == stock["season"]).all()
    assert_allclose(frame["season_quota_tonnes"], stock["season_quota_tonnes"])
    assert_allclose(frame["nino12_anomaly_c"], stock["nino12_anomaly_c"])


# --- 2. No leakage --------------------------------------------------------------------------


def _cut_inside_a_survey(sonar: pd.DataFrame) -> pd.Timestamp:
    """The last day of a month in which a survey had sampled some EDSUs but not all."""
    spans = sonar.groupby("survey_id")["date"].agg(["min", "max"])
    spans = spans[_month_start(spans["min"]) < _month_start(spans["max"])]
    spans = spans[spans["min"].dt.year >= 2005]  # inside the satellite era, with history
    first = spans.sort_values("min").iloc[0]
    return first["min"] + pd.offsets.MonthEnd(0)


def test_no_feature_at_or_before_t_changes_when_later_data_changes(
    spark, built, raw, tmp_path: Path
) -> None:
    result, frame = built
    cut = _cut_inside_a_survey(raw["sonar"])
    changed = {name: table.copy() for name, table in raw.items()}
    rng = np.random.default_rng(0)
    for name, time_col in (("satellite", "date"), ("sonar", "date"), ("stock", "month")):
        table = changed[name]
        later = table[time_col] > cut
        for col in table.columns:
            if table[col].dtype == np.float64 and col not in ("lat", "lon"):
                table.loc[later, col] = table.loc[later, col] * rng.uniform(
                    1.5, 3.0, later.sum()
                ) + rng.uniform(0.1, 1.0, later.sum())
    sat = changed["satellite"]
    sat.loc[(sat["date"] > cut) & (sat["cell_id"] % 3 == 0), "chlorophyll_mg_m3"] = np.nan
    stock = changed["stock"]
    stock.loc[stock["month"] > cut, "season"] = "closed"

    leaked = build_features(
        read_tables(spark, TABLES, _write_raw(changed, tmp_path / "changed")), HORIZON
    )
    after = _to_pandas(leaked.frame)
    features = result.spec.feature_columns
    known = frame["month"] <= cut
    pd.testing.assert_frame_equal(
        after.loc[known, ["zone", "month", *features]],
        frame.loc[known, ["zone", "month", *features]],
        check_exact=True,
    )
    # The change did reach the later rows, and the targets of the last known origins.
    assert not np.allclose(after.loc[~known, "sat_sst_mean"], frame.loc[~known, "sat_sst_mean"])
    assert not np.allclose(after.loc[known, "target_h1"], frame.loc[known, "target_h1"])
    # The survey under way at the cut is not seen at the cut.
    at_cut = frame["month"] == cut.replace(day=1)
    assert (frame.loc[at_cut, "survey_age_months"] >= 1).all()

    # target_h{h} at t is the biomass at t + h.
    by_month = frame.set_index(["zone", "month"])["biomass_tonnes"]
    for h in range(1, HORIZON + 1):
        later_keys = zip(frame["zone"], frame["month"] + pd.DateOffset(months=h), strict=True)
        assert_allclose(frame[f"target_h{h}"], by_month.reindex(list(later_keys)).to_numpy())


# --- 3. Survey visibility, on hand-built tables ----------------------------------------------


def _edsus(survey_id: str, zone: str, day: str, nasc: list[float], length: float) -> pd.DataFrame:
    n = len(nasc)
    return pd.DataFrame(
        {
            "survey_id": survey_id,
            "date": pd.Timestamp(day),
            "zone": zone,
            "transect": 1,
            "edsu": np.arange(1, n + 1, dtype=np.int32),
            "lat": -10.0,
            "lon": -78.5,
            "nasc_m2_nmi2": nasc,
            "mean_length_cm": length,
            "juvenile_fraction": 0.1,
        }
    )


@pytest.fixture(scope="module")
def handmade(spark, tmp_path_factory: pytest.TempPathFactory):
    months = pd.date_range("2000-01-01", "2001-06-01", freq="MS")
    zones = ["north", "south"]
    stock = pd.DataFrame(
        [(m, z, 1.0e6 + i, 0.0, "closed", 0.0, 0.1) for i, m in enumerate(months) for z in zones],
        columns=schema.STOCK.column_names,
    )
    # 8-day composites: the one starting 2000-01-25 ends on 1 February.
    dates = pd.date_range("2000-01-01", "2001-06-30", freq="8D")
    satellite = pd.DataFrame(
        {
            "date": np.repeat(dates, 2),
            "cell_id": np.tile(np.array([1, 2], dtype=np.int32), len(dates)),
            "lat": np.tile([-6.0, -15.0], len(dates)),
            "lon": -80.0,
            "zone": np.tile(zones, len(dates)),
            "sst_c": 18.0,
            "sst_anomaly_c": 0.5,
            "chlorophyll_mg_m3": 1.0,
            "wind_speed_m_s": 6.0,
        }
    )
    sonar = pd.concat(
        [
            # 2000-1: north sampled in March, south finishes on 2 April -> seen from April.
            _edsus("2000-1", "north", "2000-03-10", [100.0, 300.0], 14.0),
            _edsus("2000-1", "south", "2000-04-02", [50.0], 14.0),
            # 2000-2: north only, ends 31 October -> seen from October, south keeps 2000-1.
            _edsus("2000-2", "north", "2000-09-25", [10.0], 10.0),
            _edsus("2000-2", "north", "2000-10-31", [30.0], 12.0),
        ]
    )
    directory = _write_raw(
        {"stock": stock, "satellite": satellite, "sonar": sonar},
        tmp_path_factory.mktemp("handmade"),
    )
    result = build_features(read_tables(spark, TABLES, directory), HORIZON)
    return result, _to_pandas(result.frame), satellite


def test_a_survey_is_seen_from_the_month_it_ended_and_ages(handmade) -> None:
    result, frame, _ = handmade
    survey = frame.set_index(["zone", "month"])[["sonar_nasc_mean", "survey_age_months"]]
    north, south = survey.loc["north"], survey.loc["south"]
    # Nothing before April 2000: the first survey was still at sea in March.
    assert north.loc[:"2000-03-01"].isna().all().all()
    assert south.loc[:"2000-03-01"].isna().all().all()
    assert result.counts["origins_without_survey"] == 2 * 3
    assert north.loc["2000-04-01", "sonar_nasc_mean"] == 200.0
    assert south.loc["2000-04-01", "sonar_nasc_mean"] == 50.0
    assert north.loc["2000-04-01":"2000-09-01", "survey_age_months"].tolist() == [0, 1, 2, 3, 4, 5]
    # 2000-2 replaces 2000-1 in the north only, from October.
    assert north.loc["2000-10-01", "sonar_nasc_mean"] == 20.0
    assert north.loc["2000-10-01":"2001-01-01", "survey_age_months"].tolist() == [0, 1, 2, 3]
    assert south.loc["2000-10-01", "sonar_nasc_mean"] == 50.0
    assert south.loc["2001-06-01", "survey_age_months"] == 14
    # Fish-number weights NASC / L²: 30/144 fish of 12 cm and 10/100 of 10 cm.
    weights = np.array([10 / 100, 30 / 144])
    north_length = frame.set_index(["zone", "month"]).loc[("north", "2000-10-01")]
    assert_allclose(north_length["sonar_mean_length_cm"], (weights @ [10.0, 12.0]) / weights.sum())
    assert result.counts["surveys"] == 2


def test_an_8_day_composite_counts_for_the_month_it_ends_in(handmade) -> None:
    result, frame, satellite = handmade
    assert result.counts["satellite_composite_days"] == 8
    month = _month_start(satellite["date"] + pd.Timedelta(days=7))
    expected = satellite.groupby([satellite["zone"], month]).size()
    expected = expected[expected.index.get_level_values(1) <= frame["month"].max()]
    got = frame.set_index(["zone", "month"])["sat_n_obs"].dropna()
    assert got.to_dict() == expected.astype(float).to_dict()
    assert got.loc[("north", pd.Timestamp("2000-01-01"))] == 3  # 1, 9, 17 January; not the 25th


# --- 4. The spec ----------------------------------------------------------------------------


def test_frame_matches_the_spec_with_one_row_per_zone_and_month(built, raw) -> None:
    result, frame = built
    spec = result.spec
    assert spec == feature_spec(HORIZON)
    assert result.frame.columns == spec.columns
    assert spec.target_columns == [f"target_h{h}" for h in range(1, HORIZON + 1)]
    assert (spec.time_column, spec.series_keys, spec.period) == ("month", ("zone",), "MS")
    assert {"zone", "season"} <= set(spec.categorical)
    assert not frame.duplicated(["zone", "month"]).any()
    stock = raw["stock"]
    assert len(frame) == len(stock) == result.counts["origins"]
    types = dict(result.frame.dtypes)
    assert types["month"] == "date"
    assert all(types[c] == "string" for c in spec.categorical)
    assert all(types[c] == "double" for c in (*spec.numeric, *spec.target_columns))
    assert result.counts["origins_without_stock_row"] == 0
    with pytest.raises(ValueError, match="horizon"):
        feature_spec(0)


def test_missing_tables_are_named(built) -> None:
    result, _ = built
    with pytest.raises(TableMissingError, match="sonar"):
        build_features({"stock": result.frame, "satellite": result.frame}, HORIZON)
