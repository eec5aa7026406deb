"""``make demo``: the main job end to end on the embedded default, with results to look at.

Today it generates the ``small`` synthetic data sets of both use cases, validates them, prints
what is in them, writes plots and builds the Spark feature datasets. Later issues extend it with
training, serving and a gRPC prediction.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from components.generate import GenerateConfig, generate
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


def features_summary(name: str, validated: Path, features: Path) -> None:
    """Build the feature dataset with Spark (local[*]) and print its shape and split dates."""
    from components.preprocess import SPLITS, PreprocessConfig, preprocess

    result = preprocess(PreprocessConfig(use_case=name, input_dir=validated, output_dir=features))
    spec = result.spec
    table = Table(
        title=(
            f"{name} features: {len(spec.numeric)} numeric + {len(spec.categorical)} categorical, "
            f"{spec.horizon} target horizons ({result.seconds:.0f}s)"
        ),
        title_justify="left",
    )
    for header in ("split", "rows", "first origin", "last origin"):
        table.add_column(header, justify="right" if header == "rows" else "left")
    for split in SPLITS:
        part = result.split["splits"][split]
        table.add_row(split, f"{result.rows[split]:,}", part["first"], part["last"])
    console.print(table)
    console.print(
        f"gap between splits: {result.split['gap_periods']} periods; dropped for incomplete "
        f"history: {result.counts['dropped_incomplete_features']:,} origins -> {features}"
    )


def train_and_evaluate(name: str, out: Path, workers: int) -> dict[str, Path]:
    """Train with ``workers`` local workers, evaluate, and print the scores, goals and advice."""
    from components.evaluate import EvaluateConfig, evaluate
    from components.train import TrainConfig, train

    features = out / "data" / "features" / name
    repository = out / "model_repository"
    result = train(
        TrainConfig(
            use_case=name,
            features_dir=features,
            model_repository=repository,
            output_dir=out / "training" / name,
            workers=workers,
            epochs=30,
            batch_size=1024 if name == "crop_demand" else 64,
            patience=5 if name == "crop_demand" else 20,
        )
    )
    console.print(
        f"trained on {result.workers} worker(s) ({result.strategy}): {result.epochs_run} epochs, "
        f"best {result.best_epoch + 1}, {result.seconds:.0f}s -> {result.version_dir}"
    )
    console.rule(f"[bold]{name}[/bold]: evaluation (rolling origins over the test period)")
    report = evaluate(
        EvaluateConfig(
            use_case=name,
            features_dir=features,
            model_dir=result.version_dir,
            output_dir=out / "reports" / "evaluation" / name,
            raw_dir=out / "data" / "validated" / name,
        )
    )
    table = Table(title=f"{name}: backtest scores ({report.seconds:.0f}s)", title_justify="left")
    for header in ("model", "MASE", "RMSE", "sMAPE %", "wQL", "80% coverage"):
        table.add_column(header, justify="left" if header == "model" else "right")
    for model, m in report.headline.items():
        table.add_row(
            model,
            *(
                "–" if m[k] is None else f"{m[k]:{fmt}}"
                for k, fmt in (
                    ("mase", ".3f"),
                    ("rmse", ",.1f"),
                    ("smape", ".1f"),
                    ("wql", ".4f"),
                    ("coverage_80", ".0%"),
                )
            ),
        )
    console.print(table)
    metrics = json.loads((report.output_dir / "report" / "metrics.json").read_text())
    for goal in metrics["goals"]:
        mark = {True: "[green]met[/green]", False: "[red]not met[/red]"}.get(goal["passed"], "?")
        console.print(f"goal {goal['name']}: {mark} — {goal['detail']}")
    console.print(
        f"blessing: {'[green]BLESSED[/green]' if report.blessed else '[red]not blessed[/red]'}"
    )
    console.print((report.output_dir / "advice.md").read_text())
    return {
        "report": report.output_dir / "report" / "report.html",
        "advice": report.output_dir / "advice.csv",
        "model": result.version_dir,
    }


def run(
    out: Path, seed: int = 42, scale: Scale = Scale.SMALL, workers: int = 2
) -> dict[str, list[Path]]:
    """Run the demo into ``out``; returns the plots written per use case."""
    from components.validate import ValidateConfig, validate

    started = time.perf_counter()
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    outputs: dict[str, dict[str, Path]] = {}
    for name in USE_CASE_NAMES:
        raw = out / "data" / "raw" / name
        validated = out / "data" / "validated" / name
        console.rule(f"[bold]{name}[/bold]: generate ({scale.value}, seed {seed})")
        result = generate(GenerateConfig(use_case=name, output_dir=raw, seed=seed, scale=scale))
        console.print(f"{result.total_rows:,} rows in {result.seconds:.1f}s -> {raw}")
        console.rule(f"[bold]{name}[/bold]: validate")
        report = validate(
            ValidateConfig(
                use_case=name,
                input_dir=raw,
                output_dir=validated,
                report_dir=out / "reports" / "validation" / name,
            )
        )
        if not report.ok:
            raise SystemExit(f"validation of {name} failed: see {report.markdown_path}")
        console.print(f"valid -> {validated} (report: {report.markdown_path})")
        summary = crop_summary if name == "crop_demand" else fish_summary
        written[name] = summary(validated, plot_dir)
        console.rule(f"[bold]{name}[/bold]: Spark features")
        features_summary(name, validated, out / "data" / "features" / name)
        console.rule(f"[bold]{name}[/bold]: training ({workers} worker(s), TensorFlow)")
        outputs[name] = train_and_evaluate(name, out, workers)
    console.rule("[bold]results")
    for name, paths in written.items():
        for path in paths:
            console.print(f"{name}: plot {path}")
        for what, path in outputs[name].items():
            console.print(f"{name}: {what} {path}")
    console.print(
        f"\ndone in {time.perf_counter() - started:.0f}s. Next steps (later issues): "
        "push and serve with perucast-model-server -> gRPC predict -> KFP pipelines."
    )
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", choices=[s.value for s in Scale], default=Scale.SMALL.value)
    parser.add_argument("--workers", type=int, default=2, help="local training workers")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    # PySpark 4.3 warns on every toPandas() under pandas 3 (the conversions used here work).
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    # Long steps report progress: training epochs and the baselines' fits.
    for name in ("perucast.train", "perucast.evaluate", "perucast.baselines"):
        logging.getLogger(name).setLevel(logging.INFO)
    run(args.out, seed=args.seed, scale=Scale(args.scale), workers=args.workers)


if __name__ == "__main__":
    main()
