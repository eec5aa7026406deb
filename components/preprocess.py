"""Preprocess step: validated raw tables -> a training-ready feature dataset, with Spark.

The use case's Spark transform (``models/<use_case>/features.py``) builds one row per forecast
origin; this step, generic over use cases, then

1. drops origins whose features are incomplete (the first year of lags, months before the
   satellite era) and counts them;
2. splits by time: ``train | gap | validation | gap | test``, each gap at least the horizon, so
   no target of an earlier split falls in a later split's target period; origins whose targets
   lie beyond the data form the ``inference`` split (what a forecast is made from today);
3. writes the dataset as Parquet partitioned by ``split``, plus ``split.json``,
   ``statistics.json`` (means, variances, quantiles, vocabularies and per-series target scales,
   from the training split only: training normalises with them and later steps use them as the
   drift reference), ``reference_sample.parquet`` (a seeded uniform sample of at most
   2,000 training rows, feature columns only: the raw inputs of the serving signature, for
   two-sample drift tests of served requests in ``perucast.drift``) and ``report.json`` /
   ``report.md``.

The output directory appears complete or not at all. The same CLI runs on a laptop
(``local[*]``) and on Kubernetes (``--master k8s://https://...`` through spark-submit or a
SparkApplication)::

    python -m components.preprocess --use-case crop_demand \
        --input data/validated/crop_demand --output data/features/crop_demand
"""

from __future__ import annotations

import functools
import logging
import operator
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import USE_CASE_NAMES, UseCaseName, get_use_case
from perucast.spark import SparkConfig

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

    from models.base import FeatureSpec

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test", "inference")
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
REFERENCE_SAMPLE_FILE = "reference_sample.parquet"
REFERENCE_SAMPLE_ROWS = 2000  # enough for a KS test to see a 0.1-sd shift, small enough to ship
REFERENCE_SAMPLE_SEED = 0


class PreprocessError(RuntimeError):
    """The input cannot be turned into a feature dataset (the message says why)."""


class PreprocessConfig(BaseModel):
    """Configuration of the preprocess step (validated when a pipeline is built)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    input_dir: Path
    output_dir: Path
    horizon: int | None = Field(
        default=None, ge=1, le=104, description="Periods ahead; None: the use case's default."
    )
    validation_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    gap_periods: int | None = Field(
        default=None, ge=1, description="Periods between splits; None: the horizon."
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)

    @model_validator(mode="after")
    def _gap_covers_horizon(self) -> PreprocessConfig:
        if self.gap_periods is not None and self.gap_periods < self.resolved_horizon:
            raise ValueError(
                f"gap_periods={self.gap_periods} is shorter than the horizon "
                f"{self.resolved_horizon}: targets of one split would leak into the next"
            )
        return self

    @property
    def resolved_horizon(self) -> int:
        return self.horizon or get_use_case(self.use_case).default_horizon

    @property
    def resolved_gap(self) -> int:
        return self.gap_periods or self.resolved_horizon


@dataclass
class PreprocessResult:
    """What the step wrote and measured."""

    output_dir: Path
    rows: dict[str, int]
    split: dict[str, Any]
    counts: dict[str, int]
    seconds: float
    spec: FeatureSpec
    input_rows: dict[str, int] = field(default_factory=dict)

    @property
    def features_dir(self) -> Path:
        return self.output_dir / "features"


def _all_present(columns: list[str]) -> Column:
    """True where none of ``columns`` is null."""
    from pyspark.sql import functions as F

    return functools.reduce(operator.and_, (F.col(c).isNotNull() for c in columns), F.lit(True))


def split_origins(
    times: list[Any], validation_fraction: float, test_fraction: float, gap: int
) -> dict[str, list[Any]]:
    """Assign sorted origin times to train / validation / test with ``gap`` origins between.

    Raises:
        PreprocessError: when there are too few origins for three non-empty splits.
    """
    n = len(times)
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * validation_fraction))
    n_train = n - n_test - n_val - 2 * gap
    if n_train < 1:
        needed = n_test + n_val + 2 * gap + 1
        raise PreprocessError(
            f"{n} origins with complete features and targets are too few for a train / "
            f"validation / test split with {gap}-period gaps (need at least {needed})"
        )
    val_start = n_train + gap
    test_start = val_start + n_val + gap
    return {
        "train": times[:n_train],
        "validation": times[val_start : val_start + n_val],
        "test": times[test_start:],
    }


def _statistics(train: DataFrame, spec: FeatureSpec, numeric: list[str]) -> dict[str, Any]:
    """Training-split statistics: numeric moments and quantiles, vocabularies, series scales."""
    from pyspark.sql import functions as F

    aggs = []
    for col in numeric:
        aggs += [
            F.count(col).alias(f"{col}__count"),
            F.mean(col).alias(f"{col}__mean"),
            F.var_pop(col).alias(f"{col}__var"),
            F.min(col).alias(f"{col}__min"),
            F.max(col).alias(f"{col}__max"),
        ]
    row = train.agg(*aggs).first().asDict()
    quantiles = train.approxQuantile(numeric, list(QUANTILES), 1e-3)
    stats: dict[str, Any] = {"numeric": {}, "categorical": {}, "series": []}
    for col, qs in zip(numeric, quantiles, strict=True):
        var = row[f"{col}__var"] or 0.0
        stats["numeric"][col] = {
            "count": row[f"{col}__count"],
            "mean": row[f"{col}__mean"],
            "variance": var,
            "std": var**0.5,
            "min": row[f"{col}__min"],
            "max": row[f"{col}__max"],
            "quantiles": {str(q): v for q, v in zip(QUANTILES, qs, strict=True)},
        }
    for col in spec.categorical:
        counts = train.groupBy(col).count().orderBy(col).collect()
        stats["categorical"][col] = {
            "vocabulary": [r[col] for r in counts],
            "counts": {str(r[col]): r["count"] for r in counts},
        }
    # Per-series level and spread of the target: the network scales each series by them.
    series = (
        train.groupBy(*spec.series_keys)
        .agg(
            F.mean(spec.target).alias("target_mean"),
            F.stddev_pop(spec.target).alias("target_std"),
            F.count("*").alias("rows"),
        )
        .orderBy(*spec.series_keys)
        .collect()
    )
    stats["series"] = [r.asDict() for r in series]
    return stats


def reference_sample(
    train: DataFrame,
    spec: FeatureSpec,
    rows: int = REFERENCE_SAMPLE_ROWS,
    seed: int = REFERENCE_SAMPLE_SEED,
) -> pd.DataFrame:
    """A uniform random sample of at most ``rows`` training rows, feature columns only.

    Bottom-k sampling: every row gets a seeded hash of its identity (series keys and time) and
    the ``rows`` smallest hashes are kept. Spark runs ``orderBy(...).limit(rows)`` as one pass
    with a top-k per partition (nothing else reaches the driver), and the result depends only
    on the rows and the seed, not on partitioning, so the same data and seed give the same
    sample wherever it runs.
    """
    from pyspark.sql import functions as F

    identity = [*spec.series_keys, spec.time_column]
    order = F.xxhash64(F.lit(seed), *(F.col(c) for c in identity))
    return train.orderBy(order, *identity).limit(rows).select(*spec.feature_columns).toPandas()


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Preprocess report: {result['use_case']}",
        "",
        f"Horizon {result['horizon']} periods, gap {result['split']['gap_periods']} periods; "
        f"{len(result['features']['numeric'])} numeric and "
        f"{len(result['features']['categorical'])} categorical features; "
        f"{result['seconds']:.1f}s on Spark master `{result['spark']['master']}`.",
        "",
        "| split | rows | first origin | last origin | origins |",
        "|---|---:|---|---|---:|",
    ]
    for name in SPLITS:
        part = result["split"]["splits"][name]
        lines.append(
            f"| {name} | {result['rows'][name]:,} | {part['first']} | {part['last']} | "
            f"{part['origins']} |"
        )
    lines += ["", "| input table | rows |", "|---|---:|"]
    lines += [f"| {t} | {n:,} |" for t, n in result["input_rows"].items()]
    lines += ["", "| count | value |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in result["counts"].items()]
    sample = result["reference_sample"]
    lines += [
        "",
        f"Drift reference: `statistics.json` and `{sample['file']}` ({sample['rows']:,} "
        f"training rows sampled uniformly, seed {sample['seed']}, feature columns only).",
    ]
    return "\n".join(lines) + "\n"


def preprocess(config: PreprocessConfig, spark: SparkSession | None = None) -> PreprocessResult:
    """Build the feature dataset of ``config.use_case`` from ``config.input_dir``.

    Raises:
        FileNotFoundError: the input directory does not exist.
        perucast.spark.TableInputError: a table is missing, empty or off its schema.
        PreprocessError: too little data for the split, or a transform off its spec.
    """
    from pyspark.sql import functions as F

    from perucast.io import atomic_directory, write_json_atomic
    from perucast.spark import get_spark, read_tables

    started = time.perf_counter()
    if not config.input_dir.is_dir():
        raise FileNotFoundError(f"input directory {config.input_dir} does not exist")
    use_case = get_use_case(config.use_case)
    horizon, gap = config.resolved_horizon, config.resolved_gap
    spark = spark or get_spark(config.spark)
    log.info("preprocess %s: reading %s", use_case.name, config.input_dir)
    tables = read_tables(spark, list(use_case.tables), config.input_dir)
    input_rows = {name: frame.count() for name, frame in tables.items()}
    log.info("input rows: %s", input_rows)

    result = use_case.build_features(tables, horizon)
    spec = result.spec
    frame = result.frame
    if frame.columns != spec.columns:
        raise PreprocessError(
            f"{use_case.name} transform returned columns {frame.columns}, spec says {spec.columns}"
        )
    with atomic_directory(config.output_dir) as tmp:
        # Run the transform exactly once: every later action reads this staging copy instead of
        # re-running the whole window plan.
        staging = tmp / "staging"  # no leading "_" or ".": Spark skips such paths as hidden
        log.info("running the %s feature transform", use_case.name)
        frame.write.parquet(str(staging))
        frame = spark.read.parquet(str(staging))

        complete = _all_present(spec.feature_columns)
        has_targets = _all_present(spec.target_columns)

        t = spec.time_column
        origin_times = [
            r[t]
            for r in frame.where(complete & has_targets).select(t).distinct().orderBy(t).collect()
        ]
        assigned = split_origins(
            origin_times, config.validation_fraction, config.test_fraction, gap
        )
        log.info(
            "split: %d train, %d validation, %d test origins (gap %d)",
            *(len(assigned[s]) for s in ("train", "validation", "test")),
            gap,
        )
        split_col = F.lit(None).cast("string")
        for name in ("test", "validation", "train"):
            bounds = assigned[name]
            in_split = complete & has_targets & F.col(t).between(bounds[0], bounds[-1])
            split_col = F.when(in_split, F.lit(name)).otherwise(split_col)
        split_col = F.when(
            complete & ~has_targets & (F.col(t) > F.lit(origin_times[-1])), F.lit("inference")
        ).otherwise(split_col)

        log.info("writing features to %s", config.output_dir / "features")
        (
            frame.withColumn("split", split_col)
            .where(F.col("split").isNotNull())
            .repartition("split")
            .sortWithinPartitions(*spec.series_keys, t)
            .write.partitionBy("split")
            .parquet(str(tmp / "features"))
        )
        written = spark.read.parquet(str(tmp / "features"))
        per_split = {
            r["split"]: r
            for r in written.groupBy("split")
            .agg(
                F.count("*").alias("rows"),
                F.min(t).alias("first"),
                F.max(t).alias("last"),
                F.countDistinct(t).alias("origins"),
            )
            .collect()
        }
        rows = {name: per_split[name]["rows"] if name in per_split else 0 for name in SPLITS}
        totals = frame.agg(
            F.count("*").alias("total"),
            F.sum(F.when(~complete, 1).otherwise(0)).alias("incomplete"),
        ).first()
        shutil.rmtree(staging)
        counts = {
            **result.counts,
            "origins_total": totals["total"],
            "dropped_incomplete_features": totals["incomplete"],
            "dropped_in_gaps": totals["total"] - sum(rows.values()) - totals["incomplete"],
        }
        train = written.where(F.col("split") == "train")
        numeric = [*spec.numeric, *spec.target_columns]
        statistics = {
            "use_case": use_case.name,
            "computed_on": "train",
            "rows": rows["train"],
            **_statistics(train, spec, numeric),
        }
        write_json_atomic(tmp / "statistics.json", statistics)
        sample = reference_sample(train, spec)
        # Inside the staging directory: it appears with the other outputs or not at all.
        sample.to_parquet(tmp / REFERENCE_SAMPLE_FILE, index=False)
        log.info("reference sample: %d training rows in %s", len(sample), REFERENCE_SAMPLE_FILE)

        split_info = {
            "time_column": t,
            "period": spec.period,
            "horizon": horizon,
            "gap_periods": gap,
            "splits": {
                name: {
                    "first": str(per_split[name]["first"]) if name in per_split else None,
                    "last": str(per_split[name]["last"]) if name in per_split else None,
                    "origins": per_split[name]["origins"] if name in per_split else 0,
                }
                for name in SPLITS
            },
        }
        write_json_atomic(tmp / "split.json", split_info)
        seconds = time.perf_counter() - started
        report = {
            "use_case": use_case.name,
            "horizon": horizon,
            "input_dir": str(config.input_dir),
            "input_rows": input_rows,
            "rows": rows,
            "split": split_info,
            "counts": counts,
            "features": {
                "time_column": t,
                "series_keys": list(spec.series_keys),
                "categorical": list(spec.categorical),
                "numeric": list(spec.numeric),
                "targets": spec.target_columns,
            },
            "spark": {
                "master": spark.sparkContext.master,
                # What the session actually ran with (spark-submit's --conf can override ours).
                "settings": {k: spark.conf.get(k, None) for k in config.spark.settings()},
            },
            "reference_sample": {
                "file": REFERENCE_SAMPLE_FILE,
                "rows": len(sample),
                "seed": REFERENCE_SAMPLE_SEED,
            },
            "seconds": round(seconds, 2),
        }
        write_json_atomic(tmp / "report.json", report)
        (tmp / "report.md").write_text(_markdown(report))
    log.info("preprocess %s done in %.1fs: %s", use_case.name, seconds, rows)
    return PreprocessResult(
        output_dir=config.output_dir,
        rows=rows,
        split=split_info,
        counts=counts,
        seconds=seconds,
        spec=spec,
        input_rows=input_rows,
    )


def _parse_conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--conf")
        conf[key] = value
    return conf


def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    input_dir: Annotated[Path, typer.Option("--input", help="Validated raw tables.")],
    output_dir: Annotated[
        Path, typer.Option("--output", help="Feature dataset (replaced atomically).")
    ],
    horizon: Annotated[
        int | None, typer.Option(help="Periods ahead (default: the use case's).")
    ] = None,
    validation_fraction: Annotated[
        float, typer.Option(help="Share of origins for validation.")
    ] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Share of origins for test.")] = 0.15,
    master: Annotated[
        str, typer.Option(help="local[*], local[N], spark://..., k8s://https://...")
    ] = "local[*]",
    driver_memory: Annotated[str, typer.Option(help="spark.driver.memory")] = "2g",
    shuffle_partitions: Annotated[
        int | None, typer.Option(help="spark.sql.shuffle.partitions (default: 2 x cores)")
    ] = None,
    executor_instances: Annotated[int | None, typer.Option(help="Executors (Kubernetes).")] = None,
    executor_memory: Annotated[str, typer.Option(help="Executor heap (Kubernetes).")] = "4g",
    executor_cores: Annotated[int, typer.Option(help="Cores per executor (Kubernetes).")] = 2,
    k8s_image: Annotated[
        str | None, typer.Option(help="Executor image, pinned (Kubernetes).")
    ] = None,
    k8s_namespace: Annotated[str, typer.Option(help="Namespace (Kubernetes).")] = "perucast",
    k8s_service_account: Annotated[
        str, typer.Option(help="Driver service account (Kubernetes).")
    ] = "perucast-spark",
    conf: Annotated[
        list[str] | None, typer.Option(help="Extra Spark setting KEY=VALUE (repeatable).")
    ] = None,
) -> None:
    """Build the feature dataset of a use case with Spark (local or on Kubernetes)."""
    from perucast.exitcodes import ExitCode
    from perucast.logs import setup_logging
    from perucast.spark import TableInputError, TableMissingError

    setup_logging()
    try:
        config = PreprocessConfig(
            use_case=use_case,
            input_dir=input_dir,
            output_dir=output_dir,
            horizon=horizon,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            spark=SparkConfig(
                master=master,
                driver_memory=driver_memory,
                shuffle_partitions=shuffle_partitions,
                executor_instances=executor_instances,
                executor_memory=executor_memory,
                executor_cores=executor_cores,
                k8s_image=k8s_image,
                k8s_namespace=k8s_namespace,
                k8s_service_account=k8s_service_account,
                conf=_parse_conf(conf or []),
            ),
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        result = preprocess(config)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND) from None
    except TableMissingError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND) from None
    except TableInputError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.DATA_INVALID) from None
    except PreprocessError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.DATA_INVALID) from None
    typer.echo(f"{use_case}: features in {result.features_dir} ({result.seconds:.1f}s)")
    for name in SPLITS:
        part = result.split["splits"][name]
        typer.echo(f"  {name:<11} {result.rows[name]:>9,} rows  {part['first']} .. {part['last']}")


app = typer.Typer(add_completion=False, help=__doc__)
app.command()(cli)

if __name__ == "__main__":
    app()
