"""The training pipeline end to end through kfp.local (SubprocessRunner, real tasks).

Tiny fish_stock data, one training worker, seasonal naive as the only baseline (the 2-worker
path and the other baselines have their own tests). A real perucast-model-server polls the
serving config, so the deploy step rolls the pushed model out through version labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.ingest import SourceConfig
from pipelines.cli import local_server
from pipelines.config import PipelineConfig
from pipelines.run import STEPS, run_local
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A good run, then a deliberately worse one (one epoch), against the same server."""
    root = tmp_path_factory.mktemp("pipeline")
    with local_server(root / "models.config", root / "server.log") as target:
        first = run_local(_config(root, target), root / "runs")
        first_labels = _labels(target)
        config_after_first = (root / "models.config").read_text()
        worse = run_local(_config(root, target, epochs=1, seed=3), root / "runs")
        second_labels = _labels(target)
    return root, first, first_labels, config_after_first, worse, second_labels


def _labels(target: str) -> dict[str, int]:
    found = {}
    for label in ("stable", "canary"):
        try:
            found[label] = next(iter(model_state(target, "fish_stock", version_label=label)))
        except Exception:  # NOT_FOUND for a label that is not set
            continue
    return found


def test_a_tiny_pipeline_runs_end_to_end_and_deploys(runs):
    root, first, labels, config_text, _, _ = runs
    assert first.succeeded, first.error
    assert tuple(s["step"] for s in first.steps) == STEPS
    assert all(s["seconds"] > 0 for s in first.steps)
    assert sorted(p.name for p in (root / "repo" / "fish_stock").iterdir()) == ["1"]
    assert labels == {"stable": 1}
    assert 'key: "stable"' in config_text and "value: 1" in config_text
    assert first.outcome["state"] == "SUCCEEDED" and first.outcome["error_code"] == 0


def test_a_deliberately_worse_model_is_not_pushed(runs):
    root, _, _, config_text, worse, labels = runs
    assert worse.succeeded, worse.error  # not blessed is an outcome, not a failure
    steps = [s["step"] for s in worse.steps]
    assert tuple(steps) == STEPS[: STEPS.index("evaluate") + 1]  # no push, no deploy
    assert sorted(p.name for p in (root / "repo" / "fish_stock").iterdir()) == ["1"]
    assert labels == {"stable": 1}
    assert (root / "models.config").read_text() == config_text
    runs_dirs = sorted((root / "runs").glob("perucast-fish-stock-training-*"))
    blessing = json.loads((runs_dirs[-1] / "evaluate" / "evaluation" / "blessing.json").read_text())
    assert blessing["blessed"] is False
    assert any("blessed" in reason or "naive" in reason for reason in blessing["reasons"])


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
