"""Evaluate step: a rolling-origin backtest of an exported model against baselines and the oracle.

Every forecaster forecasts H periods ahead from the same origins of the test split (every
``stride``-th period, every series): the candidate SavedModel (through its ``serving_default``
signature, exactly as a client calls it), the currently blessed model when there is one,
seasonal naive, exponential smoothing (statsmodels), gradient-boosted trees (Spark ML) and the
oracle (the generator's noise-free expectation: the floor no forecaster can beat on average).
Scores per model, horizon and segment (MASE, RMSE, sMAPE, wQL, 80% coverage), the issue's goals,
the blessing and the domain advice (stocking plan or harvest advice) from the candidate's
latest forecasts go to ``output_dir``, which is replaced atomically:

* ``metrics.json``: flat headline numbers per model (for ``dvc metrics``), goals, blessing;
* ``blessing.json``: the decision and its reasons (what the push step reads);
* ``report/``: ``report.md``, ``report.html`` (plots embedded), ``metrics.json`` (every
  score), ``scores.csv``, ``by_horizon.csv`` (for ``dvc plots``), ``plots/*.png``;
* ``forecasts.parquet``: every forecast scored (long frame, ``perucast.forecasts``);
* ``advice.csv`` and ``advice.md``: the planner's view of the latest forecasts.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import typer
from pydantic import BaseModel, ConfigDict, Field

from models import USE_CASE_NAMES, UseCaseName
from perucast.baselines import BaselineConfig
from perucast.blessing import BlessingConfig
from perucast.spark import SparkConfig

log = logging.getLogger("perucast.evaluate")

Baseline = Literal["seasonal_naive", "ets", "gbt"]
CANDIDATE, BLESSED, ORACLE = "network", "blessed", "oracle"
# The margin by which the candidate must beat seasonal naive (the goals).
DEFAULT_NAIVE_MARGIN = {"crop_demand": 0.25, "fish_stock": 0.20}
DEFAULT_TOLERANCE = 0.02  # how much worse than the served model a candidate may be
PREDICT_BATCH = 8192


class EvaluateConfig(BaseModel):
    """Configuration of the evaluate step (validated when a pipeline is built)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    features_dir: Path
    model_dir: Path = Field(description="The candidate's version directory.")
    output_dir: Path
    raw_dir: Path | None = Field(
        default=None, description="Raw data with the oracle table (synthetic data only)."
    )
    blessed_model_dir: Path | None = Field(
        default=None, description="Version directory of the model served now (None: first run)."
    )
    baselines: tuple[Baseline, ...] = ("seasonal_naive", "ets", "gbt")
    baseline_config: BaselineConfig = Field(default_factory=BaselineConfig)
    blessing: BlessingConfig | None = Field(
        default=None, description="None: MASE, the use case's margin vs naive, 2% tolerance."
    )
    service_level: float = Field(default=0.9, gt=0, lt=1, description="crop_demand orders.")
    spark: SparkConfig = Field(
        default_factory=lambda: SparkConfig(master="local[2]", driver_memory="2g")
    )

    def resolved_blessing(self) -> BlessingConfig:
        return self.blessing or default_blessing(self.use_case)


def default_blessing(
    use_case: str, margin: float | None = None, tolerance: float = DEFAULT_TOLERANCE
) -> BlessingConfig:
    """MASE, the use case's margin vs seasonal naive (or ``margin``), ``tolerance`` vs blessed."""
    return BlessingConfig(
        metric="mase",
        min_improvement_vs_naive=DEFAULT_NAIVE_MARGIN.get(use_case, 0.0)
        if margin is None
        else margin,
        max_regression_vs_blessed=tolerance,
    )


@dataclass
class EvaluateResult:
    output_dir: Path
    blessed: bool
    goals_passed: bool
    headline: dict[str, dict[str, float | None]]
    seconds: float


def model_forecasts(
    model_dir: Path, rows: pd.DataFrame, spec, name: str, *, with_actuals: bool = True
) -> pd.DataFrame:
    """Forecasts of an exported model for feature ``rows`` through its serving signature."""
    import tensorflow as tf

    from perucast.export import load_serving, read_metadata
    from perucast.forecasts import wide_to_long

    serve = load_serving(model_dir)
    inputs = read_metadata(model_dir)["inputs"]
    missing = [c for c in inputs if c not in rows.columns]
    if missing:
        raise ValueError(f"{model_dir} needs inputs the feature dataset lacks: {missing}")
    out: dict[str, list[np.ndarray]] = {"p10": [], "p50": [], "p90": []}
    for start in range(0, len(rows), PREDICT_BATCH):
        part = rows.iloc[start : start + PREDICT_BATCH]
        feed = {}
        for col, dtype in inputs.items():
            values = part[col].to_numpy()
            feed[col] = (
                tf.constant(values.astype(str).astype(object), tf.string)
                if dtype == "string"
                else tf.constant(values.astype(dtype))
            )
        result = serve(**feed)
        for key in out:
            out[key].append(result[key].numpy())
    quantiles = {k: np.concatenate(v) if v else np.zeros((0, spec.horizon)) for k, v in out.items()}
    actuals = rows[spec.target_columns].to_numpy(dtype=float) if with_actuals else None
    return wide_to_long(
        rows,
        quantiles,
        time_column=spec.time_column,
        series_keys=spec.series_keys,
        period=spec.period,
        model=name,
        actuals=actuals,
    )


def oracle_forecasts(raw_dir: Path, use_case, like: pd.DataFrame) -> pd.DataFrame:
    """The oracle's 'forecast' of every row of ``like``: the expected value of its target time."""
    from perucast.datasets import read_table

    t = use_case.target
    oracle = read_table(
        raw_dir, use_case.oracle.name, [t.time_column, *t.series_keys, t.oracle_column]
    )
    oracle[t.time_column] = pd.to_datetime(oracle[t.time_column])
    for k in t.series_keys:
        oracle[k] = oracle[k].astype(str)
    frame = like.drop(columns=["p10", "p50", "p90"]).merge(
        oracle.rename(columns={t.time_column: "target_time"}),
        on=["target_time", *t.series_keys],
        how="left",
    )
    if frame[t.oracle_column].isna().any():
        raise ValueError(
            f"the oracle table in {raw_dir} lacks {int(frame[t.oracle_column].isna().sum())} "
            "target periods of the backtest (is it the raw data these features were built from?)"
        )
    for q in ("p10", "p50", "p90"):
        frame[q] = frame[t.oracle_column].to_numpy(dtype=float)
    frame["model"] = ORACLE
    return frame[like.columns]


def _headline(scores: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    overall = scores[scores["group"] == "overall"]
    out = {}
    for _, row in overall.iterrows():
        out[row["model"]] = {
            m: (None if pd.isna(row[m]) else round(float(row[m]), 6))
            for m in ("mase", "rmse", "smape", "wql", "coverage_80")
        }
    return out


def advice(use_case: str, latest: pd.DataFrame, features: pd.DataFrame, service_level: float):
    """The planner's table from the candidate's forecasts at each series' latest origin.

    crop_demand: the newsvendor order per region × crop for next week (horizon 1) and for the
    whole horizon, at ``service_level``, with the expected shortfall. fish_stock: per zone, the
    biomass forecast for the month the next fishing season opens (the first target month that
    is an opening month within the horizon, else the last), the probability of falling below
    the limit reference point, the harvest-control-rule quota and the juvenile alert.
    """
    if use_case == "crop_demand":
        from models.crop_demand.planning import stocking_plan

        plan = stocking_plan(latest, service_level, sort_crossed=True)
        columns = ["region", "crop", "origin", "horizon", "target_time", "p10", "p50", "p90"]
        return plan[[*columns, "service_level", "order_quantity", "expected_shortfall"]]
    if use_case == "fish_stock":
        from models.fish_stock.advice import stock_advice
        from models.fish_stock.generator import FIRST_SEASON_MONTHS, SECOND_SEASON_MONTHS

        openings = {FIRST_SEASON_MONTHS[0], SECOND_SEASON_MONTHS[0]}
        rows = []
        for _, group in latest.groupby("zone"):
            group = group.sort_values("horizon")
            opening = group[pd.DatetimeIndex(group["target_time"]).month.isin(openings)]
            rows.append((opening if len(opening) else group).iloc[0 if len(opening) else -1])
        picked = pd.DataFrame(rows)
        juvenile = features.sort_values("month").groupby("zone")["sonar_juvenile_share"].last()
        picked["juvenile_share"] = picked["zone"].map(juvenile).astype(float)
        table = stock_advice(picked[["zone", "p10", "p50", "p90", "juvenile_share"]])
        return picked[["zone", "origin", "horizon", "target_time"]].merge(table, on="zone")
    raise ValueError(f"no advice defined for use case {use_case!r}")


def evaluate(config: EvaluateConfig, spark=None) -> EvaluateResult:
    """Run the backtest, score, decide the blessing and write the output directory."""
    from models import get_use_case
    from perucast import baselines as bl
    from perucast.datasets import read_features
    from perucast.evaluation import MASE_FACTORS, bless, goals, score, series_scales
    from perucast.evaluation_report import write_report
    from perucast.export import read_metadata
    from perucast.forecasts import check_forecast_frame
    from perucast.io import atomic_directory, write_json_atomic, write_text_atomic

    started = time.perf_counter()
    uc = get_use_case(config.use_case)
    features_dir = Path(config.features_dir)
    split_info = json.loads((features_dir / "split.json").read_text())
    spec = uc.feature_spec(int(split_info["horizon"]))
    keys = list(spec.series_keys)
    meta = read_metadata(config.model_dir)
    if meta["feature_spec"]["horizon"] != spec.horizon:
        raise ValueError(
            f"{config.model_dir} forecasts {meta['feature_spec']['horizon']} periods, the "
            f"features {spec.horizon}"
        )

    origins = bl.backtest_origins(features_dir, spec, "test", config.baseline_config.stride)
    test = read_features(features_dir, spec, splits=["test"])
    wanted = set(pd.to_datetime(origins[spec.time_column]))
    rows = test[test[spec.time_column].isin(wanted)].sort_values([spec.time_column, *keys])
    log.info(
        "backtest: %d origins x %d series, H=%d",
        len(wanted),
        len(rows) // max(len(wanted), 1),
        spec.horizon,
    )

    frames = [model_forecasts(config.model_dir, rows, spec, CANDIDATE)]
    if config.blessed_model_dir is not None:
        frames.append(model_forecasts(config.blessed_model_dir, rows, spec, BLESSED))
    season = uc.target.season_length
    for name in config.baselines:
        t0 = time.perf_counter()
        if name == "seasonal_naive":
            frames.append(bl.seasonal_naive(features_dir, spec, origins, season_length=season))
        elif name == "ets":
            frames.append(
                bl.ets(
                    features_dir, spec, origins, season_length=season, config=config.baseline_config
                )
            )
        elif name == "gbt":
            if spark is None:
                from perucast.spark import get_spark

                spark = get_spark(config.spark)
            frames.append(
                bl.gbt(
                    spark,
                    features_dir,
                    spec,
                    origins,
                    season_length=season,
                    config=config.baseline_config,
                )
            )
        log.info("baseline %s: %.1fs", name, time.perf_counter() - t0)
    if config.raw_dir is not None:
        frames.append(oracle_forecasts(Path(config.raw_dir), uc, frames[0]))
    forecasts = pd.concat([check_forecast_frame(f, keys) for f in frames], ignore_index=True)

    # MASE scale: each series' seasonal-naive MAE on the history before the test period.
    series = bl.load_series(features_dir, spec)
    series[spec.time_column] = pd.to_datetime(series[spec.time_column])
    first_test = pd.Timestamp(split_info["splits"]["test"]["first"])
    history = series[series[spec.time_column] < first_test]
    scales = series_scales(history, spec.time_column, keys, spec.target, season)
    # Segments: each series key (crop and region; zone).
    scored = score(forecasts, scales, keys)
    goal_list = goals(scored, MASE_FACTORS.get(config.use_case, 1.0))
    blessing = bless(
        scored,
        config.resolved_blessing(),
        blessed=BLESSED if config.blessed_model_dir is not None else None,
    )

    # The planner's view: forecasts from each series' latest origin (the inference split).
    inference = read_features(features_dir, spec, splits=["inference"])
    latest_rows = inference.sort_values(spec.time_column).groupby(keys).tail(1)
    latest = model_forecasts(config.model_dir, latest_rows, spec, CANDIDATE, with_actuals=False)
    plan = advice(config.use_case, latest, inference, config.service_level)

    headline = _headline(scored)
    context = {
        "use_case": config.use_case,
        "model_dir": str(config.model_dir),
        "model_version": Path(config.model_dir).name,
        "blessed_model_dir": str(config.blessed_model_dir) if config.blessed_model_dir else None,
        "test_period": "{first} .. {last}".format(**split_info["splits"]["test"]),
        "origins": len(wanted),
        "series": int(rows[keys].drop_duplicates().shape[0]),
        "horizon": spec.horizon,
        "stride": config.baseline_config.stride,
        "data_version": meta.get("data_version", {}).get("features_md5"),
        "code_revision": meta.get("code_revision"),
    }
    with atomic_directory(config.output_dir) as tmp:
        write_report(
            tmp / "report",
            scored,
            goal_list,
            blessing,
            forecasts,
            series_keys=keys,
            history=history,
            time_column=spec.time_column,
            target=spec.target,
            title=f"{uc.title}: evaluation of version {Path(config.model_dir).name}",
            context=context,
        )
        forecasts.to_parquet(tmp / "forecasts.parquet", index=False)
        write_text_atomic(tmp / "advice.csv", plan.to_csv(index=False))
        write_text_atomic(tmp / "advice.md", _advice_markdown(config.use_case, plan))
        write_json_atomic(
            tmp / "blessing.json", {**blessing.to_dict(), "model_dir": str(config.model_dir)}
        )
        write_json_atomic(
            tmp / "metrics.json",
            {
                "blessed": blessing.blessed,
                "goals_passed": all(g.passed is True for g in goal_list),
                **{model: values for model, values in headline.items()},
            },
        )
    seconds = time.perf_counter() - started
    log.info("evaluation written to %s (%.1fs)", config.output_dir, seconds)
    return EvaluateResult(
        output_dir=Path(config.output_dir),
        blessed=blessing.blessed,
        goals_passed=all(g.passed is True for g in goal_list),
        headline=headline,
        seconds=seconds,
    )


def _advice_markdown(use_case: str, plan: pd.DataFrame) -> str:
    if use_case == "crop_demand":
        week = plan[plan["horizon"] == 1].sort_values("order_quantity", ascending=False)
        lines = [
            f"# Stocking plan for the week of {pd.Timestamp(week['target_time'].iloc[0]).date()}",
            "",
            f"Order quantity at a {week['service_level'].iloc[0]:.0%} service level (newsvendor "
            "quantile of the demand forecast) and the demand expected to go unserved.",
            "",
            "| region | crop | P10 t | P50 t | P90 t | order t | expected shortfall t |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for _, r in week.head(25).iterrows():
            lines.append(
                f"| {r['region']} | {r['crop']} | {r['p10']:,.1f} | {r['p50']:,.1f} | "
                f"{r['p90']:,.1f} | {r['order_quantity']:,.1f} | {r['expected_shortfall']:,.2f} |"
            )
        lines.append("")
        lines.append(f"({len(week)} region × crop series; all horizons in advice.csv)")
        return "\n".join(lines) + "\n"
    lines = [
        "# Harvest advice for the next season",
        "",
        "| zone | month | P10 Mt | P50 Mt | P90 Mt | P(below limit) | quota kt | juveniles "
        "| alert |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for _, r in plan.iterrows():
        lines.append(
            f"| {r['zone']} | {pd.Timestamp(r['target_time']):%Y-%m} | "
            f"{r['biomass_p10_t'] / 1e6:.2f} | "
            f"{r['biomass_p50_t'] / 1e6:.2f} | {r['biomass_p90_t'] / 1e6:.2f} | "
            f"{r['prob_below_limit']:.0%} | {r['quota_t'] / 1e3:,.0f} | "
            f"{r['juvenile_share']:.0%} | {'YES' if r['juvenile_alert'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


# --- CLI --------------------------------------------------------------------------------------


def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    features_dir: Annotated[Path, typer.Option("--features", help="Preprocessed features.")],
    model_dir: Annotated[Path, typer.Option("--model", help="Candidate version directory.")],
    output_dir: Annotated[Path, typer.Option("--output", help="Evaluation output (replaced).")],
    raw_dir: Annotated[
        Path | None, typer.Option("--raw", help="Raw data with the oracle table.")
    ] = None,
    blessed_model_dir: Annotated[
        Path | None, typer.Option("--blessed-model", help="Version served now.")
    ] = None,
    stride: Annotated[int, typer.Option(help="Evaluate every n-th test origin.")] = 1,
    baselines: Annotated[
        str, typer.Option(help="Comma-separated: seasonal_naive,ets,gbt.")
    ] = "seasonal_naive,ets,gbt",
    min_improvement_vs_naive: Annotated[
        float | None, typer.Option(help="Blessing margin vs naive (default: use case's).")
    ] = None,
    max_regression_vs_blessed: Annotated[
        float, typer.Option(help="Blessing tolerance vs the blessed model.")
    ] = DEFAULT_TOLERANCE,
    service_level: Annotated[float, typer.Option(help="Order service level (crops).")] = 0.9,
) -> None:
    """Backtest a candidate model, score it against baselines, decide its blessing."""
    from perucast.exitcodes import ExitCode
    from perucast.logs import setup_logging

    setup_logging()
    try:
        config = EvaluateConfig(
            use_case=use_case,
            features_dir=features_dir,
            model_dir=model_dir,
            output_dir=output_dir,
            raw_dir=raw_dir,
            blessed_model_dir=blessed_model_dir,
            baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
            baseline_config=BaselineConfig(stride=stride),
            blessing=default_blessing(
                use_case, min_improvement_vs_naive, max_regression_vs_blessed
            ),
            service_level=service_level,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    for path, what in (
        (features_dir / "split.json", "feature dataset"),
        (model_dir / "saved_model.pb", "SavedModel"),
    ):
        if not path.exists():
            typer.echo(f"error: {path.parent} is not a {what} (no {path.name})", err=True)
            raise typer.Exit(ExitCode.INPUT_NOT_FOUND)
    try:
        result = evaluate(config)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    for model, values in result.headline.items():
        shown = {k: float("nan") if v is None else v for k, v in values.items()}
        typer.echo(
            f"  {model:<15} MASE {shown['mase']:.3f}  wQL {shown['wql']:.4f}"
            f"  cov80 {shown['coverage_80']:.2f}"
        )
    typer.echo(
        f"{use_case}: {'BLESSED' if result.blessed else 'not blessed'}; goals "
        f"{'met' if result.goals_passed else 'not all met'}; report in {result.output_dir}/report"
    )


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
app.command()(cli)

if __name__ == "__main__":
    app()
