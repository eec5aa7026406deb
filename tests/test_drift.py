"""Drift statistics (`perucast/drift.py`): PSI, the tests, the flagging rule, drift over time.

Small cases are checked against arithmetic written out here; the flagging rule on realistic
sample sizes with a fixed seed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy.stats import chi2

from perucast.drift import (
    UNSEEN,
    DriftConfig,
    chisquare_test,
    drift_frame,
    drift_over_time,
    feature_drift,
    psi,
)

LEVELS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
DECILE_SHARES = [0.01, 0.04, 0.05, 0.15, 0.25, 0.25, 0.15, 0.05, 0.04, 0.01]


def _numeric_entry(values: np.ndarray) -> dict:
    """A statistics.json numeric entry, as the preprocess step writes it."""
    return {
        "count": len(values),
        "mean": float(values.mean()),
        "variance": float(values.var()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {str(q): float(np.quantile(values, q)) for q in LEVELS},
    }


def _stats(numeric: dict | None = None, categorical: dict | None = None) -> dict:
    return {"numeric": numeric or {}, "categorical": categorical or {}, "series": []}


# Edges 1..9 at the nine quantile levels; the training maximum is far above the last one.
TOY = _stats(
    numeric={
        "x": {
            "count": 1000,
            "mean": 5.0,
            "max": 100.0,
            "quantiles": {str(q): float(i + 1) for i, q in enumerate(LEVELS)},
        },
        "target_h1": {"count": 1000, "mean": 0.0, "max": 1.0, "quantiles": {"0.5": 0.0}},
    },
    categorical={"region": {"vocabulary": ["a", "b", "c"], "counts": {"a": 50, "b": 25, "c": 25}}},
)


def _in_bins(counts: list[int]) -> np.ndarray:
    """Values putting counts[i] in bin i of TOY's x: bin 0 is <= 1, bin i is (i, i + 1]."""
    return np.concatenate([np.full(c, float(i + 1)) for i, c in enumerate(counts)])


# --- the arithmetic ---------------------------------------------------------------------------


def test_psi_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.25 ln 2 + 0.25 ln 1.5
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)
    # An empty bin is floored at 1e-4: (1 - 0.9) ln(1/0.9) + (1e-4 - 0.1) ln(1e-4/0.1)
    assert psi([0.9, 0.1], [1.0, 0.0]) == pytest.approx(
        0.1 * math.log(1 / 0.9) + (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    )
    assert psi([0.9, 0.1], [1.0, 0.0]) == pytest.approx(0.700621, abs=1e-6)
    assert psi(DECILE_SHARES, DECILE_SHARES) == 0.0
    with pytest.raises(ValueError, match="bins"):
        psi([0.5, 0.5], [1.0])


def test_chisquare_by_hand() -> None:
    # Counts 30, 10, 10 against shares 1/2, 1/4, 1/4 of 50: expected 25, 12.5, 12.5;
    # 5²/25 + 2.5²/12.5 + 2.5²/12.5 = 1 + 0.5 + 0.5 = 2; with 2 df the p-value is e^(-2/2).
    statistic, p = chisquare_test([30, 10, 10], [0.5, 0.25, 0.25])
    assert statistic == pytest.approx(2.0)
    assert p == pytest.approx(math.exp(-1))
    # A bin empty in both is left out; one bin only: nothing to test.
    assert chisquare_test([30, 10, 10, 0], [0.5, 0.25, 0.25, 0.0]) == pytest.approx((2.0, p))
    assert chisquare_test([7, 0], [1.0, 0.0]) == (0.0, 1.0)


def test_numeric_bins_are_the_training_quantiles_and_their_shares() -> None:
    config = DriftConfig(min_rows=10)
    (matching,) = [
        d
        for d in feature_drift(
            TOY, pd.DataFrame({"x": _in_bins([1, 4, 5, 15, 25, 25, 15, 5, 4, 1])}), config=config
        )
        if d.feature == "x"
    ]
    assert matching.reference_shares == pytest.approx(DECILE_SHARES)
    assert matching.bins[:2] == ["<= 1", "(1, 2]"] and matching.bins[-1] == "> 9"
    # A value on an edge belongs to the bin that ends there: the counts match the shares.
    assert matching.current_shares == pytest.approx(DECILE_SHARES)
    assert (matching.psi, matching.statistic, matching.p_value) == pytest.approx((0, 0, 1))
    assert matching.test == "chisquare" and matching.status == "ok"

    # Move 10 of 100 from (4, 5] (expected 25) to > 9 (expected 1):
    # chi² = (15 - 25)²/25 + (11 - 1)²/1 = 4 + 100 = 104 with 9 df;
    # PSI = (0.15 - 0.25) ln(0.15/0.25) + (0.11 - 0.01) ln(0.11/0.01) = 0.05108 + 0.23979.
    current = pd.DataFrame({"x": _in_bins([1, 4, 5, 15, 15, 25, 15, 5, 4, 11])})
    moved = next(d for d in feature_drift(TOY, current, config=config) if d.feature == "x")
    assert moved.statistic == pytest.approx(104.0)
    assert moved.p_value == pytest.approx(chi2.sf(104.0, 9))
    assert moved.psi == pytest.approx(-0.1 * math.log(0.6) + 0.1 * math.log(11))
    assert moved.psi == pytest.approx(0.290872, abs=1e-6)
    assert moved.drifted and moved.status == "drifted"
    assert moved.current_mean == pytest.approx(current["x"].mean())
    assert moved.reference_mean == 5.0 and moved.n_reference == 1000 and moved.n_current == 100


def test_ks_against_the_reference_sample_by_hand() -> None:
    # Reference 1, 2, 3, 4 against served 3, 4, 5, 6: the ECDFs differ by 2/4 at 2, 3 and 4, so
    # D = 0.5. Exact p: of the C(8, 4) = 70 equally likely merge orders, the 2^4 = 16 that pair
    # the samples up step by step keep |i - j| <= 1 (D <= 1/4); P(D >= 0.5) = 54/70.
    sample = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    current = pd.DataFrame({"x": [3.0, 4.0, 5.0, 6.0]})
    (x,) = [
        d
        for d in feature_drift(
            TOY, current, reference_sample=sample, config=DriftConfig(min_rows=4)
        )
        if d.feature == "x"
    ]
    assert x.test == "ks_2samp" and x.n_reference_sample == 4
    assert x.statistic == pytest.approx(0.5)
    assert x.p_value == pytest.approx(54 / 70)
    assert not x.drifted


def test_repeated_quantiles_of_a_flag_merge_into_one_bin() -> None:
    # A 0/1 flag that is 1 in ~6 % of training rows: every quantile up to 0.9 is 0, then 1;
    # the bin <= 0 reaches level 0.9, and 1 is the maximum, so the bin (0, 1] holds the rest.
    stats = _stats(
        numeric={
            "flag": {
                "count": 100,
                "max": 1.0,
                "quantiles": {str(q): (0.0 if q <= 0.9 else 1.0) for q in LEVELS},
            }
        }
    )
    (flag,) = feature_drift(stats, pd.DataFrame({"flag": [0.0] * 94 + [1.0] * 6}))
    assert flag.bins == ["<= 0", "(0, 1]", "> 1"]
    assert flag.reference_shares == pytest.approx([0.9, 0.1, 0.0])
    assert flag.current_shares == pytest.approx([0.94, 0.06, 0.0])


# --- categorical ------------------------------------------------------------------------------


def test_categorical_shares_psi_and_chisquare_by_hand() -> None:
    current = pd.DataFrame({"region": ["a"] * 30 + ["b"] * 10 + ["c"] * 10})
    (region,) = [
        d
        for d in feature_drift(TOY, current, config=DriftConfig(min_rows=10))
        if d.kind == "categorical"
    ]
    assert region.bins == ["a", "b", "c", UNSEEN]
    assert region.reference_shares == pytest.approx([0.5, 0.25, 0.25, 0.0])
    assert region.current_shares == pytest.approx([0.6, 0.2, 0.2, 0.0])
    # PSI: 0.1 ln(0.6/0.5) + 2 × (-0.05) ln(0.2/0.25); the unseen bin is 1e-4 vs 1e-4: 0.
    assert region.psi == pytest.approx(0.1 * math.log(1.2) + 0.1 * math.log(1.25))
    assert (region.test, region.statistic) == ("chisquare", pytest.approx(2.0))
    assert region.p_value == pytest.approx(math.exp(-1))
    assert region.status == "ok" and region.n_reference == 100


def test_unseen_categories_are_counted_and_weigh_in() -> None:
    current = pd.DataFrame({"region": ["a"] * 25 + ["b"] * 10 + ["c"] * 10 + ["atlantis"] * 5})
    (region,) = [d for d in feature_drift(TOY, current) if d.kind == "categorical"]
    assert region.current_shares == pytest.approx([0.5, 0.2, 0.2, 0.1])
    # PSI: 2 × (-0.05) ln(0.8) + (0.1 - 1e-4) ln(0.1/1e-4) = 0.02231 + 0.69008
    assert region.psi == pytest.approx(0.1 * math.log(1.25) + (0.1 - 1e-4) * math.log(1000))
    assert region.p_value < 1e-6 and region.drifted


def test_integer_codes_match_the_vocabulary_whatever_their_dtype() -> None:
    stats = _stats(
        categorical={"holiday": {"vocabulary": [0, 1, 3], "counts": {"0": 80, "1": 10, "3": 10}}}
    )
    codes = pd.Series([0] * 40 + [1] * 5 + [3] * 4 + [7], dtype="Int64")
    for column in (codes, codes.astype(float), codes.astype(str)):
        (holiday,) = feature_drift(stats, pd.DataFrame({"holiday": column}))
        assert holiday.bins == ["0", "1", "3", UNSEEN]
        assert holiday.current_shares == pytest.approx([0.8, 0.1, 0.08, 0.02])


# --- the flagging rule at realistic sizes ------------------------------------------------------


@pytest.fixture(scope="module")
def realistic() -> tuple[dict, pd.DataFrame, np.random.Generator]:
    rng = np.random.default_rng(20260528)
    train = rng.normal(10.0, 2.0, 200_000)
    regions = np.array(["lima", "cusco", "piura", "puno", "ica"])
    stats = _stats(
        numeric={"demand": _numeric_entry(train)},
        categorical={
            "region": {
                "vocabulary": sorted(regions.tolist()),
                "counts": {r: 40_000 for r in regions},
            }
        },
    )
    sample = pd.DataFrame(
        {"demand": rng.choice(train, 2000, replace=False), "region": rng.choice(regions, 2000)}
    )
    return stats, sample, rng


@pytest.mark.parametrize("with_sample", [True, False], ids=["ks", "chisquare"])
def test_a_two_sd_shift_is_flagged_and_no_shift_is_not(realistic, with_sample: bool) -> None:
    stats, sample, _ = realistic
    rng = np.random.default_rng(7)
    current = pd.DataFrame(
        {
            "demand": rng.normal(10.0, 2.0, 1000),
            "shifted": rng.normal(14.0, 2.0, 1000),  # +2 sd
            "region": rng.choice(sorted(stats["categorical"]["region"]["vocabulary"]), 1000),
            "timestamp": pd.Timestamp("2026-05-01", tz="UTC"),
            "target_h1": 0.0,
        }
    )
    stats = {**stats, "numeric": {**stats["numeric"], "shifted": stats["numeric"]["demand"]}}
    reference = sample.assign(shifted=sample["demand"]) if with_sample else None
    drifts = {d.feature: d for d in feature_drift(stats, current, reference_sample=reference)}
    assert list(drifts) == ["region", "demand", "shifted"]  # no time, no targets
    test = "ks_2samp" if with_sample else "chisquare"
    assert drifts["demand"].test == drifts["shifted"].test == test
    # Unshifted: a small PSI. (With this seed the KS test rejects at 1 % by chance, p = 0.0099:
    # exactly what requiring a large PSI as well keeps from raising an alarm.)
    assert drifts["demand"].psi < 0.05 and drifts["region"].psi < 0.05
    assert drifts["demand"].status == "ok" and drifts["region"].status == "ok"
    assert drifts["shifted"].psi > 2.0 and drifts["shifted"].p_value < 1e-12
    assert drifts["shifted"].status == "drifted"
    table = drift_frame(list(drifts.values()))
    assert table["status"].tolist() == ["ok", "ok", "drifted"]


def test_a_tiny_shift_at_large_n_is_significant_but_not_flagged(realistic) -> None:
    stats, sample, _ = realistic
    rng = np.random.default_rng(8)
    current = pd.DataFrame({"demand": rng.normal(10.2, 2.0, 50_000)})  # +0.1 sd
    (demand,) = feature_drift(stats, current, reference_sample=sample)
    assert demand.p_value < 0.01  # the test sees it ...
    assert demand.psi < 0.05  # ... but the shift is small
    assert not demand.drifted and demand.status == "ok"


def test_a_categorical_share_shift_is_flagged(realistic) -> None:
    stats, _, _ = realistic
    rng = np.random.default_rng(9)
    # Lima takes 60 % instead of 20 %; the others share the rest.
    regions = rng.choice(
        ["lima", "cusco", "piura", "puno", "ica"], 1000, p=[0.6, 0.1, 0.1, 0.1, 0.1]
    )
    (region,) = feature_drift(stats, pd.DataFrame({"region": regions}))
    assert region.psi > 0.25 and region.p_value < 1e-12 and region.status == "drifted"
    assert region.current_shares[region.bins.index("lima")] == pytest.approx(0.6, abs=0.05)


def test_too_few_rows_is_insufficient_data_never_drifted(realistic) -> None:
    stats, sample, _ = realistic
    current = pd.DataFrame({"demand": np.full(49, 30.0), "region": ["atlantis"] * 49})
    for drift in feature_drift(stats, current, reference_sample=sample):
        assert drift.status == "insufficient data" and not drift.drifted
        assert drift.test is None and drift.p_value is None
        assert drift.n_current == 49 and drift.psi > 1  # reported, for what it is worth
    empty = feature_drift(stats, pd.DataFrame({"demand": [np.nan] * 3}))
    assert empty[0].n_current == 0 and empty[0].psi is None
    assert empty[0].status == "insufficient data"


def test_calendar_inputs_are_not_tested_and_period_inputs_are_tested_per_period(realistic):
    """A week's Niño value repeats for every series: 4 weeks are 4 observations, not 1300."""
    stats, sample, _ = realistic
    stats = {
        **stats,
        "numeric": {
            **stats["numeric"],
            "nino": stats["numeric"]["demand"],
            "week_sin": stats["numeric"]["demand"],
        },
    }
    sample = sample.assign(nino=sample["demand"], week_sin=sample["demand"])
    weeks = np.repeat([9.8, 10.1, 10.4, 10.6], 325)  # 4 ordinary weeks, 325 series each
    ordinary = pd.DataFrame({"nino": weeks, "week_sin": weeks, "demand": 10.0 + 0.0 * weeks})
    kwargs = {"reference_sample": sample, "exempt": ("week_*",), "period_inputs": ("nino*",)}
    drifts = {d.feature: d for d in feature_drift(stats, ordinary, **kwargs)}
    assert "week_sin" not in drifts  # calendar: exempt
    nino = drifts["nino"]
    assert nino.unit == "period" and nino.n_periods == 4 and nino.n_current == 1300
    assert nino.test == "ks_2samp"
    # The 4 weeks' values against the sample's distinct values: all four lie near the middle
    # of N(10, 2), which 4 observations cannot tell from the training distribution.
    from scipy.stats import ks_2samp

    four = np.array([9.8, 10.1, 10.4, 10.6], dtype=np.float32).astype(np.float64)
    reference = np.unique(sample["nino"].to_numpy().astype(np.float32).astype(np.float64))
    expected = ks_2samp(reference, four)
    assert nino.statistic == pytest.approx(expected.statistic)
    assert nino.p_value == pytest.approx(expected.pvalue) and nino.p_value > 0.01
    assert not nino.drifted
    # Per instance the same rows would look like overwhelming evidence (1300 "observations").
    instance = {d.feature: d for d in feature_drift(stats, ordinary, reference_sample=sample)}
    assert instance["nino"].unit == "instance" and instance["nino"].p_value < 1e-12
    # An El Niño: the same weeks 3 sd warmer is flagged per period.
    warm = ordinary.assign(nino=ordinary["nino"] + 6.0)
    nino = {d.feature: d for d in feature_drift(stats, warm, **kwargs)}["nino"]
    assert nino.drifted and nino.p_value < 0.01 and nino.psi > 0.25
    # Fewer distinct values than min_periods: reported, not tested.
    two = pd.DataFrame({"nino": np.repeat([16.0, 16.5], 325)})
    (short,) = feature_drift(stats, two, **kwargs)
    assert short.status == "insufficient data" and short.n_periods == 2 and not short.drifted


def test_values_compare_at_float32_precision_and_ties_take_the_samples_shares(realistic):
    """Served inputs are float32; a flag's 0/1 ties make its quantile shares estimates."""
    stats, _, _ = realistic
    rng = np.random.default_rng(11)
    train = np.round(rng.uniform(0, 1, 10_000) * 10) / 10 * 0.1  # 11 values 0.00..0.10: ties
    stats = {**stats, "numeric": {"share": _numeric_entry(train)}}
    sample = pd.DataFrame({"share": rng.choice(train, 2000, replace=False)})
    served = pd.DataFrame({"share": rng.choice(train, 1000).astype(np.float32)})  # unchanged
    (share,) = feature_drift(stats, served, reference_sample=sample)
    # Without float32 rounding 0.07 (float64) != 0.07 (float32) and KS rejects everything.
    assert share.p_value > 0.01 and not share.drifted
    assert share.psi < 0.05  # shares from the sample: no estimation error from the ties
    # The first bin is "<= 0": its expected share is the sample's share of zeros, measured.
    zeros = float((sample["share"] == 0).mean())
    assert share.bins[0] == "<= 0" and share.reference_shares[0] == pytest.approx(zeros)


def test_config_is_strict() -> None:
    assert DriftConfig() == DriftConfig(
        psi_threshold=0.25, p_value=0.01, min_rows=50, min_periods=3
    )
    with pytest.raises(ValidationError, match="Extra inputs"):
        DriftConfig(psi_treshold=0.2)
    with pytest.raises(ValidationError):
        DriftConfig(p_value=1.5)


# --- over time --------------------------------------------------------------------------------


def test_psi_per_day_shows_when_the_shift_started(realistic) -> None:
    stats, _, _ = realistic
    rng = np.random.default_rng(10)
    day = pd.Timestamp("2026-05-01", tz="UTC")
    parts = [
        pd.DataFrame({"timestamp": day + pd.Timedelta(hours=1), "demand": rng.normal(10, 2, 400)}),
        pd.DataFrame(
            {"timestamp": day + pd.Timedelta(days=1, hours=5), "demand": rng.normal(14, 2, 400)}
        ),
        # 2026-05-03 has no requests; 2026-05-04 too few.
        pd.DataFrame({"timestamp": day + pd.Timedelta(days=3), "demand": rng.normal(10, 2, 10)}),
    ]
    over = drift_over_time(stats, pd.concat(parts, ignore_index=True), freq="D")
    assert list(over.columns) == ["bucket", "feature", "kind", "n", "psi", "high"]
    assert over["bucket"].tolist() == [day + pd.Timedelta(days=i) for i in range(4)]
    assert over["n"].tolist() == [400, 400, 0, 10]
    assert over["psi"].iloc[0] < 0.05 and over["psi"].iloc[1] > 2.0
    assert over["psi"].iloc[2:].isna().all()
    assert over["high"].tolist() == [False, True, False, False]
    assert drift_over_time(stats, pd.DataFrame({"timestamp": [], "x": []})).empty
