"""The evaluate step end to end on tiny data: a real SavedModel, real baselines (statsmodels,
Spark ML), the oracle, the blessing against a served model, the report and the advice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from factories import tool_env

from components.evaluate import EvaluateConfig, evaluate
from components.train import TrainConfig, train
from perucast.baselines import BaselineConfig
from perucast.blessing import BlessingConfig
from perucast.forecasts import check_forecast_frame


@pytest.fixture(scope="module")
def fish_models(fish_features, tmp_path_factory):
    """Two versions: 1 trained properly, 2 barely trained (one epoch at a tiny learning rate)."""
    root = tmp_path_factory.mktemp("fish-models")
    common = dict(use_case="fish_stock", features_dir=fish_features, model_repository=root / "repo")
    good = train(
        TrainConfig(**common, output_dir=root / "good", epochs=40, patience=40, batch_size=64)
    )
    bad = train(
        TrainConfig(**common, output_dir=root / "bad", epochs=1, batch_size=64, learning_rate=1e-6)
    )
    return good.version_dir, bad.version_dir


@pytest.fixture(scope="module")
def evaluated(fish_models, fish_features, fish_tiny, spark, tmp_path_factory):
    good, _ = fish_models
    out = tmp_path_factory.mktemp("fish-eval") / "evaluation"
    result = evaluate(
        EvaluateConfig(
            use_case="fish_stock",
            features_dir=fish_features,
            model_dir=good,
            output_dir=out,
            raw_dir=fish_tiny,
            baseline_config=BaselineConfig(gbt_max_iter=10),
        ),
        spark,
    )
    return result, out


def test_every_forecaster_is_scored_on_the_same_origins(evaluated):
    _, out = evaluated
    forecasts = pd.read_parquet(out / "forecasts.parquet")
    check_forecast_frame(forecasts, ["zone"])
    models = set(forecasts["model"])
    assert models == {"network", "seasonal_naive", "ets", "gbt", "oracle"}
    key = ["origin", "zone", "horizon"]
    reference = forecasts[forecasts["model"] == "network"][key].sort_values(key)
    for model in models:
        rows = forecasts[forecasts["model"] == model][key].sort_values(key)
        assert rows.to_numpy().tolist() == reference.to_numpy().tolist(), model
    # The oracle's "forecast" is the expected value: one value, no interval.
    oracle = forecasts[forecasts["model"] == "oracle"]
    assert (oracle["p10"] == oracle["p90"]).all()
    # The same actual for every model at one (origin, zone, horizon).
    spread = forecasts.groupby(key)["actual"].nunique()
    assert (spread == 1).all()


def test_metrics_json_holds_headline_numbers_that_match_the_forecasts(evaluated):
    result, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"blessed", "goals_passed", "network", "seasonal_naive", "oracle"}
    forecasts = pd.read_parquet(out / "forecasts.parquet")
    net = forecasts[(forecasts["model"] == "network") & forecasts["actual"].notna()]
    rmse = float(np.sqrt(np.mean((net["actual"] - net["p50"]) ** 2)))
    assert metrics["network"]["rmse"] == pytest.approx(rmse, rel=1e-5)
    inside = ((net["actual"] >= net["p10"]) & (net["actual"] <= net["p90"])).mean()
    assert metrics["network"]["coverage_80"] == pytest.approx(inside, abs=1e-6)
    # A trained network beats seasonal naive on this persistent series.
    assert metrics["network"]["mase"] < metrics["seasonal_naive"]["mase"]
    assert result.headline["network"]["mase"] == pytest.approx(metrics["network"]["mase"])


def test_report_and_advice_are_written(evaluated):
    _, out = evaluated
    report = out / "report"
    for name in ("report.md", "report.html", "metrics.json", "by_horizon_wide.csv"):
        assert (report / name).stat().st_size > 0, name
    assert "data:image/png;base64," in (report / "report.html").read_text()
    # Scores per horizon and per segment (the zone) for every model.
    scores = json.loads((report / "metrics.json").read_text())["scores"]
    assert sorted(scores["network"]["zone"]) == ["centre", "north", "south"]
    assert sorted(scores["network"]["horizon"], key=int) == [str(h) for h in range(1, 7)]
    advice = pd.read_csv(out / "advice.csv")
    assert sorted(advice["zone"]) == ["centre", "north", "south"]
    assert ((advice["prob_below_limit"] >= 0) & (advice["prob_below_limit"] <= 1)).all()
    assert (advice["quota_t"] >= 0).all()
    # The advice is for a season opening month when one falls within the horizon.
    months = pd.DatetimeIndex(pd.to_datetime(advice["target_time"])).month
    assert set(months) <= {4, 11} or (advice["horizon"] == advice["horizon"].max()).all()
    blessing = json.loads((out / "blessing.json").read_text())
    assert "blessed" in blessing and blessing["reasons"]


def test_a_worse_candidate_is_not_blessed_over_the_served_model(
    fish_models, fish_features, tmp_path, spark
):
    good, bad = fish_models
    result = evaluate(
        EvaluateConfig(
            use_case="fish_stock",
            features_dir=fish_features,
            model_dir=bad,
            blessed_model_dir=good,
            output_dir=tmp_path / "eval",
            baselines=("seasonal_naive",),
            blessing=BlessingConfig(min_improvement_vs_naive=0.0, max_regression_vs_blessed=0.02),
        ),
        spark,
    )
    assert not result.blessed
    blessing = json.loads((tmp_path / "eval" / "blessing.json").read_text())
    assert any("regression" in reason for reason in blessing["reasons"]), blessing
    assert result.headline["network"]["mase"] > result.headline["blessed"]["mase"]


def test_cli_names_a_missing_model(fish_features, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.evaluate",
            "--use-case",
            "fish_stock",
            "--features",
            str(fish_features),
            "--model",
            str(tmp_path / "nope" / "1"),
            "--output",
            str(tmp_path / "out"),
        ],
        env=tool_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "is not a SavedModel" in proc.stderr
    assert not (tmp_path / "out").exists()
