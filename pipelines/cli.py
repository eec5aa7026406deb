"""``perucast pipeline``: run a training pipeline locally, compile the pipelines, submit a run.

Exit codes: 0 ok (the run succeeded or was submitted), 1 the run failed (the failing step and
its error are printed) or the KFP API refused the submission or could not be reached, 2 usage
error, 3 compiled pipeline not found.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from models import USE_CASE_NAMES
from perucast.exitcodes import ExitCode

app = typer.Typer(
    help="Kubeflow pipelines: run locally (kfp.local), compile, submit to a cluster.",
    no_args_is_help=True,
)

UseCaseOption = Annotated[str, typer.Option("--use-case", help=f"{', '.join(USE_CASE_NAMES)}.")]


def _config(**values: Any):
    from pipelines.config import PipelineConfig

    try:
        config = PipelineConfig.model_validate(values)
        config.check_steps()
    except ValidationError as err:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in err.errors()
        ]
        raise typer.BadParameter("; ".join(lines)) from None
    return config


def _source(
    seed: int, scale: str, path: Path | None, dvc_repo: str | None, dvc_rev: str, dvc_path: str
) -> dict[str, Any]:
    if path is not None and dvc_repo:
        raise typer.BadParameter("give --source-path or --dvc-repo, not both")
    if path is not None:
        return {"kind": "path", "path": str(path.resolve())}
    if dvc_repo:
        return {"kind": "dvc", "dvc_repo": dvc_repo, "dvc_rev": dvc_rev, "dvc_path": dvc_path}
    return {"kind": "synthetic", "seed": seed, "scale": scale}


@contextlib.contextmanager
def local_server(serving_config: Path, log_path: Path) -> Iterator[str]:
    """A perucast-model-server polling ``serving_config`` every second, for one run.

    A missing config file is created with an empty model list: the deploy step adds the model.
    """
    from serving.process import ModelServer

    if not serving_config.exists():
        serving_config.parent.mkdir(parents=True, exist_ok=True)
        serving_config.write_text("model_config_list {\n}\n")
    server = ModelServer(
        [
            f"--model_config_file={serving_config.resolve()}",
            "--model_config_file_poll_wait_seconds=1",
            "--file_system_poll_wait_seconds=1",
        ],
        log_path,
    )
    with server.start():
        yield server.target


@app.command("run")
def run(
    use_case: UseCaseOption,
    seed: Annotated[int, typer.Option(help="Synthetic data seed.", min=0)] = 42,
    scale: Annotated[str, typer.Option(help="Synthetic data scale: tiny, small, full.")] = "small",
    source_path: Annotated[
        Path | None, typer.Option(help="Raw tables from this directory instead.")
    ] = None,
    dvc_repo: Annotated[str | None, typer.Option(help="Raw tables from a DVC repo.")] = None,
    dvc_rev: Annotated[str, typer.Option(help="Git revision of --dvc-repo.")] = "",
    dvc_path: Annotated[str, typer.Option(help="Tables' directory in --dvc-repo.")] = "",
    workers: Annotated[int, typer.Option(help="Local training worker processes.")] = 2,
    epochs: Annotated[int, typer.Option(help="Most training epochs.")] = 30,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch (default per use case).")
    ] = None,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience.")] = None,
    min_improvement: Annotated[
        float | None, typer.Option(help="Margin to beat seasonal naive by (MASE).")
    ] = None,
    max_regression: Annotated[
        float, typer.Option(help="How much worse than the served model a candidate may be.")
    ] = 0.02,
    baselines: Annotated[
        str, typer.Option(help="Comma-separated: seasonal_naive, ets, gbt.")
    ] = "seasonal_naive,ets,gbt",
    model_repository: Annotated[
        Path, typer.Option(help="Model repository (push writes versions here).")
    ] = Path("model_repository"),
    deploy: Annotated[
        str, typer.Option(help="local (canary via the serving config) or none (push only).")
    ] = "local",
    serving_config: Annotated[
        Path | None,
        typer.Option(help="ModelServerConfig a server polls; default <repository>/models.config."),
    ] = None,
    serving_target: Annotated[
        str | None,
        typer.Option(help="gRPC host:port of that server; default: start one for the run."),
    ] = None,
    pipeline_root: Annotated[
        Path, typer.Option(help="Where kfp.local keeps the run's artifacts.")
    ] = Path("local_outputs"),
) -> None:
    """Run a use case's training pipeline on this machine (kfp.local SubprocessRunner)."""
    from rich.console import Console

    from pipelines.run import run_local

    console = Console()
    repo = model_repository.resolve()
    config_file = (serving_config or repo / "models.config").resolve()
    if deploy not in ("local", "none"):
        raise typer.BadParameter("local or none (kubernetes: use submit)", param_hint="--deploy")
    config = _config(
        use_case=use_case,
        source=_source(seed, scale, source_path, dvc_repo, dvc_rev, dvc_path),
        executor="local",
        workers=workers,
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        model_repository=str(repo),
        min_improvement_vs_naive=min_improvement,
        max_regression_vs_blessed=max_regression,
        baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
        deploy_mode=deploy,
        serving_config=str(config_file),
        serving_target=serving_target or "127.0.0.1:1",  # replaced by the managed server's
    )
    logging.getLogger("kfp").setLevel(logging.INFO)

    def on_step(record: dict[str, Any]) -> None:
        console.print(f"[green]✓[/green] {record['step']:<11} {record['seconds']:7.1f}s")

    with contextlib.ExitStack() as stack:
        if deploy == "local" and serving_target is None:
            console.print(f"starting perucast-model-server on {config_file} for the deploy step")
            target = stack.enter_context(
                local_server(config_file, pipeline_root.resolve() / "model-server.log")
            )
            config = config.model_copy(update={"serving_target": target})
        console.rule(f"[bold]{use_case}[/bold] training pipeline (kfp.local)")
        result = run_local(config, pipeline_root, on_step=on_step)
    _print_summary(console, result, repo)
    if not result.succeeded:
        raise typer.Exit(1)


def _print_summary(console, result, repository: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{result.use_case}: {result.state} in {result.seconds:.0f}s")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    total = sum(result.step_seconds().values()) or 1.0
    for step, seconds in result.step_seconds().items():
        table.add_row(step, f"{seconds:.1f}", f"{seconds / total:.0%}")
    console.print(table)
    if result.error:
        console.print(f"[red]error:[/red] {result.error}")
    from perucast.export import versions

    model_dir = repository / result.use_case
    present = versions(model_dir) if model_dir.is_dir() else []
    console.print(f"model repository {model_dir}: versions {present or 'none'}")


@app.command("compile")
def compile_(
    out: Annotated[
        Path | None, typer.Option(help="Directory (default pipelines/compiled).")
    ] = None,
) -> None:
    """Compile both use cases' pipelines (CPU and GPU variants) to YAML."""
    from pipelines.run import COMPILED_DIR, compile_all

    for path in compile_all(out or COMPILED_DIR):
        typer.echo(f"wrote {path}")


CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _check_schedule(schedule: str) -> None:
    """KFP's scheduler reads six-field crons, seconds first: a Unix five-field cron would run
    at the wrong times, so it is refused here rather than accepted silently."""
    text = schedule.strip()
    if text in CRON_DESCRIPTORS or text.startswith("@every "):
        return
    if len(text.split()) != 6:
        raise typer.BadParameter(
            f"{schedule!r} is not a 6-field cron, seconds first (e.g. '0 0 3 * * 1')",
            param_hint="--schedule",
        )


@app.command("submit")
def submit_(
    use_case: UseCaseOption,
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. https://kubeflow/pipeline.")],
    experiment: Annotated[
        str, typer.Option(help="Experiment (created when missing).")
    ] = "perucast",
    run_name: Annotated[str | None, typer.Option(help="Run display name.")] = None,
    schedule: Annotated[
        str | None,
        typer.Option(help="Cron (seconds first, e.g. '0 0 3 * * 1'): a recurring retraining run."),
    ] = None,
    gpu: Annotated[bool, typer.Option(help="Train on a GPU node (the -gpu pipeline).")] = False,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow user namespace.")] = None,
    service_account: Annotated[
        str, typer.Option(help="The run's ServiceAccount (manifests/ binds its Roles).")
    ] = "perucast-pipeline-runner",
    token: Annotated[
        str | None, typer.Option(envvar="KFP_TOKEN", help="Bearer token (or $KFP_TOKEN).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0)] = 42,
    scale: Annotated[str, typer.Option()] = "small",
    source_path: Annotated[str | None, typer.Option(help="Raw tables on a mounted path.")] = None,
    dvc_repo: Annotated[str | None, typer.Option()] = None,
    dvc_rev: Annotated[str, typer.Option()] = "",
    dvc_path: Annotated[str, typer.Option()] = "",
    workers: Annotated[int, typer.Option(help="TFJob workers.")] = 2,
    gpus: Annotated[int, typer.Option(help="GPUs per TFJob worker.")] = 0,
    epochs: Annotated[int, typer.Option()] = 30,
    executor: Annotated[str, typer.Option(help="kubernetes or local (in the task's pod).")] = (
        "kubernetes"
    ),
    pipeline: Annotated[
        str,
        typer.Option(
            help="training, or monitoring (drift and realized accuracy; retrains on evidence)."
        ),
    ] = "training",
    prediction_logs: Annotated[
        str, typer.Option(help="Monitoring: the serving logs' prefix ('' = the cluster default).")
    ] = "",
    no_retrain: Annotated[
        bool, typer.Option("--no-retrain", help="Monitoring: report and alert only.")
    ] = False,
) -> None:
    """Submit a run (or a recurring run) of a compiled pipeline to Kubeflow Pipelines."""
    from pipelines.run import submit

    if pipeline not in ("training", "monitoring"):
        raise typer.BadParameter("training or monitoring", param_hint="--pipeline")

    if source_path and dvc_repo:
        raise typer.BadParameter("give --source-path or --dvc-repo, not both")
    if schedule is not None:
        _check_schedule(schedule)
    source = (
        {"kind": "path", "path": source_path}
        if source_path
        else _source(seed, scale, None, dvc_repo, dvc_rev, dvc_path)
    )
    config = _config(
        use_case=use_case,
        source=source,
        executor=executor,
        workers=workers,
        gpus=gpus,
        epochs=epochs,
    )
    if pipeline == "monitoring":
        from pipelines.config import MonitoringConfig

        try:
            config = MonitoringConfig(
                training=config, prediction_logs=prediction_logs, retrain=not no_retrain
            )
            config.check_steps()
        except (ValidationError, ValueError) as err:
            raise typer.BadParameter(str(err)) from None
        if gpu:
            raise typer.BadParameter(
                "the monitoring pipeline has no GPU variant", param_hint="--gpu"
            )
    import kfp_server_api
    import urllib3

    try:
        done = submit(
            host,
            config,
            experiment=experiment,
            run_name=run_name,
            schedule=schedule,
            gpu=gpu,
            namespace=namespace,
            existing_token=token,
            service_account=service_account,
        )
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND) from None
    except kfp_server_api.ApiException as err:
        typer.echo(f"error: the KFP API answered {err.status} {err.reason}: {err.body}", err=True)
        raise typer.Exit(1) from None
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as err:
        typer.echo(f"error: cannot reach the KFP API at {host}: {err}", err=True)
        raise typer.Exit(1) from None
    if done.recurring_run_id:
        typer.echo(f"recurring run {done.recurring_run_id} ({schedule}) in {experiment}")
    else:
        typer.echo(f"run {done.run_id} in {experiment}: {done.url}")


def monitor(
    use_case: UseCaseOption,
    prediction_logs: Annotated[
        Path, typer.Option(help="The logging config's filename_prefix, or a directory of logs.")
    ],
    model_repository: Annotated[
        Path, typer.Option(help="The model repository the server loads from.")
    ] = Path("model_repository"),
    actuals: Annotated[
        Path | None,
        typer.Option(help="Raw tables with the actuals (with --retrain: also the training data)."),
    ] = None,
    output: Annotated[Path, typer.Option(help="Report directory (without --retrain).")] = Path(
        "monitor_report"
    ),
    window_days: Annotated[float, typer.Option(help="Window length in days.")] = 28.0,
    psi_threshold: Annotated[float, typer.Option(help="PSI that flags a feature.")] = 0.25,
    p_value: Annotated[float, typer.Option(help="Test p-value that flags a feature.")] = 0.01,
    accuracy_margin: Annotated[
        float, typer.Option(help="Relative MASE margin over the evaluation level.")
    ] = 0.2,
    coverage_margin: Annotated[
        float, typer.Option(help="Absolute coverage margin under the evaluation level.")
    ] = 0.1,
    min_matched_actuals: Annotated[
        int, typer.Option(help="Scored forecast periods needed for accuracy to decide.")
    ] = 100,
    min_drifted_features: Annotated[
        int, typer.Option(help="Drifted features that recommend retraining.")
    ] = 1,
    pushgateway: Annotated[str, typer.Option(help="Pushgateway host:port ('' = none).")] = "",
    retrain: Annotated[
        bool,
        typer.Option(
            help="Run the monitoring pipeline through kfp.local: retrain (the training "
            "pipeline, nested) when the monitor recommends it."
        ),
    ] = False,
    epochs: Annotated[int, typer.Option(help="Retraining: most epochs.")] = 30,
    workers: Annotated[int, typer.Option(help="Retraining: local worker processes.")] = 2,
    deploy: Annotated[str, typer.Option(help="Retraining: local or none.")] = "local",
    serving_config: Annotated[
        Path | None, typer.Option(help="Retraining: ModelServerConfig a server polls.")
    ] = None,
    serving_target: Annotated[
        str | None, typer.Option(help="Retraining: gRPC host:port of that server.")
    ] = None,
    pipeline_root: Annotated[
        Path, typer.Option(help="Retraining: where kfp.local keeps the run's artifacts.")
    ] = Path("local_outputs"),
) -> None:
    """Drift and realized accuracy of a served model from its prediction logs; with --retrain,
    the monitoring pipeline (kfp.local), which retrains when the evidence says so."""
    from components.monitor import run_cli
    from perucast.logs import setup_logging

    setup_logging()
    if not retrain:
        result = run_cli(
            use_case=use_case,
            model_repository=model_repository,
            prediction_logs=prediction_logs,
            actuals_dir=actuals,
            output_dir=output,
            window_days=window_days,
            psi_threshold=psi_threshold,
            p_value=p_value,
            accuracy_margin=accuracy_margin,
            coverage_margin=coverage_margin,
            min_matched_actuals=min_matched_actuals,
            min_drifted_features=min_drifted_features,
            pushgateway=pushgateway,
        )
        typer.echo(f"report: {result.output_dir / 'report.html'}")
        return
    _monitor_and_retrain(
        use_case=use_case,
        prediction_logs=prediction_logs,
        model_repository=model_repository,
        actuals=actuals,
        window_days=window_days,
        psi_threshold=psi_threshold,
        p_value=p_value,
        accuracy_margin=accuracy_margin,
        coverage_margin=coverage_margin,
        min_matched_actuals=min_matched_actuals,
        min_drifted_features=min_drifted_features,
        pushgateway=pushgateway,
        epochs=epochs,
        workers=workers,
        deploy=deploy,
        serving_config=serving_config,
        serving_target=serving_target,
        pipeline_root=pipeline_root,
    )


def _monitor_and_retrain(
    *,
    use_case: str,
    prediction_logs: Path,
    model_repository: Path,
    actuals: Path | None,
    epochs: int,
    workers: int,
    deploy: str,
    serving_config: Path | None,
    serving_target: str | None,
    pipeline_root: Path,
    **monitor_settings: Any,
) -> None:
    import json

    from rich.console import Console

    from components.monitor import summary_text
    from pipelines.config import MonitoringConfig
    from pipelines.run import monitor_report, run_local

    console = Console()
    if actuals is None:
        raise typer.BadParameter(
            "--retrain needs --actuals: the raw tables are the actuals and the training data",
            param_hint="--actuals",
        )
    if deploy not in ("local", "none"):
        raise typer.BadParameter("local or none", param_hint="--deploy")
    repo = model_repository.resolve()
    config_file = (serving_config or repo / "models.config").resolve()
    training = _config(
        use_case=use_case,
        source={"kind": "path", "path": str(actuals.resolve())},
        executor="local",
        workers=workers,
        epochs=epochs,
        model_repository=str(repo),
        deploy_mode=deploy,
        serving_config=str(config_file),
        serving_target=serving_target or "127.0.0.1:1",  # replaced by the managed server's
    )
    try:
        config = MonitoringConfig(
            training=training,
            prediction_logs=str(prediction_logs.resolve()),
            **monitor_settings,
        )
        config.check_steps()
    except ValidationError as err:
        raise typer.BadParameter(str(err)) from None
    logging.getLogger("kfp").setLevel(logging.INFO)

    def on_step(record: dict[str, Any]) -> None:
        console.print(f"[green]✓[/green] {record['step']:<11} {record['seconds']:7.1f}s")

    with contextlib.ExitStack() as stack:
        if deploy == "local" and serving_target is None:
            console.print(
                f"starting perucast-model-server on {config_file} for a retraining deploy"
            )
            target = stack.enter_context(
                local_server(config_file, pipeline_root.resolve() / "model-server.log")
            )
            config = config.model_copy(
                update={"training": training.model_copy(update={"serving_target": target})}
            )
        console.rule(f"[bold]{use_case}[/bold] monitoring pipeline (kfp.local)")
        result = run_local(config, pipeline_root, on_step=on_step)
    report_dir = monitor_report(result)
    if report_dir is not None:
        report = json.loads((report_dir / "report.json").read_text())
        console.print(summary_text(report))
        console.print(f"report: {report_dir / 'report.html'}")
    retrained = any(s["step"] == "train" for s in result.steps)
    console.print(
        f"retraining: {'ran, ' + result.state if retrained else 'not launched'}"
        + (f" ({result.error})" if result.error else "")
    )
    if retrained:
        _print_summary(console, result, repo)
    if not result.succeeded:
        raise typer.Exit(1)
