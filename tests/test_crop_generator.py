"""The crop demand generator: calibration to DOMAIN.md, determinism and schema conformance.

Most tests read the session fixture ``crop_tiny`` (seed 7, tiny: 1995–2001, all 25 regions,
potato, rice, avocado, mango and lemon), which spans the strong 1997–98 El Niño.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models import get_use_case
from models.base import FileFormat, GeneratorConfig, Scale, TableSchema
from models.crop_demand import schema
from models.crop_demand.generator import NORTH_COAST
from perucast.datasets import oracle_mase, read_table

EL_NINO_CROPS = ["rice", "mango", "lemon"]
OTHER_SEED = 8


def _generate(out: Path, seed: int, fmt: FileFormat = FileFormat.PARQUET) -> Path:
    config = GeneratorConfig(seed=seed, scale=Scale.TINY, format=fmt)
    get_use_case("crop_demand").generate(config, out)
    return out


@pytest.fixture(scope="module")
def crop_other_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("crop-seed8") / "data", OTHER_SEED)


@pytest.fixture(scope="module")
def frame(crop_tiny: Path) -> pd.DataFrame:
    """Demand, supply, prices and oracle of the tiny data set joined on their keys."""
    keys = ["week_start", "region", "crop"]
    df = (
        read_table(crop_tiny, "historical_demand")
        .merge(read_table(crop_tiny, "market_trends"), on=keys)
        .merge(read_table(crop_tiny, "oracle"), on=keys)
    )
    df["week_start"] = pd.to_datetime(df["week_start"])
    df["year"] = df["week_start"].dt.year
    df["month"] = df["week_start"].dt.month
    df["woy"] = df["week_start"].dt.isocalendar().week.astype(int).clip(upper=52)
    return df


def _national(frame: pd.DataFrame, crop: str) -> pd.DataFrame:
    """National weekly supply and demand of one crop, and its mean price over regions."""
    rows = frame[frame["crop"] == crop]
    out = rows.groupby("week_start").agg(
        supply=("supply_tonnes", "sum"),
        demand=("demand_tonnes", "sum"),
        price=("price_pen_per_kg", "mean"),
    )
    out["year"] = out.index.year
    out["month"] = out.index.month
    return out


def _in_year_ratio(national: pd.DataFrame, column: str, months: list[int]) -> float:
    """Mean of ``column`` in ``months`` over its yearly mean, averaged over the years."""
    rel = national[column] / national.groupby("year")[column].transform("mean")
    return float(rel[national["month"].isin(months)].mean())


# 1. Seasonality follows the harvest calendars.


def test_potato_supply_peaks_in_the_highland_harvest_and_its_price_dips(
    frame: pd.DataFrame,
) -> None:
    potato = _national(frame, "potato")
    assert _in_year_ratio(potato, "supply", [4, 5, 6]) > 1.4
    assert _in_year_ratio(potato, "supply", [10, 11, 12]) < 0.75
    assert _in_year_ratio(potato, "price", [4, 5, 6]) < 0.85
    assert _in_year_ratio(potato, "price", [10, 11, 12]) > 1.1


def test_mango_is_a_summer_fruit_and_avocado_peaks_in_winter(frame: pd.DataFrame) -> None:
    mango = _national(frame, "mango")
    assert _in_year_ratio(mango, "supply", [11, 12, 1, 2]) > 1.8
    assert _in_year_ratio(mango, "supply", [6, 7, 8]) < 0.2
    # Perishable fruit is bought when it is in season, despite the price elasticity alone.
    assert _in_year_ratio(mango, "demand", [11, 12, 1, 2]) > 1.5
    avocado = _national(frame, "avocado")
    assert _in_year_ratio(avocado, "supply", [4, 5, 6, 7, 8]) > 1.3


# 2. Demand scales with population: Lima is about a third of the country.


def test_lima_holds_about_a_third_of_national_demand(frame: pd.DataFrame) -> None:
    by_region = frame.groupby("region")["demand_tonnes"].sum()
    share = by_region / by_region.sum()
    assert 0.28 <= share["lima"] <= 0.38
    assert 0.02 <= share["callao"] <= 0.05
    assert share.drop("lima").max() < 0.1  # no other region comes close


def test_national_magnitudes_match_domain_figures(frame: pd.DataFrame) -> None:
    yearly = frame.groupby(["crop", "year"])[["supply_tonnes", "demand_tonnes"]].sum() / 1e6
    mean = yearly.groupby("crop").mean()
    # Late-1990s Peru: potato ~2.5–3.5 Mt, rice ~1–2 Mt; export crops eaten far below harvest.
    assert 2.0 <= mean.loc["potato", "supply_tonnes"] <= 4.0
    assert 0.9 <= mean.loc["rice", "supply_tonnes"] <= 2.5
    assert mean.loc["potato", "demand_tonnes"] > mean.loc["rice", "demand_tonnes"]
    avocado = mean.loc["avocado"]
    assert avocado["demand_tonnes"] < 0.8 * avocado["supply_tonnes"]
    lima_2001 = frame[(frame["region"] == "lima") & (frame["year"] == 2001)]
    price = lima_2001.groupby("crop")["price_pen_per_kg"].mean()
    assert price["potato"] < price["rice"] < price["avocado"]
    assert 0.4 <= price["potato"] <= 1.5
    assert 3.0 <= price["avocado"] <= 9.0
    usd = frame.groupby("week_start")["usd_pen"]
    assert (usd.nunique() == 1).all(), "usd_pen is the same for every row of a week"
    assert usd.first().between(2.5, 4.0).all()


# 3. Demand falls when the price rises.


def _demean(values: pd.Series, groupings: list[list[pd.Series]], rounds: int = 20) -> pd.Series:
    """Remove several sets of fixed effects by alternating projections."""
    for _ in range(rounds):
        for keys in groupings:
            values = values - values.groupby(keys).transform("mean")
    return values


def test_demand_has_a_negative_price_elasticity(frame: pd.DataFrame) -> None:
    # Within-series: series×year effects take out trends and inflation, series×week-of-year
    # effects take out seasonality, so only price shocks identify the slope.
    groupings = [
        [frame["region"], frame["crop"], frame["year"]],
        [frame["region"], frame["crop"], frame["woy"]],
    ]
    x = _demean(np.log(frame["price_pen_per_kg"]), groupings)
    y = _demean(np.log(frame["demand_tonnes"]), groupings)
    slope = float((x * y).sum() / (x * x).sum())
    assert -0.7 <= slope <= -0.1, slope


# 4. El Niño costero.


def test_strong_el_nino_floods_the_north_coast(crop_tiny: Path) -> None:
    weather = read_table(crop_tiny, "weather")
    weather["year"] = pd.to_datetime(weather["week_start"]).dt.year
    rain = weather.groupby(["region", "year"])["precip_mm"].sum().unstack()
    for region in ["piura", "tumbes"]:
        assert rain.loc[region, 1998] > 4 * rain.loc[region, [1996, 1999, 2000, 2001]].mean()
    # The rest of the coast stays dry; the Amazon is wet every year.
    assert rain.loc["lima"].max() < 60
    assert rain.loc["loreto"].min() > 2000


def test_strong_el_nino_cuts_north_coast_harvests_and_raises_prices(
    frame: pd.DataFrame,
) -> None:
    # January–June 1998 against the same weeks of 1996 and 2000 (neutral, and symmetric around
    # 1998 so trend growth and inflation cancel).
    event = frame["week_start"].between("1998-01-01", "1998-06-30")
    weeks = frame.loc[event, "woy"].unique()
    neutral = frame["year"].isin([1996, 2000]) & frame["woy"].isin(weeks)
    north = frame["region"].isin(NORTH_COAST)
    for crop in EL_NINO_CROPS:
        rows = frame["crop"] == crop
        during = frame.loc[rows & north & event, "supply_tonnes"].sum()
        usual = frame.loc[rows & north & neutral, "supply_tonnes"].sum() / 2
        assert during < 0.7 * usual, (crop, during / usual)
        price_during = np.log(frame.loc[rows & event, "price_pen_per_kg"]).mean()
        price_usual = np.log(frame.loc[rows & neutral, "price_pen_per_kg"]).mean()
        assert price_during > price_usual, crop
        if crop in ("mango", "lemon"):  # most of the national harvest is on the north coast
            assert price_during - price_usual > np.log(1.1), crop
    # Potato, grown in the highlands, keeps most of its harvest.
    potato = frame["crop"] == "potato"
    during = frame.loc[potato & event, "supply_tonnes"].sum()
    usual = frame.loc[potato & neutral, "supply_tonnes"].sum() / 2
    assert during > 0.8 * usual


# 5. Difficulty: the oracle beats seasonal naive, but not by too much.


@pytest.mark.parametrize("which", ["crop_tiny", "crop_other_seed"])
def test_oracle_mase_is_realistic(which: str, request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(which)
    assert 0.45 <= oracle_mase(directory, "crop_demand") <= 0.65


# 6. Determinism.


def test_same_seed_writes_identical_files(crop_tiny: Path, tmp_path: Path) -> None:
    again = _generate(tmp_path / "again", 7)
    for table in ("historical_demand", "weather", "market_trends", "oracle"):
        first = (crop_tiny / f"{table}.parquet").read_bytes()
        assert first == (again / f"{table}.parquet").read_bytes(), table


def test_another_seed_draws_other_values_on_the_same_observed_enso(
    crop_tiny: Path, crop_other_seed: Path
) -> None:
    a = read_table(crop_tiny, "historical_demand")
    b = read_table(crop_other_seed, "historical_demand")
    assert a[["week_start", "region", "crop"]].equals(b[["week_start", "region", "crop"]])
    assert (a["demand_tonnes"] != b["demand_tonnes"]).mean() > 0.99
    wa, wb = read_table(crop_tiny, "weather"), read_table(crop_other_seed, "weather")
    assert (wa["precip_mm"] != wb["precip_mm"]).any()
    # 1995–2001 is all observed Niño 1+2 data: identical for every seed.
    assert wa["nino12_anomaly_c"].equals(wb["nino12_anomaly_c"])
    assert wa["nino12_anomaly_c"].max() > 3.0  # the 1997–98 El Niño is there


# 7. Schema conformance.


def _check_table(directory: Path, table: TableSchema) -> pd.DataFrame:
    path = directory / f"{table.name}.parquet"
    file_schema = pq.read_schema(path)
    assert file_schema.names == table.column_names
    for col in table.columns:
        assert file_schema.field(col.name).type == col.arrow_type, (table.name, col.name)
    df = pq.read_table(path).to_pandas()
    assert len(df) > 0
    for col in table.columns:
        values = df[col.name]
        assert values.isna().mean() <= col.max_null_share, (table.name, col.name)
        if col.allowed is not None:
            assert set(values) <= set(col.allowed), (table.name, col.name)
        if col.dtype == "date":
            dates = pd.to_datetime(values)
            assert dates.min() >= pd.Timestamp(col.min), (table.name, col.name)
            assert dates.max() <= pd.Timestamp(col.max), (table.name, col.name)
        elif col.is_numeric:
            assert np.isfinite(values).all(), (table.name, col.name)
            assert values.min() >= col.min, (table.name, col.name, values.min())
            assert values.max() <= col.max, (table.name, col.name, values.max())
    assert not df.duplicated(list(table.keys)).any(), table.name
    # Weekly cadence on Mondays, every series complete over the same weeks.
    weeks = pd.to_datetime(df[table.time_column])
    assert (weeks.dt.day_of_week == 0).all()
    all_weeks = np.sort(weeks.unique())
    assert (np.diff(all_weeks) == np.timedelta64(7, "D")).all()
    sizes = df.groupby(list(table.series_keys)).size()
    assert (sizes == all_weeks.size).all(), table.name
    return df


def test_every_table_conforms_to_its_schema(crop_tiny: Path) -> None:
    frames = {t.name: _check_table(crop_tiny, t) for t in (*schema.TABLES, schema.ORACLE)}
    demand = frames["historical_demand"]
    assert set(demand["region"]) == set(schema.REGIONS)
    assert {"potato", "rice", "mango", "lemon", "avocado"} <= set(demand["crop"])
    weeks = pd.to_datetime(demand["week_start"])
    assert weeks.min() == pd.Timestamp("1995-01-02")
    assert weeks.max() == pd.Timestamp("2001-12-31")
    nino = frames["weather"].groupby("week_start")["nino12_anomaly_c"].nunique()
    assert (nino == 1).all(), "the Niño 1+2 anomaly is the same for every region in a week"


def test_manifest_rows_match_the_files(crop_tiny: Path) -> None:
    import json

    manifest = json.loads((crop_tiny / "manifest.json").read_text())
    for table, rows in manifest["rows"].items():
        assert pq.read_metadata(crop_tiny / f"{table}.parquet").num_rows == rows
    weeks = pd.date_range("1995-01-02", "2001-12-31", freq="W-MON").size
    assert manifest["rows"]["historical_demand"] == weeks * 25 * 5


# 8. CSV holds the same values as Parquet.


def test_csv_format_writes_the_same_values(crop_tiny: Path, tmp_path: Path) -> None:
    csv_dir = _generate(tmp_path / "csv", 7, FileFormat.CSV)
    for table in (*schema.TABLES, schema.ORACLE):
        assert (csv_dir / f"{table.name}.csv").exists()
        a = read_table(crop_tiny, table.name)
        b = read_table(csv_dir, table.name)
        assert list(b.columns) == table.column_names
        assert len(a) == len(b)
        for col in table.columns:
            if col.dtype == "date":
                assert (pd.to_datetime(a[col.name]) == pd.to_datetime(b[col.name])).all()
            elif col.is_numeric:
                np.testing.assert_allclose(a[col.name], b[col.name], rtol=1e-12, atol=0)
            else:
                assert a[col.name].equals(b[col.name]), col.name
