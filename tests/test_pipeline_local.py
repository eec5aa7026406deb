"""The training and monitoring pipelines end to end through kfp.local (SubprocessRunner).

Tiny fish_stock data, one training worker, seasonal naive as the only baseline (the 2-worker
path and the other baselines have their own tests). A real perucast-model-server polls the
serving config, so the deploy step rolls the pushed model out through version labels. Then
prediction logging is turned on and the training split is replayed through the server twice, as
it was and with an El Niño (+3 °C on the Niño inputs), each to its own log prefix (the tiny
data's test years are in another ENSO regime than its training years, which the monitor rightly
flags, so the test split would not make an ordinary replay); the
monitoring pipeline runs on each: unshifted it stops after the monitor, shifted it launches the
nested training pipeline, here with one epoch, whose worse candidate is not blessed or pushed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from components.ingest import SourceConfig
from pipelines.cli import local_server
from pipelines.config import MonitoringConfig, PipelineConfig
from pipelines.run import STEPS, monitor_report, run_local
from serving.process import model_state

pytestmark = pytest.mark.slow


def _config(root: Path, target: str, **overrides) -> PipelineConfig:
    values = dict(
        use_case="fish_stock",
        source=SourceConfig(kind="synthetic", seed=7, scale="tiny"),
        workers=1,
        epochs=25,
        model_repository=str(root / "repo"),
        baselines=("seasonal_naive",),
        deploy_mode="local",
        serving_config=str(root / "models.config"),
        serving_target=target,
    )
    return PipelineConfig(**{**values, **overrides})


def _replay(root: Path, target: str, prefix: Path, shift: bool) -> int:
    """The first run's training split through the server, logged to ``prefix``; returns rows."""
    from models import get_use_case
    from perucast.datasets import read_features
    from perucast.replay import (
        enable_prediction_logging,
        replay_weeks,
        wait_for_prediction_logging,
    )

    (run_dir,) = sorted((root / "runs").glob("perucast-fish-stock-training-*"))[:1]
    features_dir = run_dir / "preprocess" / "features"
    horizon = json.loads((features_dir / "split.json").read_text())["horizon"]
    spec = get_use_case("fish_stock").feature_spec(int(horizon))
    rows = read_features(features_dir, spec, splits=["train"])
    enable_prediction_logging(root / "models.config", "fish_stock", prefix)
    wait_for_prediction_logging(root / "server.log", "fish_stock", prefix)
    origins = sorted(rows[spec.time_column].unique())
    done = replay_weeks(
        target, "fish_stock", rows, origins, shift_from=origins[0] if shift else None
    )
    return done.instances


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A good run; then the monitoring pipeline on an ordinary and on an El Niño replay."""
    root = tmp_path_factory.mktemp("pipeline")
    with local_server(root / "models.config", root / "server.log") as target:
        first = run_local(_config(root, target), root / "runs")
        first_labels = _labels(target)
        replayed = {
            kind: _replay(root, target, root / "logs" / kind / "fish_stock", kind == "el_nino")
            for kind in ("ordinary", "el_nino")
        }
        config_after_first = (root / "models.config").read_text()
        time.sleep(1.0)  # the log writer flushes when its queue runs empty
        monitored = {
            kind: run_local(
                MonitoringConfig(
                    # the retraining run: one epoch, a worse candidate than the served one
                    training=_config(root, target, epochs=1, seed=3),
                    prediction_logs=str(root / "logs" / kind / "fish_stock"),
                    pushgateway="",
                    # accuracy decides in tests/test_monitor.py; here drift alone does
                    min_matched_actuals=10**9,
                ),
                root / "monitoring-runs" / kind,
            )
            for kind in ("ordinary", "el_nino")
        }
        second_labels = _labels(target)
    return root, first, first_labels, config_after_first, monitored, second_labels, replayed


def _labels(target: str) -> dict[str, int]:
    found = {}
    for label in ("stable", "canary"):
        try:
            found[label] = next(iter(model_state(target, "fish_stock", version_label=label)))
        except Exception:  # NOT_FOUND for a label that is not set
            continue
    return found


def test_a_tiny_pipeline_runs_end_to_end_and_deploys(runs):
    root, first, labels, config_text, *_ = runs
    assert first.succeeded, first.error
    assert tuple(s["step"] for s in first.steps) == STEPS
    assert all(s["seconds"] > 0 for s in first.steps)
    assert sorted(p.name for p in (root / "repo" / "fish_stock").iterdir()) == ["1"]
    assert labels == {"stable": 1}
    assert 'key: "stable"' in config_text and "value: 1" in config_text
    assert first.outcome["state"] == "SUCCEEDED" and first.outcome["error_code"] == 0


def _monitor_report(run) -> dict:
    report_dir = monitor_report(run)
    assert report_dir is not None, f"no monitor report under {run.pipeline_root}"
    return json.loads((report_dir / "report.json").read_text())


def test_monitoring_an_ordinary_replay_does_not_retrain(runs):
    _, _, _, _, monitored, _, replayed = runs
    ordinary = monitored["ordinary"]
    assert ordinary.succeeded, ordinary.error
    assert [s["step"] for s in ordinary.steps] == ["ingest", "monitor"]
    report = _monitor_report(ordinary)
    assert report["predictions"]["rows"] == replayed["ordinary"]
    assert [f["feature"] for f in report["drift"]["features"] if f["drifted"]] == []
    assert report["decision"]["retrain"] is False
    assert report["realized"]["states"]["matched"] > 0  # actuals from the same source


def test_monitoring_an_el_nino_replay_retrains_and_a_worse_model_is_not_pushed(runs):
    root, _, _, config_text, monitored, labels, replayed = runs
    el_nino = monitored["el_nino"]
    assert el_nino.succeeded, el_nino.error  # not blessed is an outcome, not a failure
    report = _monitor_report(el_nino)
    assert report["predictions"]["rows"] == replayed["el_nino"]
    drifted = {f["feature"] for f in report["drift"]["features"] if f["drifted"]}
    assert drifted and all(name.startswith("nino12") for name in drifted)
    assert report["decision"]["retrain"] is True
    # the nested training pipeline ran, up to its blessing gate
    steps = [s["step"] for s in el_nino.steps]
    assert steps == ["ingest", "monitor", *STEPS[: STEPS.index("evaluate") + 1]]
    assert sorted(p.name for p in (root / "repo" / "fish_stock").iterdir()) == ["1"]
    assert labels == {"stable": 1}
    assert (root / "models.config").read_text() == config_text
    (evaluation,) = el_nino.pipeline_root.glob("*/evaluate/evaluation/blessing.json")
    blessing = json.loads(evaluation.read_text())
    assert blessing["blessed"] is False
    assert any("blessed" in reason or "naive" in reason for reason in blessing["reasons"])
    assert el_nino.outcome["state"] == "SUCCEEDED"  # the nested exit handler's record


def test_a_failed_run_is_recorded_by_the_exit_handler(tmp_path):
    config = PipelineConfig(
        use_case="fish_stock",
        source=SourceConfig(kind="path", path=str(tmp_path / "no-such-dir")),
        workers=1,
        model_repository=str(tmp_path / "repo"),
        deploy_mode="none",
    )
    result = run_local(config, tmp_path / "runs")
    assert result.state == "FAILED"
    assert result.steps == []
    assert result.outcome["state"] == "FAILED"
    assert not (tmp_path / "repo").exists()
