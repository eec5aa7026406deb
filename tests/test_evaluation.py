"""Evaluation scores, goals, blessing and report against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perucast import evaluation_report
from perucast.blessing import BlessingConfig
from perucast.evaluation import (
    METRICS,
    bless,
    goals,
    score,
    scores_to_dict,
    series_scales,
)
from perucast.evaluation_report import write_report
from perucast.forecasts import forecast_columns

KEYS = ["region", "crop"]
NAN = float("nan")
SCALES = pd.DataFrame({"region": ["lima", "lima"], "crop": ["papa", "arroz"], "scale": [2.0, 4.0]})

# Two series (lima/papa with scale 2, lima/arroz with scale 4), origins 2020-01-06 and
# 2020-01-13, horizons 1 and 2. Network rows: (crop, origin, h, actual, p10, p50, p90) and, by
# hand, |actual − p50| / scale and whether actual is in [p10, p90]:
NETWORK = [
    ("papa", 0, 1, 10.0, 8.0, 9.0, 11.0),  # |e| 1 -> 0.5, in
    ("papa", 0, 2, 12.0, 9.0, 10.0, 11.0),  # |e| 2 -> 1.0, out (12 > 11)
    ("papa", 1, 1, 11.0, 9.0, 11.0, 13.0),  # |e| 0 -> 0.0, in
    ("papa", 1, 2, NAN, 9.0, 10.0, 12.0),  # actual unknown: not scored
    ("arroz", 0, 1, 20.0, 18.0, 22.0, 24.0),  # |e| 2 -> 0.5, in
    ("arroz", 0, 2, 20.0, 14.0, 16.0, 19.0),  # |e| 4 -> 1.0, out (20 > 19)
    ("arroz", 1, 1, 24.0, 20.0, 22.0, 26.0),  # |e| 2 -> 0.5, in
    ("arroz", 1, 2, 18.0, 16.0, 20.0, 22.0),  # |e| 2 -> 0.5, in
]
ORIGINS = pd.to_datetime(["2020-01-06", "2020-01-13"])


def _frame(rows, model: str) -> pd.DataFrame:
    records = []
    for crop, origin, h, actual, p10, p50, p90 in rows:
        o = ORIGINS[origin]
        records.append(
            {
                "origin": o,
                "region": "lima",
                "crop": crop,
                "horizon": h,
                "target_time": o + pd.Timedelta(weeks=h),
                "actual": actual,
                "p10": p10,
                "p50": p50,
                "p90": p90,
                "model": model,
            }
        )
    return pd.DataFrame(records, columns=forecast_columns(KEYS))


def _naive_rows():
    # Seasonal naive: p50 = actual + scale (every scaled error is 1), a ±1 interval that never
    # covers the actual.
    out = []
    for crop, origin, h, actual, *_ in NETWORK:
        p50 = (actual if not math.isnan(actual) else 10.0) + (2.0 if crop == "papa" else 4.0)
        out.append((crop, origin, h, actual, p50 - 1, p50, p50 + 1))
    return out


def _oracle_rows():
    # The oracle: the actual minus 1 at every point (p10 = p50 = p90).
    out = []
    for crop, origin, h, actual, *_ in NETWORK:
        e = (actual if not math.isnan(actual) else 10.0) - 1.0
        out.append((crop, origin, h, actual, e, e, e))
    return out


@pytest.fixture
def forecasts() -> pd.DataFrame:
    return pd.concat(
        [
            _frame(NETWORK, "network"),
            _frame(_naive_rows(), "seasonal_naive"),
            _frame(_oracle_rows(), "oracle"),
        ],
        ignore_index=True,
    )


def _row(scores: pd.DataFrame, model: str, group: str, value: str) -> pd.Series:
    sel = scores[
        (scores["model"] == model) & (scores["group"] == group) & (scores["group_value"] == value)
    ]
    assert len(sel) == 1, (model, group, value)
    return sel.iloc[0]


# ---------------------------------------------------------------------------------------------
# series_scales


def test_series_scales_sorts_by_time_and_marks_short_series() -> None:
    history = pd.DataFrame(
        {
            "week": pd.to_datetime(
                [
                    *("2020-01-20", "2020-01-06", "2020-01-13", "2020-01-27", "2020-02-03"),
                    *("2020-01-06", "2020-01-13"),
                ]
            ),
            "zone": ["n"] * 5 + ["s"] * 2,
            "y": [4.0, 1.0, 2.0, 6.0, 5.0, 1.0, 2.0],
        }
    )
    scales = series_scales(history, "week", ["zone"], "y", season_length=2)
    assert list(scales.columns) == ["zone", "scale"]
    # n in time order: 1, 2, 4, 6, 5; lag-2 differences 3, 4, 1 -> 8 / 3
    assert scales.loc[scales["zone"] == "n", "scale"].item() == pytest.approx(8 / 3)
    # s has 2 points, no more than one season: no scale
    assert math.isnan(scales.loc[scales["zone"] == "s", "scale"].item())


# ---------------------------------------------------------------------------------------------
# score


def test_overall_scores_by_hand(forecasts: pd.DataFrame) -> None:
    scores = score(forecasts, SCALES, KEYS)
    net = _row(scores, "network", "overall", "all")
    # 7 scored rows (one NaN actual). Scaled errors 0.5, 1, 0, 0.5, 1, 0.5, 0.5 -> 4 / 7
    assert net["n"] == 7
    assert net["mase"] == pytest.approx(4 / 7)
    # |e| = 1, 2, 0, 2, 4, 2, 2 -> squares sum 33
    assert net["rmse"] == pytest.approx(math.sqrt(33 / 7))
    # 2|e| / (|y| + |f|) per row
    terms = [2 / 19, 4 / 22, 0, 4 / 42, 8 / 36, 4 / 46, 4 / 38]
    assert net["smape"] == pytest.approx(100 * sum(terms) / 7)
    # Σ|y| = 115. Pinball sums: q=0.1 on y − p10 = 2,3,2,2,6,4,2 (all under): 0.1 · 21 = 2.1;
    # q=0.5: 0.5 · 13 = 6.5; q=0.9 on y − p90 = −1,1,−2,−4,1,−2,−4: 0.9 · 2 + 0.1 · 13 = 3.1.
    # wQL = mean(2 · [2.1, 6.5, 3.1] / 115) = 23.4 / 345
    assert net["wql"] == pytest.approx(23.4 / 345)
    assert net["coverage_80"] == pytest.approx(5 / 7)

    naive = _row(scores, "seasonal_naive", "overall", "all")
    assert naive["mase"] == pytest.approx(1.0)
    assert naive["coverage_80"] == 0.0
    assert naive["n"] == 7
    oracle = _row(scores, "oracle", "overall", "all")
    assert oracle["rmse"] == pytest.approx(1.0)
    # |e| = 1 everywhere: 1/2 for the 3 papa rows, 1/4 for the 4 arroz rows
    assert oracle["mase"] == pytest.approx((3 * 0.5 + 4 * 0.25) / 7)


def test_scores_by_horizon_and_segment(forecasts: pd.DataFrame) -> None:
    scores = score(forecasts, SCALES, KEYS)
    assert list(scores.columns) == ["model", "group", "group_value", *METRICS]
    assert list(dict.fromkeys(scores["model"])) == ["network", "seasonal_naive", "oracle"]
    net = scores[scores["model"] == "network"]
    assert list(net["group"]) == ["overall", "horizon", "horizon", "region", "crop", "crop"]
    assert list(net["group_value"]) == ["all", "1", "2", "lima", "arroz", "papa"]

    h1 = _row(scores, "network", "horizon", "1")
    # papa o1, papa o2, arroz o1, arroz o2: scaled 0.5, 0, 0.5, 0.5; |e| 1, 0, 2, 2; all in
    assert (h1["n"], h1["mase"], h1["rmse"], h1["coverage_80"]) == pytest.approx(
        (4, 1.5 / 4, 1.5, 1.0)
    )
    h2 = _row(scores, "network", "horizon", "2")
    # papa o1, arroz o1, arroz o2 (papa o2 unknown): scaled 1, 1, 0.5; |e| 2, 4, 2; 1 of 3 in
    assert (h2["n"], h2["mase"], h2["rmse"], h2["coverage_80"]) == pytest.approx(
        (3, 2.5 / 3, math.sqrt(8), 1 / 3)
    )
    papa = _row(scores, "network", "crop", "papa")
    assert (papa["n"], papa["mase"], papa["coverage_80"]) == pytest.approx((3, 0.5, 2 / 3))
    arroz = _row(scores, "network", "crop", "arroz")
    assert (arroz["n"], arroz["mase"], arroz["coverage_80"]) == pytest.approx((4, 0.625, 0.75))
    # One region: its row is the overall row.
    lima = _row(scores, "network", "region", "lima")
    overall = _row(scores, "network", "overall", "all")
    assert lima[list(METRICS)].tolist() == pytest.approx(overall[list(METRICS)].tolist())

    only_crop = score(forecasts, SCALES, KEYS, segments=["crop"])
    assert set(only_crop["group"]) == {"overall", "horizon", "crop"}


def test_scales_as_mapping_match_the_frame(forecasts: pd.DataFrame) -> None:
    from_frame = score(forecasts, SCALES, KEYS)
    from_mapping = score(forecasts, {("lima", "papa"): 2.0, ("lima", "arroz"): 4.0}, KEYS)
    pd.testing.assert_frame_equal(from_frame, from_mapping)


def test_nan_actuals_are_not_scored(forecasts: pd.DataFrame) -> None:
    # Wild quantiles on the NaN-actual row change nothing.
    wild = forecasts.copy()
    unknown = wild["actual"].isna()
    assert unknown.sum() == 3  # one row per model
    wild.loc[unknown, ["p10", "p50", "p90"]] = [1e9, 2e9, 3e9]
    pd.testing.assert_frame_equal(score(wild, SCALES, KEYS), score(forecasts, SCALES, KEYS))
    # All actuals unknown: n = 0 and NaN metrics.
    blind = forecasts.assign(actual=NAN)
    net = _row(score(blind, SCALES, KEYS), "network", "overall", "all")
    assert net["n"] == 0
    assert all(math.isnan(net[m]) for m in ("mase", "rmse", "smape", "wql", "coverage_80"))


def test_zero_or_missing_scale(forecasts: pd.DataFrame) -> None:
    # A flat history (scale 0) leaves the series out of MASE, not out of the other metrics.
    flat = SCALES.assign(scale=[0.0, 4.0])
    net = _row(score(forecasts, flat, KEYS), "network", "overall", "all")
    # arroz only: 0.5, 1, 0.5, 0.5
    assert net["mase"] == pytest.approx(0.625)
    assert net["n"] == 7
    with pytest.raises(ValueError, match="have no scale"):
        score(forecasts, SCALES.iloc[:1], KEYS)
    with pytest.raises(ValueError, match="segment columns"):
        score(forecasts, SCALES, KEYS, segments=["zone"])


def test_scores_to_dict_nests_and_nulls_nan(forecasts: pd.DataFrame) -> None:
    scores = score(forecasts.assign(actual=NAN), SCALES, KEYS)
    nested = scores_to_dict(scores)
    assert set(nested) == {"network", "seasonal_naive", "oracle"}
    assert set(nested["network"]) == {"overall", "horizon", "region", "crop"}
    assert nested["network"]["overall"] == {
        "mase": None,
        "rmse": None,
        "smape": None,
        "wql": None,
        "coverage_80": None,
        "n": 0,
    }
    nested = scores_to_dict(score(forecasts, SCALES, KEYS))
    assert nested["network"]["horizon"]["1"]["rmse"] == pytest.approx(1.5)
    assert nested["network"]["crop"]["papa"]["n"] == 3
    assert json.loads(json.dumps(nested, allow_nan=False)) == nested


# ---------------------------------------------------------------------------------------------
# goals and blessing


def _scores(overall: dict[str, dict[str, float]], horizon=None) -> pd.DataFrame:
    """A score table from overall (and per-horizon) metrics; unset metrics are NaN."""
    rows = []
    for model, metrics in overall.items():
        rows.append({"model": model, "group": "overall", "group_value": "all", **metrics})
    for model, by_h in (horizon or {}).items():
        for h, metrics in by_h.items():
            rows.append({"model": model, "group": "horizon", "group_value": str(h), **metrics})
    frame = pd.DataFrame(rows)
    for m in METRICS:
        if m not in frame:
            frame[m] = NAN
    frame["n"] = frame["n"].fillna(1).astype(int)
    return frame[["model", "group", "group_value", *METRICS]]


def _goal(result, name):
    return next(g for g in result if g.name == name)


def _table(
    net_mase=0.75,
    net_rmse_h1=5.0,
    coverage=0.8,
    net_wql=0.1,
    ets_wql=0.2,
    gbt_wql=0.3,
    oracle=True,
):
    overall = {
        "network": {"mase": net_mase, "coverage_80": coverage, "wql": net_wql},
        "seasonal_naive": {"mase": 1.0},
        "ets": {"wql": ets_wql},
        "gbt": {"wql": gbt_wql},
    }
    horizon = {
        "network": {1: {"rmse": net_rmse_h1, "coverage_80": 0.9}, 2: {"rmse": 6.0}},
    }
    if oracle:
        overall["oracle"] = {"rmse": 4.0}
        horizon["oracle"] = {1: {"rmse": 4.0}, 2: {"rmse": 4.0}}
    return _scores(overall, horizon)


def test_mase_goal_boundary() -> None:
    # bound 0.75 · 1.0 = 0.75: equal passes, just above fails
    g = _goal(goals(_table(net_mase=0.75), 0.75), "mase_vs_naive")
    assert (g.passed, g.value, g.bound) == (True, 0.75, 0.75)
    assert not _goal(goals(_table(net_mase=0.7501), 0.75), "mase_vs_naive").passed
    # fish stock's factor 0.80
    assert _goal(goals(_table(net_mase=0.8), 0.8), "mase_vs_naive").passed
    assert not _goal(goals(_table(net_mase=NAN), 0.8), "mase_vs_naive").passed


def test_rmse_goal_boundary_and_ratios() -> None:
    # bound 1.25 · 4 = 5
    g = _goal(goals(_table(net_rmse_h1=5.0), 0.75), "rmse_vs_oracle")
    assert (g.passed, g.value, g.bound) == (True, 5.0, 5.0)
    assert g.by_horizon == pytest.approx({1: 1.25, 2: 1.5})
    assert "h2 1.5" in g.detail
    assert not _goal(goals(_table(net_rmse_h1=5.01), 0.75), "rmse_vs_oracle").passed
    g = _goal(goals(_table(oracle=False), 0.75), "rmse_vs_oracle")
    assert g.passed is None
    assert g.status == "n/a"


@pytest.mark.parametrize(
    ("coverage", "passed"),
    [(0.75, True), (0.85, True), (0.8, True), (0.7499, False), (0.8501, False), (NAN, False)],
)
def test_coverage_goal_boundary(coverage, passed) -> None:
    g = _goal(goals(_table(coverage=coverage), 0.75), "coverage_80")
    assert g.passed is passed
    assert g.bound == (0.75, 0.85)
    assert g.by_horizon[1] == pytest.approx(0.9)


def test_wql_goal() -> None:
    g = _goal(goals(_table(net_wql=0.1, ets_wql=0.1001, gbt_wql=0.2), 0.75), "wql_vs_baselines")
    assert g.passed
    assert g.bound == pytest.approx(0.1001)
    # a tie is not better
    assert not _goal(goals(_table(net_wql=0.1, ets_wql=0.1), 0.75), "wql_vs_baselines").passed
    # ETS lower: (0.1 − 0.096) / 0.1 = 4.0%; GBT higher: (0.1 − 0.2) / 0.2 = −50%
    g = _goal(goals(_table(net_wql=0.1, ets_wql=0.096, gbt_wql=0.2), 0.75), "wql_vs_baselines")
    assert not g.passed
    assert g.gaps == pytest.approx({"ets": 0.04, "gbt": -0.5})
    assert "ETS wQL 0.096 is 4.0% lower than network 0.1" in g.detail
    assert "network wQL 0.1 is 50.0% lower than GBT 0.2" in g.detail


def test_goals_are_json_ready() -> None:
    result = goals(_table(coverage=NAN), 0.75)
    assert [g.name for g in result] == [
        "mase_vs_naive",
        "rmse_vs_oracle",
        "coverage_80",
        "wql_vs_baselines",
    ]
    dumped = json.dumps([g.to_dict() for g in result], allow_nan=False)
    coverage = json.loads(dumped)[2]
    assert coverage["value"] is None
    assert coverage["bound"] == [0.75, 0.85]
    assert coverage["status"] == "fail"
    with pytest.raises(ValueError, match="candidate"):
        goals(_table(), 0.75, candidate="missing")


def test_bless_uses_overall_scores() -> None:
    config = BlessingConfig(min_improvement_vs_naive=0.25, max_regression_vs_blessed=0.02)
    table = _scores(
        {
            "network": {"mase": 0.7},
            "seasonal_naive": {"mase": 1.0},
            "blessed": {"mase": 0.6},
        }
    )
    # first run: 0.7 ≤ 0.75 · 1.0
    first = bless(table, config)
    assert first.blessed
    assert "skipped" in first.reasons[1]
    # 0.7 > 1.02 · 0.6 = 0.612
    again = bless(table, config, blessed="blessed")
    assert not again.blessed
    assert "regression rule FAILED" in again.reasons[1]
    with pytest.raises(ValueError, match="blessed model 'served'"):
        bless(table, config, blessed="served")


# ---------------------------------------------------------------------------------------------
# report


def _history() -> pd.DataFrame:
    weeks = pd.date_range("2019-06-03", "2020-01-13", freq="W-MON")
    return pd.concat(
        [
            pd.DataFrame({"week_start": weeks, "region": "lima", "crop": c, "demand": v})
            for c, v in (("papa", 10.0 + np.sin(np.arange(len(weeks)))), ("arroz", 20.0))
        ],
        ignore_index=True,
    )


def _write(forecasts: pd.DataFrame, out: Path, title: str = "crop_demand <evaluation> & co"):
    scores = score(forecasts, SCALES, KEYS)
    result = goals(scores, 0.75)
    decision = bless(scores, BlessingConfig(min_improvement_vs_naive=0.25))
    write_report(
        out,
        scores,
        result,
        decision,
        forecasts,
        series_keys=KEYS,
        history=_history(),
        time_column="week_start",
        target="demand",
        title=title,
        context={"use case": "crop_demand", "note": "<script>alert(1)</script>"},
    )
    return scores, result, decision


def test_report_writes_every_file(forecasts: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "report"
    scores, result, decision = _write(forecasts, out)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {
        "metrics.json",
        "report.md",
        "report.html",
        "scores.csv",
        "by_horizon.csv",
        "by_horizon_wide.csv",
        "plots/fan_charts.png",
        "plots/error_by_horizon.png",
        "plots/coverage_by_horizon.png",
        "plots/wql_by_model.png",
    }
    for png in (out / "plots").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # metrics.json round-trips (strict JSON: no NaN)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"] == scores_to_dict(scores)
    assert metrics["goals"] == [g.to_dict() for g in result]
    assert metrics["blessing"] == decision.to_dict()
    assert metrics["context"]["use case"] == "crop_demand"
    assert metrics["goals_passed"] is False  # no ETS/GBT: the wQL goal is n/a
    json.dumps(metrics, allow_nan=False)
    assert metrics["scores"]["network"]["overall"]["mase"] == pytest.approx(4 / 7)

    # DVC plot tables
    long = pd.read_csv(out / "by_horizon.csv")
    assert list(long.columns) == ["horizon", "model", *METRICS]
    row = long[(long["model"] == "network") & (long["horizon"] == 1)].iloc[0]
    assert (row["mase"], row["rmse"], row["coverage_80"]) == pytest.approx((0.375, 1.5, 1.0))
    wide = pd.read_csv(out / "by_horizon_wide.csv")
    assert wide["horizon"].tolist() == [1, 2]
    assert wide["network_rmse"].tolist() == pytest.approx([1.5, math.sqrt(8)])
    assert wide["oracle_rmse"].tolist() == pytest.approx([1.0, 1.0])


def test_report_html_and_markdown(forecasts: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "report"
    _, result, _ = _write(forecasts, out)
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('src="data:image/png;base64,') == 4
    # text is escaped
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "crop_demand &lt;evaluation&gt; &amp; co" in page
    # the goals table, with pass/fail cells
    assert "<h2>Goals</h2>" in page
    for g in result:
        assert g.description.replace("&", "&amp;").replace("<", "&lt;") in page
    # MASE 4/7 ≤ 0.75 · 1 passes; coverage 5/7 = 71.4% is outside 75–85%
    assert _goal(result, "mase_vs_naive").passed
    assert not _goal(result, "coverage_80").passed
    assert '<td class="pass">PASS</td>' in page
    assert '<td class="fail">FAIL</td>' in page
    assert "71.4%" in page
    assert "Decision: BLESSED." in page

    md = (out / "report.md").read_text()
    assert "## Goals" in md
    assert "| 80% interval coverage in [75%, 85%] | 71.4% | 75%–85% | FAIL |" in md
    for name in ("fan_charts", "error_by_horizon", "coverage_by_horizon", "wql_by_model"):
        assert f"(plots/{name}.png)" in md
    assert "### MASE by horizon" in md
    assert "### MASE by crop" in md
    # by-horizon table: rows per horizon, a column per model
    assert "| horizon | network | seasonal_naive | oracle |" in md
    assert "| 1 | 0.375 | 1 | 0.375 |" in md


def test_report_directory_is_atomic(
    forecasts: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("plot failed")

    # A first report, then a failing rewrite: the first stays whole.
    out = tmp_path / "report"
    _write(forecasts, out, title="first")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(evaluation_report, "_plot_wql", boom)
    with pytest.raises(RuntimeError, match="plot failed"):
        _write(forecasts, out, title="second")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # A failing first write leaves no directory at all, and no temporary one.
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        _write(forecasts, fresh)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
