"""The preprocess step: time split with gaps, training-only statistics, atomic output, bad input.

The use cases' feature values are checked against independent pandas implementations in
test_crop_features.py and test_fish_features.py; this file checks the generic step around them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from components.preprocess import (
    REFERENCE_SAMPLE_ROWS,
    PreprocessConfig,
    PreprocessError,
    app,
    preprocess,
    reference_sample,
    split_origins,
)
from perucast.exitcodes import ExitCode
from perucast.spark import SparkConfig, TableInputError, TableMissingError

runner = CliRunner()


# --- split and config: no Spark needed -------------------------------------------------------


def test_split_leaves_gaps_of_the_horizon_between_splits() -> None:
    times = list(range(100))
    parts = split_origins(times, 0.15, 0.15, gap=12)
    assert (len(parts["train"]), len(parts["validation"]), len(parts["test"])) == (46, 15, 15)
    assert parts["validation"][0] - parts["train"][-1] == 13  # 12 origins skipped in between
    assert parts["test"][0] - parts["validation"][-1] == 13
    assert parts["test"][-1] == 99


def test_split_refuses_too_few_origins() -> None:
    with pytest.raises(PreprocessError, match="too few"):
        split_origins(list(range(30)), 0.15, 0.15, gap=12)


def test_config_refuses_a_gap_shorter_than_the_horizon(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="shorter than the horizon"):
        PreprocessConfig(
            use_case="crop_demand",
            input_dir=tmp_path,
            output_dir=tmp_path / "o",
            horizon=12,
            gap_periods=4,
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("use_case", "bananas", "unknown use case"),
        ("horizon", 0, "greater than or equal to 1"),
        ("test_fraction", 0.7, "less than 0.5"),
        ("typo_field", 1, "Extra inputs are not permitted"),
    ],
)
def test_config_is_validated_up_front(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    kwargs = {"use_case": "fish_stock", "input_dir": tmp_path, "output_dir": tmp_path / "o"}
    kwargs[field] = value
    with pytest.raises(ValidationError, match=message):
        PreprocessConfig(**kwargs)


def test_spark_config_renders_kubernetes_submit_args() -> None:
    config = SparkConfig(
        master="k8s://https://kubernetes.default.svc:443",
        k8s_image="ghcr.io/perucast/perucast:0.1.0",
        executor_instances=4,
        executor_memory="6g",
    )
    args = config.submit_args("local:///app/components/preprocess.py", "--use-case", "fish_stock")
    assert args[:3] == ["spark-submit", "--master", "k8s://https://kubernetes.default.svc:443"]
    assert "--deploy-mode" in args and "cluster" in args
    confs = {
        args[i + 1].split("=", 1)[0]: args[i + 1].split("=", 1)[1]
        for i, a in enumerate(args)
        if a == "--conf"
    }
    assert confs["spark.kubernetes.container.image"] == "ghcr.io/perucast/perucast:0.1.0"
    assert confs["spark.executor.instances"] == "4"
    assert confs["spark.executor.memory"] == "6g"
    assert confs["spark.sql.adaptive.enabled"] == "true"
    assert confs["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert args[-3:] == ["local:///app/components/preprocess.py", "--use-case", "fish_stock"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"master": "mesos://x"}, "unsupported Spark master"),
        ({"master": "k8s://https://x", "k8s_image": "perucast:latest"}, "pinned"),
        ({"master": "k8s://https://x", "k8s_image": "perucast"}, "pinned"),
    ],
)
def test_spark_config_rejects_bad_masters_and_unpinned_images(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SparkConfig(**kwargs)


# --- the step on tiny data, one SparkSession ---------------------------------------------------


@pytest.fixture(scope="module")
def crop_features(spark, crop_tiny: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("prep") / "crop_features"
    result = preprocess(
        PreprocessConfig(use_case="crop_demand", input_dir=crop_tiny, output_dir=out), spark
    )
    return result, out


def _split_frame(out: Path, split: str) -> pd.DataFrame:
    return pq.read_table(out / "features" / f"split={split}").to_pandas()


def test_features_are_written_partitioned_by_split(crop_features) -> None:
    result, out = crop_features
    for split in ("train", "validation", "test", "inference"):
        assert (out / "features" / f"split={split}").is_dir()
        assert result.rows[split] == len(_split_frame(out, split)) > 0
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == result.rows
    assert report["counts"]["dropped_incomplete_features"] > 0  # the first year of lags
    assert (out / "report.md").read_text().startswith("# Preprocess report: crop_demand")
    assert not list(out.parent.glob(".crop_features.tmp-*"))


def test_splits_are_ordered_in_time_with_gaps_of_the_horizon(crop_features) -> None:
    result, out = crop_features
    horizon = result.split["horizon"]
    assert horizon == 12
    spans = {}
    for split in ("train", "validation", "test", "inference"):
        weeks = pd.to_datetime(_split_frame(out, split)["week_start"])
        spans[split] = (weeks.min(), weeks.max())
    week = pd.Timedelta(weeks=1)
    # The last train target (origin + H weeks) comes before the first validation target.
    assert spans["validation"][0] - spans["train"][1] > horizon * week
    assert spans["test"][0] - spans["validation"][1] > horizon * week
    assert spans["inference"][0] > spans["test"][1]
    json_split = json.loads((out / "split.json").read_text())
    assert json_split["splits"]["test"]["last"] == str(spans["test"][1].date())


def test_train_validation_and_test_have_all_targets_and_inference_has_none(crop_features) -> None:
    result, out = crop_features
    targets = result.spec.target_columns
    for split in ("train", "validation", "test"):
        frame = _split_frame(out, split)
        assert frame[targets].notna().all().all(), split
        assert frame[result.spec.feature_columns].notna().all().all(), split
    inference = _split_frame(out, "inference")
    assert inference["target_h12"].isna().all()
    # The latest origin of every series is there to forecast from.
    latest = inference.groupby(["region", "crop"])["week_start"].max()
    assert latest.nunique() == 1


def test_statistics_come_from_the_training_split_only(crop_features) -> None:
    _, out = crop_features
    stats = json.loads((out / "statistics.json").read_text())
    train = _split_frame(out, "train")
    everything = pd.concat([_split_frame(out, s) for s in ("train", "validation", "test")])
    feature = "demand_tonnes"
    assert stats["computed_on"] == "train" and stats["rows"] == len(train)
    assert stats["numeric"][feature]["mean"] == pytest.approx(train[feature].mean(), rel=1e-9)
    assert stats["numeric"][feature]["variance"] == pytest.approx(
        train[feature].var(ddof=0), rel=1e-9
    )
    assert stats["numeric"][feature]["mean"] != pytest.approx(everything[feature].mean(), rel=1e-6)
    median = stats["numeric"][feature]["quantiles"]["0.5"]
    assert abs((train[feature] <= median).mean() - 0.5) < 0.01  # approxQuantile, rel. error 1e-3
    assert stats["categorical"]["region"]["vocabulary"] == sorted(train["region"].unique())
    series = {(s["region"], s["crop"]): s for s in stats["series"]}
    lima_rice = train[(train["region"] == "lima") & (train["crop"] == "rice")][feature]
    assert series[("lima", "rice")]["target_mean"] == pytest.approx(lima_rice.mean(), rel=1e-9)


def test_reference_sample_is_a_seeded_uniform_sample_of_training_feature_rows(
    spark, crop_features
) -> None:
    result, out = crop_features
    spec = result.spec
    sample = pd.read_parquet(out / "reference_sample.parquet")
    train = _split_frame(out, "train")
    assert list(sample.columns) == spec.feature_columns  # the signature's inputs, no targets
    assert len(sample) == min(REFERENCE_SAMPLE_ROWS, len(train))
    report = json.loads((out / "report.json").read_text())
    assert report["reference_sample"]["rows"] == len(sample)
    # Every sampled row is a training row (all feature values equal; features are complete).
    matched = sample.merge(train[spec.feature_columns].drop_duplicates(), how="inner")
    assert len(matched) == len(sample)

    # The sampler itself, at a size below the split: same seed, same rows, whatever the
    # partitioning; another seed, other rows; spread over the split, not its first rows.
    from pyspark.sql import functions as F

    frame = spark.read.parquet(str(out / "features")).where(F.col("split") == "train")
    first = reference_sample(frame, spec, rows=60, seed=3)
    again = reference_sample(frame.repartition(7), spec, rows=60, seed=3)
    other = reference_sample(frame, spec, rows=60, seed=4)
    assert len(first) == 60 and len(train) > 60
    pd.testing.assert_frame_equal(first, again)
    keys = ["region", "crop", "demand_tonnes"]
    assert len(first[keys].merge(other[keys])) < 30  # two 60-row draws share few rows
    assert first["region"].nunique() > 1 and first["crop"].nunique() > 1


# --- bad input: a clear error naming table and column, and nothing written --------------------


def _copy_tables(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_table_names_it_and_writes_nothing(spark, crop_tiny: Path, tmp_path: Path) -> None:
    data = _copy_tables(crop_tiny, tmp_path / "in")
    (data / "weather.parquet").unlink()
    out = tmp_path / "out"
    config = PreprocessConfig(use_case="crop_demand", input_dir=data, output_dir=out)
    with pytest.raises(TableMissingError, match="table 'weather' is missing"):
        preprocess(config, spark)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [data]


def test_schema_mismatch_names_table_and_column(spark, crop_tiny: Path, tmp_path: Path) -> None:
    data = _copy_tables(crop_tiny, tmp_path / "in")
    table = pq.read_table(data / "market_trends.parquet")
    pq.write_table(
        table.rename_columns(["week_start", "region", "crop", "price", "usd_pen"]),
        data / "market_trends.parquet",
    )
    with pytest.raises(
        TableInputError, match="'market_trends': column 'price_pen_per_kg' is missing"
    ):
        preprocess(
            PreprocessConfig(use_case="crop_demand", input_dir=data, output_dir=tmp_path / "o"),
            spark,
        )
    assert not (tmp_path / "o").exists()


def test_empty_table_is_refused_and_a_previous_output_survives(
    spark, crop_tiny: Path, tmp_path: Path
) -> None:
    data = _copy_tables(crop_tiny, tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("a previous good run")
    table = pq.read_table(data / "historical_demand.parquet")
    pq.write_table(table.slice(0, 0), data / "historical_demand.parquet")
    result = runner.invoke(
        app, ["--use-case", "crop_demand", "--input", str(data), "--output", str(out)]
    )
    assert result.exit_code == ExitCode.DATA_INVALID, result.output
    assert "table 'historical_demand' is empty" in result.output
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


def test_cli_exit_codes_for_missing_input(spark, tmp_path: Path, crop_tiny: Path) -> None:
    missing_dir = runner.invoke(
        app,
        [
            "--use-case",
            "crop_demand",
            "--input",
            str(tmp_path / "nope"),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert missing_dir.exit_code == ExitCode.INPUT_NOT_FOUND
    assert "does not exist" in missing_dir.output
    data = _copy_tables(crop_tiny, tmp_path / "in")
    (data / "historical_demand.parquet").unlink()
    missing_table = runner.invoke(
        app, ["--use-case", "crop_demand", "--input", str(data), "--output", str(tmp_path / "o")]
    )
    assert missing_table.exit_code == ExitCode.INPUT_NOT_FOUND
    assert "table 'historical_demand' is missing" in missing_table.output
    bad_conf = runner.invoke(
        app,
        [
            "--use-case",
            "crop_demand",
            "--input",
            str(data),
            "--output",
            str(tmp_path / "o"),
            "--conf",
            "novalue",
        ],
    )
    assert bad_conf.exit_code == ExitCode.USAGE
    assert "KEY=VALUE" in bad_conf.output


@pytest.mark.slow
def test_step_runs_unchanged_through_spark_submit(fish_tiny: Path, tmp_path: Path) -> None:
    """The Kubernetes path is spark-submit; here it is the same command with a local master."""
    out = tmp_path / "fish_features"
    config = SparkConfig(master="local[2]", driver_memory="1g", shuffle_partitions=3)
    script = Path(__file__).resolve().parents[1] / "components" / "preprocess.py"
    args = config.submit_args(
        str(script),
        *("--use-case", "fish_stock", "--input", str(fish_tiny), "--output", str(out)),
    )
    args[0] = str(Path(sys.executable).parent / "spark-submit")
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "PERUCAST_LOG": "WARNING",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        },
        timeout=300,
    )
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["horizon"] == 6
    assert report["spark"]["master"] == "local[2]"
    assert report["spark"]["settings"]["spark.sql.shuffle.partitions"] == "3"  # submit's --conf
    assert all(report["rows"][s] > 0 for s in ("train", "validation", "test", "inference"))
    first_test = dt.date.fromisoformat(report["split"]["splits"]["test"]["first"])
    last_val = dt.date.fromisoformat(report["split"]["splits"]["validation"]["last"])
    assert (first_test.year - last_val.year) * 12 + first_test.month - last_val.month > 6
    assert "fish_stock: features in" in proc.stdout
