"""Behaviour of the anchoveta generator (models/fish_stock/generator.py) on tiny data sets.

Numbers asserted here are the calibration targets of the generator (DOMAIN.md): El Niño
collapses and recoveries, upwelling chlorophyll, juveniles after El Niño, the fishing rules,
landings, and how hard the target is to forecast (the oracle's MASE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models import get_use_case
from models.base import GeneratorConfig, Scale, TableSchema
from models.enso import STRONG_EL_NINO_YEARS
from models.fish_stock import generator as gen
from models.fish_stock.schema import ORACLE, SATELLITE, SONAR, STOCK
from perucast.datasets import oracle_mase, read_table

TEST_SEED = 7  # the seed of the session fixture fish_tiny (tests/conftest.py)
OTHER_SEED = 11
COLLAPSE_YEARS = (1972, 1982, 1997)


@pytest.fixture(scope="module")
def fish_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny data set with a second seed (the ENSO after 2010 differs too)."""
    out = tmp_path_factory.mktemp("fish-other") / "data"
    get_use_case("fish_stock").generate(GeneratorConfig(seed=OTHER_SEED, scale=Scale.TINY), out)
    return out


@pytest.fixture(params=["fish_tiny", "fish_other"])
def fish_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


def _monthly(directory: Path) -> pd.DataFrame:
    """Whole-stock totals per month: true and assessed biomass, landings, Niño 1+2."""
    stock = read_table(directory, "stock")
    oracle = read_table(directory, "oracle")
    df = stock.merge(oracle, on=["month", "zone"])
    out = df.groupby("month").agg(
        true=("expected", "sum"),
        assessed=("biomass_tonnes", "sum"),
        catch=("catch_tonnes", "sum"),
        quota=("season_quota_tonnes", "first"),
        season=("season", "first"),
        nino=("nino12_anomaly_c", "first"),
    )
    out.index = pd.to_datetime(out.index)
    return out


def _onset(nino: pd.Series, year: int) -> pd.Timestamp:
    """First month of ``year`` with a Niño 1+2 anomaly of +1 °C or more."""
    warm = nino[(nino.index.year == year) & (nino >= 1.0)]
    return warm.index[0]


def _survey_juveniles(directory: Path) -> pd.DataFrame:
    """Per survey: start date, juvenile estimate (mean of the zone means) and mean length."""
    sonar = read_table(directory, "sonar")
    zones = sonar.groupby(["survey_id", "zone"]).agg(
        juvenile=("juvenile_fraction", "mean"),
        length=("mean_length_cm", "mean"),
        start=("date", "min"),
    )
    surveys = zones.groupby("survey_id").agg(
        juvenile=("juvenile", "mean"), length=("length", "mean"), start=("start", "min")
    )
    surveys["start"] = pd.to_datetime(surveys["start"])
    return surveys


# --- 1. El Niño collapses ----------------------------------------------------------------------


def test_biomass_collapses_after_strong_el_nino_and_recovers(fish_dir: Path) -> None:
    monthly = _monthly(fish_dir)
    # The assessment is noisy month to month: judge it on a centred 3-month mean.
    series = {
        "oracle": monthly["true"],
        "observed": monthly["assessed"].rolling(3, center=True, min_periods=1).mean(),
    }
    assert set(COLLAPSE_YEARS) <= set(STRONG_EL_NINO_YEARS)
    for year in COLLAPSE_YEARS:
        onset = _onset(monthly["nino"], year)
        i = monthly.index.get_loc(onset)
        for name, total in series.items():
            before = total.iloc[i - 12 : i].mean()
            year_after = total.iloc[i : i + 13]
            low_at = i + int(np.argmin(year_after.to_numpy()))
            assert year_after.min() <= 0.5 * before, (name, year, year_after.min() / before)
            recovered = total.iloc[low_at : i + 37].max()
            assert recovered >= 0.75 * before, (name, year, recovered / before)
    # El Niño lows of ~1–3 Mt in 1983 and 1998; usually ~6–12 Mt north-central.
    true = monthly["true"]
    for year in (1983, 1998):
        assert 0.8e6 <= true[true.index.year == year].min() <= 3.5e6
    oracle = read_table(fish_dir, "oracle")
    north_central = oracle[oracle["zone"] != "south"].groupby("month")["expected"].sum()
    assert 6e6 <= north_central.median() <= 12e6


# --- 2. Chlorophyll ----------------------------------------------------------------------------


def test_chlorophyll_high_in_upwelling_cells_and_low_in_warm_years(fish_tiny: Path) -> None:
    grid = gen.satellite_grid(Scale.TINY, TEST_SEED)
    cells = pd.DataFrame({"cell_id": grid.cell_id, "dist": grid.dist_km, "up": grid.upwelling})
    sat = read_table(fish_tiny, "satellite").merge(cells, on="cell_id")
    upwelling = sat[sat["up"] > 0.4]
    offshore = sat[sat["dist"] > 300]
    assert upwelling["cell_id"].nunique() >= 4
    ratio = upwelling["chlorophyll_mg_m3"].median() / offshore["chlorophyll_mg_m3"].median()
    assert ratio >= 5, ratio
    assert 0.05 <= offshore["chlorophyll_mg_m3"].median() <= 0.4
    # 1998 (El Niño): warm coast, less chlorophyll in the upwelling cells.
    year = pd.to_datetime(upwelling["date"]).dt.year
    chl_1998 = upwelling.loc[year == 1998, "chlorophyll_mg_m3"].median()
    chl_other = upwelling.loc[~year.isin([1997, 1998]), "chlorophyll_mg_m3"].median()
    assert chl_1998 < 0.85 * chl_other, (chl_1998, chl_other)
    early_1998 = pd.to_datetime(upwelling["date"]).between("1998-01-01", "1998-03-31")
    assert upwelling.loc[early_1998, "sst_anomaly_c"].mean() > 2.0
    clouded = sat["chlorophyll_mg_m3"].isna().mean()
    assert 0.03 <= clouded <= 0.2, clouded


# --- 3. Juveniles ------------------------------------------------------------------------------


def test_juveniles_rise_after_strong_el_nino(fish_dir: Path) -> None:
    surveys = _survey_juveniles(fish_dir)
    nino = _monthly(fish_dir)["nino"]
    bad = np.zeros(len(surveys), dtype=bool)
    for year in (1982, 1997):
        onset = _onset(nino, year)
        bad |= surveys["start"].between(onset, onset + pd.DateOffset(months=24)).to_numpy()
    # Normal: no month of +1 °C in the 18 months before the survey.
    warm_before = [
        (nino[(nino.index > s - pd.DateOffset(months=18)) & (nino.index <= s)] >= 1.0).any()
        for s in surveys["start"]
    ]
    normal = ~np.array(warm_before) & ~bad
    assert bad.sum() >= 4 and normal.sum() >= 12
    juv_bad = surveys["juvenile"][bad].mean()
    juv_normal = surveys["juvenile"][normal].mean()
    assert juv_normal < 0.08, juv_normal
    assert juv_bad >= 3 * juv_normal, (juv_bad, juv_normal)
    # The first summer survey after each collapse is full of young fish.
    assert surveys.loc[["1984-1", "1999-1"], "juvenile"].min() > 0.15
    assert surveys["length"][bad].mean() < surveys["length"][normal].mean() - 0.3
    # Adults are 12–16 cm in a normal survey.
    assert 12.5 <= surveys["length"][normal].median() <= 16.0


# --- 4. Fishing --------------------------------------------------------------------------------


def _seasons(monthly: pd.DataFrame) -> pd.DataFrame:
    """One row per fishing season: opening month, quota, landings."""
    df = monthly[monthly["season"] != "closed"].copy()
    df["season_year"] = df.index.year - (df.index.month == 1)
    seasons = df.groupby(["season_year", "season"]).agg(
        opening=("quota", lambda s: s.index.min()),
        quota=("quota", "first"),
        quotas=("quota", "nunique"),
        landed=("catch", "sum"),
    )
    return seasons.reset_index()


def test_fishing_seasons_quota_rule_and_landings(fish_dir: Path) -> None:
    monthly = _monthly(fish_dir)
    stock = read_table(fish_dir, "stock")
    month_num = pd.to_datetime(stock["month"]).dt.month
    expected_season = np.where(
        month_num.isin([4, 5, 6, 7]),
        "first",
        np.where(month_num.isin([11, 12, 1]), "second", "closed"),
    )
    assert (stock["season"].to_numpy() == expected_season).all()
    closed = stock["season"] == "closed"
    assert (stock.loc[closed, "catch_tonnes"] == 0).all()
    assert (stock.loc[closed, "season_quota_tonnes"] == 0).all()
    assert (stock.groupby("month")["season_quota_tonnes"].nunique() == 1).all()

    # Both seasons are fished in most years of the managed era.
    seasons = _seasons(monthly)
    seasons = seasons[seasons["opening"].dt.month.isin([4, 11])]  # complete seasons only
    assert (seasons["quotas"] == 1).all()
    assert (seasons["landed"] <= seasons["quota"]).all()
    managed = seasons[seasons["season_year"] > gen.BOOM_LAST_YEAR]
    for name in ("first", "second"):
        fished = (managed.loc[managed["season"] == name, "landed"] > 0).mean()
        assert fished >= 0.7, (name, fished)

    # The quota rule, from the assessment of the month before the opening (the survey).
    assert 0.3 <= gen.EXPLOITATION_RATE <= 0.4
    assert gen.SPAWNING_RESERVE_T == 5.0e6 and gen.JUVENILE_LIMIT == 0.10
    basis = monthly["assessed"].shift(1).reindex(seasons["opening"]).to_numpy()
    boom = seasons["season_year"].to_numpy() <= gen.BOOM_LAST_YEAR
    rule = np.where(
        boom,
        np.floor(gen.BOOM_EXPLOITATION_RATE * basis),
        np.floor(
            np.maximum(
                0.0,
                np.minimum(gen.EXPLOITATION_RATE * basis, basis - gen.SPAWNING_RESERVE_T),
            )
        ),
    )
    quota = seasons["quota"].to_numpy()
    follows = quota == rule
    cancelled = (quota == 0) & (rule > 0)
    assert (follows | cancelled).all()

    # Cancelled exactly when the season's survey finds more than 10 % juveniles.
    surveys = _survey_juveniles(fish_dir)
    number = np.where(seasons["season"] == "first", 1, 2)
    ids = [f"{y}-{n}" for y, n in zip(seasons["season_year"], number, strict=True)]
    juvenile = surveys["juvenile"].reindex(ids).to_numpy()
    surveyed = ~np.isnan(juvenile)
    assert surveyed.sum() >= 80
    clear = surveyed & (np.abs(juvenile - gen.JUVENILE_LIMIT) > 1e-3)
    too_young = clear & (juvenile > gen.JUVENILE_LIMIT)
    assert too_young.sum() >= 1
    assert (quota[too_young] == 0).all()
    assert (too_young | ~clear)[cancelled].all()

    # Landings: ~3–6 Mt in normal years of the managed era, heavy in the boom years.
    landings = monthly["catch"].groupby(monthly.index.year).sum()
    warm_max = monthly["nino"].groupby(monthly.index.year).max()
    normal = [y for y in range(1976, 2026) if warm_max[y] < 1.0 and warm_max[y - 1] < 1.5]
    assert len(normal) >= 12
    in_range = landings.loc[normal].between(3e6, 6e6).mean()
    assert 4e6 <= landings.loc[normal].median() <= 6e6
    assert in_range >= 0.75, in_range
    assert landings.loc[1960:1971].mean() >= 8e6


# --- 5. Difficulty -----------------------------------------------------------------------------


def test_oracle_mase_is_calibrated(fish_dir: Path) -> None:
    score = oracle_mase(fish_dir, "fish_stock")
    assert 0.50 <= score <= 0.70, score


def test_signals_relate_to_biomass(fish_tiny: Path) -> None:
    """Later models learn biomass from sonar and satellite: the signals must carry it."""
    sonar = read_table(fish_tiny, "sonar")
    stock = read_table(fish_tiny, "stock")
    stock["month"] = pd.to_datetime(stock["month"])
    # Echo integration: biomass = NASC × area × fish weight / backscatter per fish, summed over
    # a zone, is the survey month's assessment (March, October).
    layout = gen.SONAR_LAYOUTS[Scale.TINY]
    length = sonar["mean_length_cm"]
    sonar["tonnes"] = (
        sonar["nasc_m2_nmi2"]
        * layout.edsu_nmi
        * layout.spacing_nmi
        * gen.fish_weight_g(length)
        / gen.backscatter_m2(length)
        / 1e6
    )
    echo = sonar.groupby(["survey_id", "zone"], as_index=False)["tonnes"].sum()
    survey_month = np.where(echo["survey_id"].str.endswith("-1"), "-03-01", "-10-01")
    echo["month"] = pd.to_datetime(echo["survey_id"].str[:4] + survey_month)
    ratio = echo.merge(stock, on=["month", "zone"]).eval("tonnes / biomass_tonnes")
    assert len(ratio) == len(echo) == 3 * 2 * (2025 - 1983 + 1)
    assert ratio.between(0.99, 1.03).all(), ratio.describe()

    sonar["month"] = pd.to_datetime(sonar["date"]).dt.to_period("M").dt.to_timestamp()
    nasc = sonar.groupby(["survey_id", "zone"]).agg(
        nasc=("nasc_m2_nmi2", "mean"), month=("month", "min")
    )
    oracle = read_table(fish_tiny, "oracle")
    oracle["month"] = pd.to_datetime(oracle["month"])
    merged = nasc.reset_index().merge(oracle, on=["month", "zone"])
    corr = np.corrcoef(np.log(merged["nasc"]), np.log(merged["expected"]))[0, 1]
    assert corr >= 0.7, corr

    sat = read_table(fish_tiny, "satellite", ["date", "sst_anomaly_c"])
    sat_anom = sat.groupby("date")["sst_anomaly_c"].mean()
    nino = _monthly(fish_tiny)["nino"]
    sat_anom.index = pd.to_datetime(sat_anom.index)
    assert np.corrcoef(sat_anom, nino.reindex(sat_anom.index))[0, 1] >= 0.8


# --- 6. Determinism ----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_values(
    fish_tiny: Path, fish_other: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    get_use_case("fish_stock").generate(GeneratorConfig(seed=TEST_SEED, scale=Scale.TINY), again)
    for table in ("satellite", "sonar", "stock", "oracle"):
        name = f"{table}.parquet"
        assert (again / name).read_bytes() == (fish_tiny / name).read_bytes(), table
    for table, column in (
        ("stock", "biomass_tonnes"),
        ("satellite", "sst_c"),
        ("sonar", "nasc_m2_nmi2"),
    ):
        a = read_table(fish_tiny, table, [column])[column].to_numpy()
        b = read_table(fish_other, table, [column])[column].to_numpy()
        assert a.shape != b.shape or not np.array_equal(a, b), table


# --- 7. Schemas --------------------------------------------------------------------------------


def _check_schema(path: Path, schema: TableSchema) -> None:
    table = pq.read_table(path)
    assert table.schema.names == schema.column_names
    for field, expected in zip(table.schema, schema.arrow_schema(), strict=True):
        assert field.type == expected.type, field.name
    df = table.to_pandas()
    for col in schema.columns:
        values = df[col.name]
        assert values.isna().mean() <= col.max_null_share, col.name
        present = values.dropna()
        if col.allowed is not None:
            assert set(present) <= set(col.allowed), col.name
        if col.dtype == "date":
            present = pd.to_datetime(present)
            low, high = pd.Timestamp(col.min), pd.Timestamp(col.max)
        else:
            low, high = col.min, col.max
        if low is not None:
            assert present.min() >= low, col.name
        if high is not None:
            assert present.max() <= high, col.name
    assert not df.duplicated(list(schema.keys)).any(), schema.name


@pytest.mark.parametrize("schema", [SATELLITE, SONAR, STOCK, ORACLE], ids=lambda s: s.name)
def test_tables_conform_to_schema(fish_tiny: Path, schema: TableSchema) -> None:
    _check_schema(fish_tiny / f"{schema.name}.parquet", schema)


def test_every_table_written_and_counted(fish_tiny: Path) -> None:
    manifest = pd.read_json(fish_tiny / "manifest.json", typ="series")
    rows = manifest["rows"]
    assert set(rows) == {"satellite", "sonar", "stock", "oracle"}
    assert rows["stock"] == rows["oracle"] == 66 * 12 * 3  # 1960-01 .. 2025-12, 3 zones
    for table, count in rows.items():
        assert pq.ParquetFile(fish_tiny / f"{table}.parquet").metadata.num_rows == count
    sonar = read_table(fish_tiny, "sonar", ["survey_id", "date"])
    assert sonar["survey_id"].nunique() == 2 * (2025 - 1983 + 1)
    months = pd.to_datetime(sonar["date"]).dt.month
    first = sonar["survey_id"].str.endswith("-1")
    assert months[first].between(2, 4).all() and months[~first].between(8, 11).all()


# --- 8. Satellite cadence and size per scale ---------------------------------------------------


def test_satellite_cadence_tiny_is_monthly(fish_tiny: Path) -> None:
    sat = read_table(fish_tiny, "satellite", ["date", "cell_id"])
    dates = pd.DatetimeIndex(sorted(pd.to_datetime(sat["date"].unique())))
    expected = pd.date_range("1998-01-01", "2025-12-01", freq="MS")
    assert dates.equals(expected)
    per_cell = sat.groupby("cell_id").size()
    assert (per_cell == len(expected)).all()
    assert 60 <= len(per_cell) <= 150


@pytest.mark.parametrize(
    ("scale", "step_days", "first", "cells", "rows"),
    [
        (Scale.TINY, None, "1998-01-01", (60, 150), (20e3, 60e3)),
        (Scale.SMALL, 8, "1998-01-01", (500, 800), (0.6e6, 1.2e6)),
        (Scale.FULL, 1, "2006-01-01", (2500, 3500), (20e6, 25e6)),
    ],
)
def test_satellite_layout_per_scale(
    scale: Scale,
    step_days: int | None,
    first: str,
    cells: tuple[int, int],
    rows: tuple[float, float],
) -> None:
    starts, days = gen.satellite_dates(scale)
    assert starts[0] == np.datetime64(first) and starts[-1] <= np.datetime64("2025-12-31")
    assert starts[-1] + days[-1] == np.datetime64("2026-01-01")
    if step_days is not None:
        assert (np.diff(starts).astype(int) == step_days).all()
    grid = gen.satellite_grid(scale, TEST_SEED)
    assert cells[0] <= grid.size <= cells[1]
    assert len(np.unique(grid.cell_id)) == grid.size
    assert rows[0] <= grid.size * starts.size <= rows[1]
    # Zones follow latitude.
    assert set(np.unique(grid.zone)) == {0, 1, 2}
    assert (grid.lat[grid.zone == 0] > -9.0).all() and (grid.lat[grid.zone == 2] <= -13.7).all()
