"""Forecast baselines: seasonal naive, ETS and Spark GBT, on hand-made series and tiny data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from models import get_use_case
from models.base import FeatureSpec
from perucast import baselines as B
from perucast.datasets import read_table
from perucast.forecasts import check_forecast_frame
from perucast.metrics import interval_coverage

CROP = get_use_case("crop_demand")
FISH = get_use_case("fish_stock")


def _spec(features_dir: Path, use_case) -> FeatureSpec:
    return use_case.feature_spec(json.loads((features_dir / "split.json").read_text())["horizon"])


# ---------------------------------------------------------------------------------------------
# A synthetic monthly data set in the preprocess layout (split.json, statistics.json, features/)
# ---------------------------------------------------------------------------------------------

SYN_SPEC = FeatureSpec(
    time_column="month",
    series_keys=("site",),
    period="MS",
    horizon=3,
    target="y",
    categorical=("site",),
    numeric=("y",),
)
SYN_M = 12


def _synthetic_series() -> pd.DataFrame:
    """20 years monthly: ``flat`` = level + season (tiny noise), ``walk`` = random walk + season."""
    rng = np.random.default_rng(3)
    months = pd.date_range("2000-01-01", periods=240, freq="MS")
    season = 10 * np.sin(2 * np.pi * (months.month.to_numpy() - 1) / 12)
    flat = 100 + season + rng.normal(0, 0.05, months.size)
    walk = 500 + np.cumsum(rng.normal(0, 3, months.size)) + 5 * season
    return pd.concat(
        [
            pd.DataFrame({"month": months, "site": name, "y": values})
            for name, values in (("flat", flat), ("walk", walk))
        ],
        ignore_index=True,
    )


def _write_dataset(root: Path, series: pd.DataFrame, spec: FeatureSpec) -> Path:
    """Origins with targets, split train | gap | validation | gap | test | inference (gaps H)."""
    t, H = spec.time_column, spec.horizon
    parts = []
    for _, one in series.groupby("site"):
        one = one.sort_values(t).reset_index(drop=True)
        for h in range(1, H + 1):
            one[f"target_h{h}"] = one[spec.target].shift(-h)
        parts.append(one)
    rows = pd.concat(parts, ignore_index=True)
    times = np.sort(rows[t].unique())
    n = len(times) - H  # origins with every target
    bounds = {"train": (0, 150), "validation": (150 + H, 180 + H), "test": (180 + 2 * H, n)}
    split = pd.Series(pd.NA, index=rows.index, dtype="object")
    for name, (lo, hi) in bounds.items():
        split[rows[t].isin(times[lo:hi])] = name
    split[rows[t].isin(times[n:])] = "inference"
    rows["split"] = split
    rows = rows.dropna(subset=["split"])
    for name, part in rows.groupby("split"):
        out = root / "features" / f"split={name}"
        out.mkdir(parents=True)
        part.drop(columns="split").assign(**{t: part[t].dt.date}).to_parquet(out / "p.parquet")
    train = rows[rows["split"] == "train"]
    by_series = train.groupby("site")[spec.target].agg(["mean", "std", "count"])
    (root / "statistics.json").write_text(
        json.dumps(
            {
                "numeric": {spec.target: {"min": float(train[spec.target].min())}},
                "series": [
                    {
                        "site": k,
                        "target_mean": r["mean"],
                        "target_std": r["std"],
                        "rows": r["count"],
                    }
                    for k, r in by_series.iterrows()
                ],
            }
        )
    )
    splits = {
        name: {
            "first": str(rows.loc[rows["split"] == name, t].min().date()),
            "last": str(rows.loc[rows["split"] == name, t].max().date()),
            "origins": int(rows.loc[rows["split"] == name, t].nunique()),
        }
        for name in ("train", "validation", "test", "inference")
    }
    (root / "split.json").write_text(
        json.dumps(
            {
                "time_column": t,
                "period": spec.period,
                "horizon": H,
                "gap_periods": H,
                "splits": splits,
            }
        )
    )
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    series = _synthetic_series()
    return _write_dataset(tmp_path_factory.mktemp("synthetic"), series, SYN_SPEC), series


# ---------------------------------------------------------------------------------------------
# Config and small helpers
# ---------------------------------------------------------------------------------------------


def test_config_is_strict_and_frozen():
    config = B.BaselineConfig(stride=4)
    assert config.stride == 4 and config.gbt_max_iter == 20
    with pytest.raises(ValidationError):
        B.BaselineConfig(strid=4)
    with pytest.raises(ValidationError):
        B.BaselineConfig(stride=0)
    with pytest.raises(ValidationError):
        config.stride = 2


def test_season_position_is_the_calendar_position():
    months = pd.date_range("2001-01-01", periods=24, freq="MS")
    assert B.calendar_position(months, 12).tolist() == list(range(12)) * 2
    weeks = pd.date_range("2000-01-03", periods=52 * 30, freq="W-MON")
    pos = B.calendar_position(weeks, 52)
    assert pos.min() == 0 and pos.max() == 51
    # Calendar-aligned: the first Monday of January is in position 0 or 1 in every year.
    january = pos[(weeks.month == 1) & (weeks.day <= 7)]
    assert set(january) <= {0, 1}


def test_horizon_families_find_per_horizon_columns():
    spec = CROP.feature_spec(3)
    assert B.horizon_families(spec) == {
        "fut_holiday": ["fut_holiday_h1", "fut_holiday_h2", "fut_holiday_h3"]
    }
    assert B.horizon_families(FISH.feature_spec(6)) == {}


# ---------------------------------------------------------------------------------------------
# Series reconstruction and origins
# ---------------------------------------------------------------------------------------------


def test_load_series_fills_the_gaps_from_targets(synthetic):
    root, truth = synthetic
    series = B.load_series(root, SYN_SPEC)
    merged = series.merge(truth, on=["site", "month"], suffixes=("", "_true"))
    assert len(merged) == len(series) == len(truth)  # every month, none invented
    np.testing.assert_allclose(merged["y"], merged["y_true"])
    # Two gaps of H months per series come from the targets of the row before them.
    assert (series["split"] == B.GAP).sum() == 2 * 2 * SYN_SPEC.horizon


def test_load_series_tiny_crop_has_no_holes(crop_features):
    spec = _spec(crop_features, CROP)
    series = B.load_series(crop_features, spec)
    steps = series.groupby(["region", "crop"])["week_start"].diff().dropna()
    assert (steps == pd.Timedelta(days=7)).all()
    assert (series["split"] == B.GAP).sum() > 0


def test_backtest_origins_stride(crop_features):
    spec = _spec(crop_features, CROP)
    info = B.read_split_info(crop_features, spec)
    every = B.backtest_origins(crop_features, spec)
    strided = B.backtest_origins(crop_features, spec, stride=4)
    times = np.sort(strided["week_start"].unique())
    assert str(pd.Timestamp(times[0]).date()) == info["splits"]["test"]["first"]
    assert (np.diff(times) == np.timedelta64(28, "D")).all()
    assert every["week_start"].nunique() == info["splits"]["test"]["origins"]
    assert len(strided) == len(times) * every.groupby(["region", "crop"]).ngroups
    assert list(strided.columns) == ["week_start", "region", "crop", *spec.target_columns]


# ---------------------------------------------------------------------------------------------
# Seasonal naive
# ---------------------------------------------------------------------------------------------


def test_seasonal_naive_points_by_hand():
    values = np.arange(20, dtype=float)[None, :]
    keys = pd.DataFrame({"k": ["a"]})
    panel = B.SeriesPanel(keys, pd.date_range("2000-01-01", periods=20, freq="MS"), values)
    rows, cols = np.array([0]), np.array([10])
    point, filled = B.seasonal_naive_points(panel, rows, cols, horizon=6, season_length=4)
    # h <= m: t + h - m; m < h <= 2m: t + h - 2m.
    assert point[0].tolist() == [7, 8, 9, 10, 7, 8] and filled == 0
    back, _ = B.seasonal_naive_points(panel, rows, cols, 6, 4, seasons_back=1)
    assert back[0].tolist() == [3, 4, 5, 6, 3, 4]
    # A missing lag takes the last value before it, never a later one.
    values[0, 8] = np.nan
    point, filled = B.seasonal_naive_points(panel, rows, cols, 6, 4)
    assert point[0].tolist() == [7, 7, 9, 10, 7, 7] and filled == 2
    # No history that far back: NaN.
    point, _ = B.seasonal_naive_points(panel, rows, np.array([1]), 2, 4)
    assert np.isnan(point).all()


def test_seasonal_naive_matches_raw_demand(crop_features, crop_tiny):
    spec = _spec(crop_features, CROP)
    origins = B.backtest_origins(crop_features, spec)
    frame = B.seasonal_naive(crop_features, spec, origins, season_length=52)
    check_forecast_frame(frame, spec.series_keys)
    raw = read_table(
        crop_tiny, "historical_demand", ["week_start", "region", "crop", "demand_tonnes"]
    )
    raw["week_start"] = pd.to_datetime(raw["week_start"])
    one = frame[(frame["region"] == "lima") & (frame["origin"] == frame["origin"].max())]
    crop = one["crop"].iloc[0]
    one = one[one["crop"] == crop]
    lag = one["target_time"] - pd.Timedelta(weeks=52)
    history = raw[(raw["region"] == "lima") & (raw["crop"] == crop)].set_index("week_start")
    expected = history["demand_tonnes"].reindex(lag).to_numpy()
    assert len(one) == spec.horizon and np.isfinite(expected).sum() >= spec.horizon - 1
    ok = np.isfinite(expected)
    np.testing.assert_allclose(one["p50"].to_numpy()[ok], expected[ok])
    observed = history["demand_tonnes"].reindex(one["target_time"]).to_numpy()
    np.testing.assert_allclose(one["actual"].to_numpy(), observed)


def test_seasonal_naive_interval_is_calibrated_on_train(crop_features):
    spec = _spec(crop_features, CROP)
    train = B.backtest_origins(crop_features, spec, split="train")
    frame = B.seasonal_naive(crop_features, spec, train, season_length=52)
    # Rows without a full season of history use the last value; the rest define the quantiles.
    scored = frame[frame["target_time"] - pd.Timedelta(weeks=52) >= frame["origin"].min()]
    coverage = interval_coverage(scored["actual"], scored["p10"], scored["p90"])
    assert coverage == pytest.approx(0.8, abs=0.01)
    for _, part in scored.groupby("horizon"):
        assert interval_coverage(part["actual"], part["p10"], part["p90"]) == pytest.approx(
            0.8, abs=0.02
        )
    assert (frame["p10"] <= frame["p50"]).all() and (frame["p50"] <= frame["p90"]).all()


# ---------------------------------------------------------------------------------------------
# ETS
# ---------------------------------------------------------------------------------------------


def test_ets_recursion_and_intervals_match_statsmodels():
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    rng = np.random.default_rng(0)
    y = 50 + np.cumsum(rng.normal(0.2, 1.0, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ETSModel(pd.Series(y), error="add", trend="add", damped_trend=True).fit(disp=False)
    alpha, beta, phi, level0, trend0 = np.asarray(result.params)
    level, trend = B.ets_filter(
        y[None, :], np.array([0]), *(np.array([v]) for v in (level0, trend0, alpha, beta, phi)), 199
    )
    damp, sd = B.ets_moments(alpha, beta, phi, result.mse, 6)
    mean = level[0, -1] + damp[0] * trend[0, -1]
    summary = result.get_prediction(200, 205).summary_frame(alpha=0.2)
    np.testing.assert_allclose(mean, summary["mean"], rtol=1e-9)
    np.testing.assert_allclose(mean + B.Z_UPPER * sd[0], summary["pi_upper"], rtol=1e-9)
    np.testing.assert_allclose(mean - B.Z_UPPER * sd[0], summary["pi_lower"], rtol=1e-9)


def test_ets_forecasts_a_seasonal_series_and_widens(synthetic):
    root, _ = synthetic
    origins = B.backtest_origins(root, SYN_SPEC)
    frame = B.ets(root, SYN_SPEC, origins, season_length=SYN_M)
    check_forecast_frame(frame, SYN_SPEC.series_keys)
    flat = frame[frame["site"] == "flat"]
    # Level + season with 0.05 noise: forecast within 0.5 % of the truth at every horizon.
    assert np.max(np.abs(flat["p50"] / flat["actual"] - 1)) < 0.005
    # Relative width: modelled on log(1 + y), the width scales with the seasonal level.
    relative = frame.assign(w=(frame["p90"] - frame["p10"]) / frame["p50"])
    width = relative.groupby(["site", "horizon"])["w"].mean()
    walk = width["walk"].to_numpy()
    assert np.all(np.diff(walk) > 0) and walk[-1] > 1.3 * walk[0]
    # The near-deterministic series gets a tight interval (its level never moves: α ≈ 0).
    assert width["flat"].max() < 0.01
    # The random walk's 80 % interval covers about 80 %.
    part = frame[frame["site"] == "walk"]
    assert 0.6 <= interval_coverage(part["actual"], part["p10"], part["p90"]) <= 0.97


# ---------------------------------------------------------------------------------------------
# All baselines on the same origins (tiny data)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crop_frames(spark, crop_features):
    spec = _spec(crop_features, CROP)
    config = B.BaselineConfig(stride=4, gbt_max_iter=5, gbt_max_depth=3)
    frames = B.run_baselines(spark, crop_features, spec, season_length=52, config=config)
    origins = B.backtest_origins(crop_features, spec, stride=4)
    return spec, origins, frames


def test_frames_share_origins_and_actuals(crop_frames):
    spec, origins, frames = crop_frames
    assert set(frames) == {"seasonal_naive", "ets", "gbt"}
    keys = ["origin", *spec.series_keys, "horizon"]
    reference = None
    expected = origins[spec.target_columns].to_numpy().reshape(-1)
    for name, frame in frames.items():
        frame = check_forecast_frame(frame, spec.series_keys)
        assert (frame["model"] == name).all()
        assert len(frame) == len(origins) * spec.horizon
        index = frame[keys].sort_values(keys).reset_index(drop=True)
        if reference is None:
            reference = index
        pd.testing.assert_frame_equal(index, reference)
        # Rows are origin-major, horizons inside: actuals are the target_h* values.
        np.testing.assert_allclose(frame["actual"].to_numpy(), expected)
        assert (frame["p10"] <= frame["p50"]).all() and (frame["p50"] <= frame["p90"]).all()


def test_gbt_beats_a_constant_forecast(crop_frames, crop_features):
    spec, _, frames = crop_frames
    frame = frames["gbt"]
    scales = B.series_target_stats(crop_features, spec)
    constant = frame.merge(scales, on=list(spec.series_keys))["target_mean"].to_numpy()
    error = np.mean(np.abs(frame["p50"] - frame["actual"]))
    assert error < 0.6 * np.mean(np.abs(constant - frame["actual"]))
    coverage = interval_coverage(frame["actual"], frame["p10"], frame["p90"])
    assert 0.6 <= coverage <= 0.95


def test_ets_beats_seasonal_naive_on_tiny_crop(crop_frames):
    _, _, frames = crop_frames
    mae = {n: np.mean(np.abs(f["p50"] - f["actual"])) for n, f in frames.items()}
    assert mae["ets"] < mae["seasonal_naive"]


def test_fish_baselines(fish_features):
    spec = _spec(fish_features, FISH)
    origins = B.backtest_origins(fish_features, spec)
    naive = B.seasonal_naive(fish_features, spec, origins, season_length=12)
    smoothed = B.ets(fish_features, spec, origins, season_length=12)
    for frame in (naive, smoothed):
        check_forecast_frame(frame, spec.series_keys)
        assert len(frame) == len(origins) * spec.horizon
        assert (frame["p10"] >= 0).all()
    # H = 6 <= 12: the median is the biomass of the target month a year earlier.
    series = B.load_series(fish_features, spec).set_index(["zone", "month"])["biomass_tonnes"]
    lagged = pd.MultiIndex.from_arrays(
        [naive["zone"], naive["target_time"] - pd.DateOffset(months=12)]
    )
    np.testing.assert_allclose(naive["p50"], series.reindex(lagged).to_numpy())
