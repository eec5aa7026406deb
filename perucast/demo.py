"""``make demo``: the main job end to end on the embedded default, with results to look at.

1. Starts ``perucast-model-server`` on an empty serving config that it polls every second
   (the server the deploy steps roll models out to).
2. Runs both use cases' training pipelines through ``kfp.local`` (SubprocessRunner): synthetic
   ``small`` data, validation, Spark features, 2-worker TensorFlow training, the backtest and
   blessing, the infra-validated push and the canary deploy (``canary`` -> smoke check ->
   ``stable``).
3. Calls gRPC Predict through the ``stable`` label for a few series of each use case and prints
   the forecasts and the planner's advice (order quantities; catch quota and risk).
4. Monitoring act (crop_demand): turns prediction logging on (the model's ``logging_config``),
   replays 4 weeks of forecast requests, then the 4 following weeks with a coastal El Niño
   (the Niño 1+2 inputs 3 °C warmer), and runs the monitor on each window: drift against the
   version's training statistics, and realized accuracy against the actual values as they
   stood at each time (pending until they arrive).
5. Writes ``report.html`` (step times, data plots, evaluation plots, forecast fans, advice, the
   monitoring reports) and ``demo.json`` (wall time and each step's seconds), then stops the
   server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from models import USE_CASE_NAMES
from models.base import Scale
from perucast import plots
from perucast.datasets import oracle_mase, read_table
from perucast.logs import setup_logging

log = logging.getLogger("perucast.demo")
console = Console()


def _summary_table(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)


def crop_summary(validated: Path, plot_dir: Path) -> list[Path]:
    demand = read_table(validated, "historical_demand")
    prices = read_table(validated, "market_trends")
    weather = read_table(validated, "weather")
    national = demand["demand_tonnes"].sum()
    lima = demand.loc[demand["region"] == "lima", "demand_tonnes"].sum()
    years = pd.to_datetime(demand["week_start"]).dt.year
    merged = demand.merge(prices, on=["week_start", "region", "crop"])
    nino = weather.groupby("week_start")["nino12_anomaly_c"].first()
    warm_weeks = set(nino[nino >= 1.0].index)
    rice = merged[merged["crop"] == "rice"]
    rice_warm = rice[rice["week_start"].isin(warm_weeks)]["price_pen_per_kg"].mean()
    rice_other = rice[~rice["week_start"].isin(warm_weeks)]["price_pen_per_kg"].mean()
    rows = [
        ("rows (historical_demand)", f"{len(demand):,}"),
        ("period", f"{demand['week_start'].min()} .. {demand['week_start'].max()} (weekly)"),
        ("regions × crops", f"{demand['region'].nunique()} × {demand['crop'].nunique()}"),
        ("national demand per year", f"{national / years.nunique() / 1e6:,.1f} Mt"),
        ("Lima's share of national demand", f"{lima / national:.1%}"),
        ("weeks with Niño 1+2 anomaly ≥ +1 °C", f"{len(warm_weeks)}"),
        (
            "rice price, warm weeks vs others",
            f"{rice_warm:.2f} vs {rice_other:.2f} PEN/kg" if warm_weeks else "no warm weeks",
        ),
        (
            "oracle MASE, last 2 years (best possible)",
            f"{oracle_mase(validated, 'crop_demand'):.2f}",
        ),
    ]
    _summary_table("crop_demand", rows)
    return [
        plots.demand_by_region(demand, plot_dir / "crop_demand_by_region.png"),
        plots.crop_seasonality(demand, prices, plot_dir / "crop_seasonality.png"),
    ]


def fish_summary(validated: Path, plot_dir: Path) -> list[Path]:
    stock = read_table(validated, "stock")
    sonar = read_table(validated, "sonar")
    satellite = read_table(validated, "satellite")
    total = stock.groupby("month")["biomass_tonnes"].sum()
    landings = stock.groupby(pd.to_datetime(stock["month"]).dt.year)["catch_tonnes"].sum()
    by_year = total.groupby(pd.to_datetime(total.index).year)
    true_total = read_table(validated, "oracle").groupby("month")["expected"].sum()
    true_by_year = true_total.groupby(pd.to_datetime(true_total.index).year)
    rows = [
        (
            "rows (satellite / sonar / stock)",
            f"{len(satellite):,} / {len(sonar):,} / {len(stock):,}",
        ),
        ("stock period", f"{stock['month'].min()} .. {stock['month'].max()} (monthly)"),
        ("median biomass (3 zones)", f"{total.median() / 1e6:.1f} Mt"),
        (
            "lowest biomass 1983 / 1998, true (oracle)",
            f"{true_by_year.min().get(1983, np.nan) / 1e6:.1f} / "
            f"{true_by_year.min().get(1998, np.nan) / 1e6:.1f} Mt",
        ),
        (
            "lowest biomass 1983 / 1998, assessed",
            f"{by_year.min().get(1983, np.nan) / 1e6:.1f} / "
            f"{by_year.min().get(1998, np.nan) / 1e6:.1f} Mt",
        ),
        ("median annual landings", f"{landings.median() / 1e6:.1f} Mt"),
        ("surveys", f"{sonar['survey_id'].nunique()}"),
        (
            "oracle MASE, last 2 years (best possible)",
            f"{oracle_mase(validated, 'fish_stock'):.2f}",
        ),
    ]
    _summary_table("fish_stock", rows)
    return [
        plots.biomass_vs_nino(
            stock, plot_dir / "fish_biomass_vs_nino.png", oracle=read_table(validated, "oracle")
        ),
        plots.chlorophyll_map(satellite, plot_dir / "fish_chlorophyll_map.png"),
    ]


# --- the pipelines ----------------------------------------------------------------------------


def _run_dir(pipeline_root: Path, use_case: str) -> Path:
    """The newest kfp.local run directory of the use case's pipeline."""
    from pipelines.forecast import pipeline_name

    runs = sorted(pipeline_root.glob(f"{pipeline_name(use_case)}-*"))
    if not runs:
        raise FileNotFoundError(f"no kfp.local run of {use_case} under {pipeline_root}")
    return runs[-1]


def run_pipeline(name: str, out: Path, target: str, seed: int, scale: Scale, workers: int):
    """One use case's training pipeline through kfp.local; prints each step as it finishes."""
    from components.ingest import SourceConfig
    from pipelines.config import PipelineConfig
    from pipelines.run import run_local

    config = PipelineConfig(
        use_case=name,
        source=SourceConfig(kind="synthetic", seed=seed, scale=scale),
        executor="local",
        workers=workers,
        # crop_demand: 2048-row global batches halve the gradient all-reduces per epoch (two
        # workers share two cores here) and patience 3 stops after the best epoch sooner; on
        # the small data that kept MASE and every goal (0.868 vs 0.874 at 1024 / patience 5).
        batch_size=2048 if name == "crop_demand" else None,
        patience=3 if name == "crop_demand" else None,
        model_repository=str(out / "model_repository"),
        # GBT (Spark ML) is left out of the demo's backtest for time; `perucast pipeline run`
        # and the cluster runs fit it.
        baselines=("seasonal_naive", "ets"),
        deploy_mode="local",
        serving_config=str(out / "serving" / "models.config"),
        serving_target=target,
    )
    console.rule(f"[bold]{name}[/bold]: training pipeline (kfp.local, {workers} workers)")

    def on_step(record: dict) -> None:
        console.print(f"[green]✓[/green] {name} {record['step']:<11} {record['seconds']:7.1f}s")

    result = run_local(config, out / "pipeline_runs", on_step=on_step)
    if not result.succeeded:
        raise SystemExit(f"the {name} pipeline failed: {result.error}")
    return result


def evaluation_summary(name: str, evaluation: Path) -> None:
    metrics = json.loads((evaluation / "report" / "metrics.json").read_text())
    headline = json.loads((evaluation / "metrics.json").read_text())
    table = Table(title=f"{name}: backtest on the test period", title_justify="left")
    for header in ("model", "MASE", "RMSE", "wQL", "80% coverage"):
        table.add_column(header, justify="left" if header == "model" else "right")
    for model, m in headline.items():
        if not isinstance(m, dict):
            continue
        cells = [
            "–" if m.get(k) is None else f"{m[k]:{fmt}}"
            for k, fmt in (
                ("mase", ".3f"),
                ("rmse", ",.1f"),
                ("wql", ".4f"),
                ("coverage_80", ".0%"),
            )
        ]
        table.add_row(model, *cells)
    console.print(table)
    for goal in metrics["goals"]:
        mark = {True: "[green]met[/green]", False: "[red]not met[/red]"}.get(goal["passed"], "?")
        console.print(f"goal {goal['name']}: {mark} — {goal['detail']}")
    blessed = headline["blessed"]
    console.print(f"blessing: {'[green]BLESSED[/green]' if blessed else '[red]not blessed[/red]'}")


# --- serving ----------------------------------------------------------------------------------

SAMPLE_SERIES = 3


def sample_rows(name: str, features_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest test-split origin of the largest series, and all feature rows (for advice)."""
    from models import get_use_case

    split = json.loads((features_dir / "split.json").read_text())
    spec = get_use_case(name).feature_spec(int(split["horizon"]))
    from perucast.datasets import read_features

    frame = read_features(features_dir, spec, splits=["test"])
    latest = frame[frame[spec.time_column] == frame[spec.time_column].max()]
    level = latest[spec.target] if spec.target in latest else latest.iloc[:, 0]
    top = latest.assign(_level=level).sort_values("_level", ascending=False)
    return top.head(SAMPLE_SERIES).drop(columns="_level"), frame


def predict_and_advise(
    name: str, target: str, features_dir: Path, validated: Path, plot_dir: Path
) -> dict:
    """gRPC Predict through the ``stable`` label; prints forecasts and the planner's advice."""
    from components.evaluate import advice
    from serving.client import ForecastClient

    rows, features = sample_rows(name, features_dir)
    with ForecastClient(target, use_case=name, label="stable", timeout_s=30) as client:
        started = time.perf_counter()
        forecast = client.predict(rows, ignore_extra=True)
        latency_ms = (time.perf_counter() - started) * 1e3
    long = forecast.to_frame()
    spec = forecast.model_spec
    keys = list(forecast.series_keys)
    console.rule(
        f"[bold]{name}[/bold]: gRPC Predict {spec.name} version {spec.version} (label stable), "
        f"{len(rows)} series in {latency_ms:.0f} ms"
    )
    table = Table(title_justify="left")
    for header in (*keys, "origin", "h", "target", "P10", "P50", "P90"):
        table.add_column(
            header, justify="right" if header in ("h", "P10", "P50", "P90") else "left"
        )
    shown = long[long["horizon"].isin([1, 2, 3, int(long["horizon"].max())])]
    for row in shown.itertuples(index=False):
        r = row._asdict()
        table.add_row(
            *(str(r[k]) for k in keys),
            str(pd.Timestamp(r["origin"]).date()),
            str(r["horizon"]),
            str(pd.Timestamp(r["target_time"]).date()),
            *(f"{r[q]:,.0f}" for q in ("p10", "p50", "p90")),
        )
    console.print(table)
    plan = advice(name, long, features, 0.9)
    _print_advice(name, plan)
    if name == "crop_demand":
        history = read_table(validated, "historical_demand")
        time_column, target_column, unit, label = "week_start", "demand_tonnes", 1.0, "tonnes"
    else:
        history = read_table(validated, "stock")
        time_column, target_column, unit, label = "month", "biomass_tonnes", 1e6, "Mt"
    history = history.rename(columns={time_column: "time"})
    fan = plots.forecast_fan(
        history,
        long,
        keys,
        "time",
        target_column,
        plot_dir / f"{name}_forecast_fan.png",
        f"{name}: forecasts served over gRPC (version {spec.version})",
        unit=unit,
        unit_label=label,
    )
    return {
        "version": spec.version,
        "latency_ms": latency_ms,
        "forecast": long,
        "advice": plan,
        "fan": fan,
    }


ADVICE_COLUMNS = {
    # next week's order per series at a 90% service level
    "crop_demand": ["region", "crop", "target_time", "p50", "order_quantity", "expected_shortfall"],
    # the biomass when the next season opens, the risk of falling below the limit, the quota
    "fish_stock": [
        "zone",
        "target_time",
        "biomass_p50_t",
        "prob_below_limit",
        "quota_t",
        "juvenile_alert",
    ],
}


def _print_advice(name: str, plan: pd.DataFrame) -> None:
    rows = plan[plan["horizon"] == 1] if name == "crop_demand" else plan
    columns = [c for c in ADVICE_COLUMNS[name] if c in rows.columns]
    title = (
        "orders for next week (90% service level)"
        if name == "crop_demand"
        else "advice for the next season's opening"
    )
    table = Table(title=f"{name}: {title}", title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if rows[column].dtype == object else "right")
    for record in rows[columns].itertuples(index=False):
        cells = []
        for value in record:
            if isinstance(value, float | np.floating):
                cells.append(f"{value:.2f}" if abs(value) < 10 else f"{value:,.0f}")
            elif isinstance(value, pd.Timestamp):
                cells.append(str(value.date()))
            else:
                cells.append(str(value))
        table.add_row(*cells)
    console.print(table)


# --- report -----------------------------------------------------------------------------------


def _table_block(frame: pd.DataFrame, limit: int = 20) -> tuple[str, tuple[list[str], list]]:
    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return f"{value:,.2f}"
        if isinstance(value, pd.Timestamp):
            return str(value.date())
        return str(value)

    rows = [[cell(v) for v in row] for row in frame.head(limit).itertuples(index=False)]
    return ("table", ([str(c) for c in frame.columns], rows))


MONITORED = "crop_demand"
REPLAY_WEEKS = 4  # before the shift; as many again with it
EL_NINO_DELTA_C = 3.0


def monitoring_act(name: str, out: Path, server, serving_config: Path, run_dir: Path) -> dict:
    """Prediction logs, an El Niño replay, and the monitor's drift and accuracy reports."""
    from components.monitor import MonitorConfig, monitor, summary_text
    from models import get_use_case
    from perucast.datasets import read_features
    from perucast.replay import (
        actuals_as_of,
        enable_prediction_logging,
        replay_weeks,
        wait_for_prediction_logging,
    )

    console.rule(f"[bold]{name}[/bold]: monitoring (prediction logs, drift, realized accuracy)")
    work = out / "monitoring"
    prefix = work / "prediction_logs" / name
    enable_prediction_logging(serving_config, name, prefix, sampling_rate=1.0)
    wait_for_prediction_logging(server.log_path, name, prefix)
    console.print(f"prediction logging on: {prefix}-*.tfrecord (sampling rate 1.0)")
    features_dir = run_dir / "preprocess" / "features"
    validated = run_dir / "validate" / "validated"
    split = json.loads((features_dir / "split.json").read_text())
    spec = get_use_case(name).feature_spec(int(split["horizon"]))
    test = read_features(features_dir, spec, splits=["test"])
    origins = sorted(pd.to_datetime(test[spec.time_column]).unique())[-2 * REPLAY_WEEKS :]
    before, during = origins[:REPLAY_WEEKS], origins[REPLAY_WEEKS:]
    started = pd.Timestamp.now(tz="UTC").floor("s")
    first = replay_weeks(server.target, name, test, before)
    time.sleep(1.1)  # log timestamps are whole seconds: keep the two windows apart
    shift_at = pd.Timestamp.now(tz="UTC").floor("s")
    second = replay_weeks(
        server.target, name, test, during, shift_from=during[0], delta_c=EL_NINO_DELTA_C
    )
    console.print(
        f"replayed {len(before)} weeks ({first.instances} forecasts) and then {len(during)} "
        f"El Niño weeks (Niño 1+2 +{EL_NINO_DELTA_C:g} °C, {second.instances} forecasts) "
        f"through the stable label (version {second.version})"
    )
    time.sleep(1.5)  # the log writer flushes when its queue runs empty
    week = pd.Timedelta(weeks=1)
    reports = {}
    for label, window, window_end, actuals_at in (
        ("before", started, shift_at, before[-1]),
        ("el_nino", shift_at, None, during[-1] + 8 * week),
    ):
        actuals = actuals_as_of(validated, name, actuals_at, work / f"actuals_{label}")
        result = monitor(
            MonitorConfig(
                use_case=name,
                model_repository=out / "model_repository",
                prediction_logs=prefix,
                actuals_dir=actuals,
                output_dir=work / f"report_{label}",
                window_start=window,
                window_end=window_end,
            )
        )
        console.print(
            f"[bold]{'before El Niño' if label == 'before' else 'El Niño weeks'}[/bold] "
            f"(actual values known up to {pd.Timestamp(actuals_at).date()}):"
        )
        console.print(summary_text(result.report))
        reports[label] = result.report | {"dir": str(result.output_dir)}
    new = sorted(set(_drifted(reports["el_nino"])) - set(_drifted(reports["before"])))
    console.print(
        "[bold]flagged in the El Niño weeks and not before:[/bold] "
        + (", ".join(new) or "nothing")
        + "\n(flagged in both windows: inputs that moved since the training years or follow the "
        "season, e.g. prices, the exchange rate, rain; see the reports)"
    )
    reports["newly_drifted"] = new
    return reports


def _drifted(report: dict) -> list[str]:
    return [f["feature"] for f in report["drift"]["features"] if f["drifted"]]


def write_report(out: Path, sections: dict[str, dict], wall_seconds: float) -> Path:
    """One self-contained HTML page: step times, data and evaluation plots, forecasts, advice."""
    from perucast.evaluation_report import html_page

    blocks: list = [
        ("h1", "perucast demo: crop demand and anchoveta stock, end to end"),
        ("p", f"Wall time {wall_seconds:.0f} s on this machine (kfp.local, embedded default)."),
    ]
    images: dict[str, bytes] = {}
    for name, section in sections.items():
        run = section["run"]
        total = sum(run.step_seconds().values()) or 1.0
        blocks += [
            ("h2", name),
            ("h3", "Pipeline steps"),
            (
                "table",
                (
                    ["step", "seconds", "share"],
                    [
                        [step, f"{sec:.1f}", f"{sec / total:.0%}"]
                        for step, sec in run.step_seconds().items()
                    ],
                ),
            ),
            ("h3", "Data"),
        ]
        plot_paths = [*section["plots"]]
        evaluation_plots = sorted((section["evaluation"] / "report" / "plots").glob("*.png"))
        for path in [*plot_paths, *evaluation_plots[:4], section["serving"]["fan"]]:
            key = f"{name}/{path.name}"
            images[key] = path.read_bytes()
            blocks.append(("img", (key, path.stem.replace("_", " "))))
        serving = section["serving"]
        blocks += [
            ("h3", f"Served forecasts (gRPC, version {serving['version']}, label stable)"),
            _table_block(serving["forecast"]),
            ("h3", "Advice"),
            _table_block(serving["advice"]),
        ]
    monitoring = sections.get(MONITORED, {}).get("monitoring")
    if monitoring:
        blocks += [
            ("h2", f"Monitoring {MONITORED}: an El Niño replay"),
            (
                "p",
                "Flagged in the El Niño weeks and not in the 4 weeks before: "
                + (", ".join(monitoring["newly_drifted"]) or "nothing")
                + ". Inputs flagged in both windows moved since the training years or follow "
                "the season (prices, the exchange rate, rain).",
            ),
        ]
        for label, title in (("before", "Before El Niño"), ("el_nino", "El Niño weeks")):
            report = monitoring[label]
            drifted = [f for f in report["drift"]["features"] if f["drifted"]]
            realized = (report.get("realized") or {}).get("segments", {}).get("all", {})
            blocks += [
                ("h3", title),
                (
                    "ul",
                    [
                        f"{report['predictions']['rows']} logged forecasts of version "
                        f"{report['version']}",
                        f"{len(drifted)} features drifted: "
                        + (", ".join(f["feature"] for f in drifted) or "none"),
                        f"realized MASE {realized.get('mase')}, coverage "
                        f"{realized.get('coverage_80')}; actuals "
                        f"{(report.get('realized') or {}).get('states')}",
                        "retrain: " + ("; ".join(report["decision"]["reasons"]) or "not needed"),
                        f"full report: {report['dir']}/report.html",
                    ],
                ),
            ]
            for png in sorted((Path(report["dir"]) / "plots").glob("*.png"))[:4]:
                key = f"monitoring/{label}/{png.name}"
                images[key] = png.read_bytes()
                blocks.append(("img", (key, f"{title}: {png.stem.replace('_', ' ')}")))
    path = out / "report.html"
    path.write_text(html_page(blocks, "perucast demo", images), encoding="utf-8")
    return path


# --- main -------------------------------------------------------------------------------------


def run(out: Path, seed: int = 42, scale: Scale = Scale.SMALL, workers: int = 2) -> dict:
    """Run the demo into ``out``; returns the wall time and each use case's step seconds."""
    from serving.process import ModelServer

    started = time.perf_counter()
    out = out.resolve()
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    serving_config = out / "serving" / "models.config"
    serving_config.parent.mkdir(parents=True, exist_ok=True)
    serving_config.write_text("model_config_list {\n}\n")  # deploy adds each model
    server = ModelServer(
        [
            f"--model_config_file={serving_config}",
            "--model_config_file_poll_wait_seconds=1",
            "--file_system_poll_wait_seconds=1",
        ],
        out / "serving" / "model-server.log",
        rest=True,
    )
    console.rule("[bold]perucast-model-server")
    sections: dict[str, dict] = {}
    with server.start():
        console.print(
            f"serving {serving_config} on gRPC {server.target} and REST {server.rest_url} "
            f"(log {server.log_path})"
        )
        for name in USE_CASE_NAMES:
            result = run_pipeline(name, out, server.target, seed, scale, workers)
            run_dir = _run_dir(out / "pipeline_runs", name)
            validated = run_dir / "validate" / "validated"
            summary = crop_summary if name == "crop_demand" else fish_summary
            sections[name] = {
                "run": result,
                "plots": summary(validated, plot_dir),
                "evaluation": run_dir / "evaluate" / "evaluation",
            }
            evaluation_summary(name, sections[name]["evaluation"])
        for name, section in sections.items():
            run_dir = _run_dir(out / "pipeline_runs", name)
            section["serving"] = predict_and_advise(
                name,
                server.target,
                run_dir / "preprocess" / "features",
                run_dir / "validate" / "validated",
                plot_dir,
            )
        sections[MONITORED]["monitoring"] = monitoring_act(
            MONITORED, out, server, serving_config, _run_dir(out / "pipeline_runs", MONITORED)
        )
    wall = time.perf_counter() - started
    report = write_report(out, sections, wall)
    timings = {
        "wall_seconds": round(wall, 1),
        "steps": {name: s["run"].step_seconds() for name, s in sections.items()},
        "pipelines": {name: round(s["run"].seconds, 1) for name, s in sections.items()},
    }
    (out / "demo.json").write_text(json.dumps(timings, indent=2) + "\n")
    console.rule("[bold]results")
    table = Table(title=f"demo wall time {wall:.0f}s", title_justify="left")
    for header in ("use case", "step", "seconds", "share of wall"):
        table.add_column(header, justify="right" if header != "step" else "left")
    for name, steps in timings["steps"].items():
        for step, seconds in steps.items():
            table.add_row(name, step, f"{seconds:.1f}", f"{seconds / wall:.0%}")
    console.print(table)
    console.print(f"report: {report}\nmodel repository: {out / 'model_repository'}")
    console.print(f"serving config (labels stable/previous): {serving_config}")
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", choices=[s.value for s in Scale], default=Scale.SMALL.value)
    parser.add_argument("--workers", type=int, default=2, help="local training workers")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the tasks inherit it: less C++ noise
    setup_logging("WARNING")
    # PySpark 4.3 warns on every toPandas() under pandas 3 (the conversions used here work).
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    run(args.out, seed=args.seed, scale=Scale(args.scale), workers=args.workers)


if __name__ == "__main__":
    main()
