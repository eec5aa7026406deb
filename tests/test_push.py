"""The push step on a tiny real model: blessing, contract check, infra-validation in a real
`perucast-model-server` over loopback gRPC, atomic publishing with the version's monitoring
references, report and CLI exit codes."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from components.push import InfraValidationError, PushConfig, app, publish, push
from components.train import TrainConfig, train
from perucast.exitcodes import ExitCode
from perucast.export import (
    EVALUATION_FILE,
    REFERENCE_SAMPLE_FILE,
    TRAINING_STATISTICS_FILE,
    evaluation_summary,
    load_monitoring_references,
)

REFERENCES = (EVALUATION_FILE, REFERENCE_SAMPLE_FILE, TRAINING_STATISTICS_FILE)

NAIVE_REASON = "vs seasonal naive FAILED: mase 0.93 > 0.8 × naive = 0.8"


@pytest.fixture(scope="module")
def fish_model(fish_features, tmp_path_factory) -> Path:
    """One tiny fish_stock model (two epochs): its version directory."""
    root = tmp_path_factory.mktemp("push-train")
    result = train(
        TrainConfig(
            use_case="fish_stock",
            features_dir=fish_features,
            model_repository=root / "repo",
            output_dir=root / "out",
            epochs=2,
            batch_size=64,
        )
    )
    return result.version_dir


def write_blessing(directory: Path, blessed: bool, model_dir: Path, reasons=()) -> Path:
    """A blessing.json as the evaluate step writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"blessed": blessed, "reasons": list(reasons), "model_dir": str(model_dir)}
    (directory / "blessing.json").write_text(json.dumps(payload))
    return directory


def evaluation_scores() -> pd.DataFrame:
    """The evaluation's score table of a tiny backtest: network and seasonal naive, two zones,
    two horizons (``perucast.evaluation.score``, as the evaluate step computes it)."""
    from perucast.evaluation import score

    rows = []
    for model, error in (("network", 1.0), ("seasonal_naive", 4.0)):
        for zone in ("north", "south"):
            for h in (1, 2):
                actual = 100.0 * h
                p50 = actual + error * (1 if zone == "north" else -1)
                rows.append(
                    {
                        "origin": pd.Timestamp("2020-01-01"),
                        "zone": zone,
                        "horizon": h,
                        "target_time": pd.Timestamp("2020-01-01") + pd.DateOffset(months=h),
                        "actual": actual,
                        "p10": p50 - 2 * h,  # h=1 covers the network's actual, h=2 too
                        "p50": p50,
                        "p90": p50 + 2 * h,
                        "model": model,
                    }
                )
    return score(pd.DataFrame(rows), {"north": 2.0, "south": 4.0}, ["zone"])


def write_evaluation(directory: Path, blessed: bool, model_dir: Path) -> Path:
    """An evaluation output as the evaluate step writes it: blessing.json, metrics.json and
    report/metrics.json (``write_report``'s payload, without the plots)."""
    from perucast.evaluation import scores_to_dict

    write_blessing(directory, blessed, model_dir, ["all rules passed"])
    scores = evaluation_scores()
    payload = {
        "title": "evaluation",
        "context": {"use_case": "fish_stock", "test_period": "2020-02-01 .. 2020-03-01"},
        "candidate": "network",
        "goals_passed": True,
        "goals": [],
        "blessing": {"blessed": blessed, "reasons": []},
        "scores": scores_to_dict(scores),
    }
    (directory / "report").mkdir(parents=True, exist_ok=True)
    (directory / "report" / "metrics.json").write_text(json.dumps(payload))
    (directory / "metrics.json").write_text(json.dumps({"blessed": blessed, "network": {}}))
    return directory


@pytest.fixture(scope="module")
def features_with_sample(fish_features, tmp_path_factory) -> Path:
    """The fish features with a reference sample (made here when preprocess did not write one)."""
    copy = tmp_path_factory.mktemp("push-features") / "features"
    shutil.copytree(fish_features, copy)
    if not (copy / REFERENCE_SAMPLE_FILE).exists():
        pd.DataFrame({"zone": ["north", "south"], "biomass_tonnes": [1.0e6, 2.0e6]}).to_parquet(
            copy / REFERENCE_SAMPLE_FILE, index=False
        )
    return copy


def config(model_dir: Path, evaluation: Path, features: Path, repo: Path, **kw) -> PushConfig:
    return PushConfig(
        use_case="fish_stock",
        model_dir=model_dir,
        evaluation_dir=evaluation,
        features_dir=features,
        model_repository=repo,
        **kw,
    )


def model_servers_running() -> list[str]:
    """Command lines of live model servers started by the push step (its temp repositories)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serving" in args and any(b"perucast-push-" in a for a in args):
            found.append(b" ".join(args).decode(errors="replace"))
    return found


def repository_entries(repo: Path, name: str = "fish_stock") -> list[str]:
    model_dir = repo / name
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []


@pytest.fixture(scope="module")
def pushed_twice(fish_model, features_with_sample, tmp_path_factory):
    """A blessed model pushed with infra-validation, then again without the server check."""
    root = tmp_path_factory.mktemp("push-ok")
    evaluation = write_evaluation(root / "evaluation", True, fish_model)
    repo = root / "served"
    first = push(
        config(
            fish_model, evaluation, features_with_sample, repo, samples=40, report_dir=root / "r1"
        )
    )
    second = push(
        config(
            fish_model,
            evaluation,
            features_with_sample,
            repo,
            infra_validation=False,
            report_dir=root / "r2",
        )
    )
    return first, second, repo, root


def test_a_blessed_model_is_validated_in_a_server_and_published_as_the_next_version(
    pushed_twice, fish_model
):
    first, second, repo, _ = pushed_twice
    assert first.pushed and first.version == 1
    assert first.version_dir == repo / "fish_stock" / "1"
    assert second.pushed and second.version == 2
    # Only whole numbered versions: no hidden copy left behind.
    assert repository_entries(repo) == ["1", "2"]
    for result in (first, second):
        # The candidate's files, unchanged, plus its monitoring references in assets.extra.
        diff = filecmp.dircmp(fish_model, result.version_dir)
        stack, mismatched, added = [(".", diff)], [], []
        while stack:
            where, d = stack.pop()
            mismatched += d.left_only + d.diff_files + d.funny_files
            added += [f"{where}/{name}" for name in d.right_only]
            stack += [(f"{where}/{name}", sub) for name, sub in d.subdirs.items()]
        assert mismatched == [], mismatched
        assert sorted(added) == [f"./assets.extra/{name}" for name in REFERENCES]
    assert not (fish_model / "assets.extra" / EVALUATION_FILE).exists()  # candidate untouched
    figures = first.infra_validation
    assert figures["performed"] is True and figures["contract"] == "passed"
    assert figures["rows"] == 40 and figures["requests"] == 3  # 16 + 16 + 8 rows
    assert figures["mismatches"] == 0 and figures["non_finite"] == 0
    assert figures["max_abs_diff"] <= 1e-4 + 1e-5 * 1e7
    assert figures["load_seconds"] > 0 and figures["served_version"] == 1
    assert second.infra_validation["performed"] is False
    assert "version 2" in second.reason and "skipped" in second.reason
    assert model_servers_running() == []


def test_the_push_report_holds_the_reason_and_the_figures(pushed_twice):
    first, _, _, root = pushed_twice
    report = json.loads((root / "r1" / "push.json").read_text())
    assert report["pushed"] is True and report["version"] == 1
    assert report["infra_validation"]["requests"] == 3
    assert report["infra_validation"]["rows"] == 40
    assert report["infra_validation"]["max_abs_diff"] == first.infra_validation["max_abs_diff"]
    assert report == json.loads(json.dumps(first.to_dict()))
    assert report["monitoring"]["files"] == sorted(REFERENCES)
    assert report["monitoring"]["evaluation_available"] is True
    markdown = (root / "r1" / "push.md").read_text()
    assert "pushed as version 1" in markdown and "max_abs_diff" in markdown
    assert "monitoring references in `assets.extra/`: `evaluation.json`" in markdown


def test_the_published_version_carries_its_monitoring_references(
    pushed_twice, features_with_sample
):
    first, _, _, root = pushed_twice
    extra = first.version_dir / "assets.extra"
    assert (extra / TRAINING_STATISTICS_FILE).read_bytes() == (
        features_with_sample / "statistics.json"
    ).read_bytes()
    assert (extra / REFERENCE_SAMPLE_FILE).read_bytes() == (
        features_with_sample / REFERENCE_SAMPLE_FILE
    ).read_bytes()

    refs = load_monitoring_references(first.version_dir)
    assert refs.training_statistics == json.loads(
        (features_with_sample / "statistics.json").read_text()
    )
    pd.testing.assert_frame_equal(
        refs.reference_sample, pd.read_parquet(features_with_sample / REFERENCE_SAMPLE_FILE)
    )
    evaluation = refs.evaluation
    assert evaluation["available"] is True and evaluation["candidate"] == "network"
    assert evaluation["source"] == str(root / "evaluation" / "report" / "metrics.json")
    assert evaluation["evaluated_at"].endswith("Z")
    assert evaluation["context"]["test_period"] == "2020-02-01 .. 2020-03-01"
    # The candidate's errors are 1 everywhere: MASE 1/2 (north) and 1/4 (south); P10–P90
    # covers every actual. Segments are named as realized accuracy names them.
    overall = evaluation["overall"]
    assert overall["mase"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4)
    assert overall["coverage_80"] == 1.0 and overall["n"] == 4
    assert overall["wql"] == pytest.approx(evaluation_scores().iloc[0]["wql"])
    assert sorted(evaluation["segments"]) == ["all", "h=1", "h=2", "zone=north", "zone=south"]
    assert evaluation["segments"]["zone=south"]["mase"] == pytest.approx(0.25)
    assert evaluation["baselines"]["seasonal_naive"]["mase"] == pytest.approx((2 + 2 + 1 + 1) / 4)


def test_publishing_adds_the_references_before_the_version_becomes_visible(tmp_path, monkeypatch):
    import os

    candidate = tmp_path / "candidate"
    (candidate / "assets.extra").mkdir(parents=True)
    (candidate / "saved_model.pb").write_bytes(b"graph")
    (candidate / "assets.extra" / "metadata.json").write_text("{}")
    statistics = tmp_path / "statistics.json"
    statistics.write_text('{"columns": {}}')
    seen = {}
    rename = os.rename

    def watching_rename(src, dst):
        # What a server scanning the repository could see appear under the version number.
        seen[Path(dst).name] = sorted(p.name for p in (Path(src) / "assets.extra").iterdir())
        return rename(src, dst)

    monkeypatch.setattr(os, "rename", watching_rename)
    assets = {TRAINING_STATISTICS_FILE: statistics, EVALUATION_FILE: b'{"available": false}'}
    version = publish(candidate, tmp_path / "repo", "m", assets)
    assert seen == {"1": ["evaluation.json", "metadata.json", "training_statistics.json"]}
    assert (version / "assets.extra" / EVALUATION_FILE).read_bytes() == b'{"available": false}'
    assert sorted(p.name for p in (candidate / "assets.extra").iterdir()) == ["metadata.json"]

    # A reference that cannot be copied: nothing is published, no hidden copy is left.
    seen.clear()
    with pytest.raises(FileNotFoundError):
        publish(candidate, tmp_path / "repo", "m", {REFERENCE_SAMPLE_FILE: tmp_path / "none"})
    assert seen == {} and repository_entries(tmp_path / "repo", "m") == ["1"]


def test_evaluation_summary_falls_back_to_the_headline_or_says_it_has_none(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "metrics.json").write_text(
        json.dumps(
            {
                "blessed": True,
                "goals_passed": False,
                "network": {"mase": 0.7, "rmse": 3.0, "smape": 5.0, "wql": 0.1, "coverage_80": 0.8},
                "seasonal_naive": {
                    "mase": 1.0,
                    "rmse": 4,
                    "smape": 6,
                    "wql": 0.2,
                    "coverage_80": 0.7,
                },
            }
        )
    )
    summary = evaluation_summary(flat)
    assert summary["available"] is True and summary["source"] == str(flat / "metrics.json")
    assert summary["segments"] == {"all": summary["overall"]} and summary["overall"]["mase"] == 0.7
    assert summary["baselines"]["seasonal_naive"]["mase"] == 1.0
    assert summary["goals_passed"] is False

    none = evaluation_summary(tmp_path / "nowhere")
    assert none["available"] is False and none["overall"] is None and "no scores" in none["reason"]
    (tmp_path / "bad" / "report").mkdir(parents=True)
    (tmp_path / "bad" / "report" / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        evaluation_summary(tmp_path / "bad")
    (tmp_path / "v" / "assets.extra").mkdir(parents=True)
    (tmp_path / "v" / "assets.extra" / TRAINING_STATISTICS_FILE).write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"evaluation\.json is missing"):
        load_monitoring_references(tmp_path / "v")


def test_a_model_that_is_not_blessed_is_not_pushed(fish_model, fish_features, tmp_path):
    evaluation = write_blessing(tmp_path / "evaluation", False, fish_model, [NAIVE_REASON])
    result = push(
        config(fish_model, evaluation, fish_features, tmp_path / "repo", report_dir=tmp_path / "r")
    )
    assert result.pushed is False and result.version is None
    assert result.reason.startswith("not blessed: ") and NAIVE_REASON in result.reason
    assert not (tmp_path / "repo").exists()
    assert json.loads((tmp_path / "r" / "push.json").read_text())["pushed"] is False


def test_a_missing_blessing_is_a_clear_error(fish_model, fish_features, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no blessing\.json in .*evaluate step"):
        push(config(fish_model, tmp_path / "nowhere", fish_features, tmp_path / "repo"))


def write_broken_signature(fish_model: Path, target: Path) -> Path:
    """A SavedModel whose serving_default renames `zone`, takes `season` as int64, returns
    float64 p10 and no p90; the candidate's metadata.json is copied beside it."""
    import tensorflow as tf

    inputs = json.loads((fish_model / "assets.extra" / "metadata.json").read_text())["inputs"]
    specs = {}
    for name, dtype in inputs.items():
        if name == "zone":
            name = "zone_name"
        specs[name] = tf.TensorSpec([None], tf.int64 if name == "season" else dtype, name=name)

    class Broken(tf.Module):
        @tf.function(input_signature=[specs])
        def serve(self, features):
            level = tf.reshape(features["biomass_tonnes"], [-1, 1]) * tf.ones([1, 6])
            return {"p10": tf.cast(level, tf.float64) * 0.9, "p50": level}

    module = Broken()
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})
    shutil.copytree(fish_model / "assets.extra", target / "assets.extra")
    return target


def test_a_signature_that_breaks_the_contract_is_refused_and_named(
    fish_model, fish_features, tmp_path
):
    broken = write_broken_signature(fish_model, tmp_path / "broken" / "1")
    evaluation = write_blessing(tmp_path / "evaluation", True, broken)
    repo = tmp_path / "repo"
    with pytest.raises(InfraValidationError) as caught:
        push(config(broken, evaluation, fish_features, repo, report_dir=tmp_path / "r"))
    message = str(caught.value)
    assert "breaks the serving contract of fish_stock" in message
    assert "input 'zone' (string) is missing" in message
    assert "unexpected input 'zone_name' (string)" in message
    assert "input 'season' is int64, expected string" in message
    assert "output 'p10' is float64, expected float32" in message
    assert "output 'p90' is missing" in message
    assert not repo.exists()
    report = json.loads((tmp_path / "r" / "push.json").read_text())
    assert report["pushed"] is False and "output 'p90' is missing" in report["reason"]


def test_a_model_the_server_cannot_load_fails_infra_validation(fish_model, fish_features, tmp_path):
    candidate = tmp_path / "candidate" / "1"
    shutil.copytree(fish_model, candidate)
    # The graph is intact (the contract holds); the weights are not.
    data = next((candidate / "variables").glob("variables.data-*"))
    data.write_bytes(b"\0" * data.stat().st_size)
    evaluation = write_blessing(tmp_path / "evaluation", True, candidate)
    repo = tmp_path / "repo"
    with pytest.raises(InfraValidationError) as caught:
        push(config(candidate, evaluation, fish_features, repo, timeout_s=120))
    message = str(caught.value)
    assert "failed to load the candidate" in message, message
    assert "checksum does not match" in message
    assert "model server log (tail)" in message
    assert repository_entries(repo) == []
    assert model_servers_running() == []


def test_a_corrupted_saved_model_pb_is_refused_before_any_server(
    fish_model, fish_features, tmp_path
):
    candidate = tmp_path / "candidate" / "1"
    shutil.copytree(fish_model, candidate)
    (candidate / "saved_model.pb").write_bytes(b"not a saved model")
    evaluation = write_blessing(tmp_path / "evaluation", True, candidate)
    with pytest.raises(
        InfraValidationError, match=r"cannot be loaded: saved_model\.pb does not parse"
    ):
        push(config(candidate, evaluation, fish_features, tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()


def test_a_blessing_written_for_another_model_is_refused(fish_model, fish_features, tmp_path):
    other = write_broken_signature(fish_model, tmp_path / "other" / "1")
    evaluation = write_blessing(tmp_path / "evaluation", True, other)
    with pytest.raises(ValueError, match=r"blessing was written for .* different model"):
        push(config(fish_model, evaluation, fish_features, tmp_path / "repo"))


def test_concurrent_publishes_take_distinct_versions_and_leave_no_hidden_copies(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    candidate = tmp_path / "candidate"
    (candidate / "variables").mkdir(parents=True)
    (candidate / "saved_model.pb").write_bytes(b"graph")
    (candidate / "variables" / "variables.index").write_bytes(b"index")
    repo = tmp_path / "repo"
    (repo / "m" / "3").mkdir(parents=True)  # an existing version: the next ones follow it
    with ThreadPoolExecutor(6) as pool:
        dirs = list(pool.map(lambda _: publish(candidate, repo, "m"), range(6)))
    assert sorted(int(d.name) for d in dirs) == [4, 5, 6, 7, 8, 9]
    assert repository_entries(repo, "m") == ["3", "4", "5", "6", "7", "8", "9"]
    assert all((d / "variables" / "variables.index").read_bytes() == b"index" for d in dirs)


def test_push_config_rejects_unknown_fields_and_use_cases(tmp_path):
    paths = dict(
        model_dir=tmp_path,
        evaluation_dir=tmp_path,
        features_dir=tmp_path,
        model_repository=tmp_path,
    )
    with pytest.raises(ValidationError, match="extra_forbidden"):
        PushConfig(use_case="fish_stock", **paths, infra_validaton=False)
    with pytest.raises(ValidationError, match="unknown use case"):
        PushConfig(use_case="shrimp", **paths)
    with pytest.raises(ValidationError):
        PushConfig(use_case="fish_stock", **paths, samples=0)
    cfg = PushConfig(use_case="fish_stock", **paths)
    assert cfg.name == "fish_stock" and cfg.infra_validation is True and cfg.samples == 64


def test_cli_exit_codes(fish_model, fish_features, tmp_path):
    runner = CliRunner()
    repo = tmp_path / "repo"

    def run(model: Path, evaluation: Path, *extra: str):
        args = ["--use-case", "fish_stock", "--model", str(model), "--evaluation"]
        args += [str(evaluation), "--features", str(fish_features)]
        return runner.invoke(app, [*args, "--model-repository", str(repo), *extra])

    refused = write_blessing(tmp_path / "refused", False, fish_model, [NAIVE_REASON])
    result = run(fish_model, refused)
    assert result.exit_code == ExitCode.OK, result.output
    assert "not blessed" in result.stdout and NAIVE_REASON in result.stdout

    result = run(fish_model, tmp_path / "missing")
    assert result.exit_code == ExitCode.INPUT_NOT_FOUND
    assert "no blessing.json" in result.stderr

    broken = write_broken_signature(fish_model, tmp_path / "broken" / "1")
    blessed = write_blessing(tmp_path / "blessed", True, broken)
    result = run(broken, blessed, "--report", str(tmp_path / "report"))
    assert result.exit_code == ExitCode.DATA_INVALID
    assert "breaks the serving contract" in result.stderr
    assert (tmp_path / "report" / "push.md").exists()

    result = run(fish_model, refused, "--samples", "0")
    assert result.exit_code == ExitCode.USAGE
    assert not repo.exists()
