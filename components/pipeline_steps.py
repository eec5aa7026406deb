"""The pipeline's steps as plain typed functions: paths and parameters in, metrics out.

Each KFP component in :mod:`components.kfp_components` imports one of these inside its body and
only maps its artifacts to paths; everything a step does lives here (and in the step modules it
calls), so it runs the same under ``kfp.local``, in a Kubeflow pod, and in tests.

Every function returns a :class:`StepOutput`: scalar metrics (logged to the component's
``Metrics`` artifact) and the values the pipeline branches on. Each step's wall time is in its
metrics as ``seconds``; when ``PERUCAST_STEP_TIMES`` names a file, one JSON line per step is
appended to it too (the demo and ``make bench`` read it for the per-step shares).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("perucast.pipeline")

Executor = Literal["local", "kubernetes"]
STEP_TIMES_ENV = "PERUCAST_STEP_TIMES"


class ValidationFailedError(RuntimeError):
    """The raw data failed validation (the message is the report's summary)."""


class ExecutorNotAvailableError(RuntimeError):
    """The requested executor cannot run this step here."""


@dataclass
class StepOutput:
    """What a step measured and decided."""

    metrics: dict[str, float] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def log_to(self, artifact: Any) -> None:
        """Logs every metric to a KFP ``Metrics`` artifact (``log_metric(name, value)``)."""
        for key, value in self.metrics.items():
            artifact.log_metric(key, value)


def _record(use_case: str, step: str, started: float, output: StepOutput) -> StepOutput:
    seconds = time.perf_counter() - started
    output.metrics["seconds"] = round(seconds, 3)
    log.info("%s: %s took %.1fs", use_case, step, seconds)
    target = os.environ.get(STEP_TIMES_ENV)
    if target:
        line = json.dumps({"use_case": use_case, "step": step, "seconds": round(seconds, 3)})
        with open(target, "a", encoding="utf-8") as fh:  # one short line: appends are atomic
            fh.write(line + "\n")
    return output


def _numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers (and bools as 0/1) of a flat mapping, for a Metrics artifact."""
    out: dict[str, float] = {}
    for key, value in values.items():
        finite = isinstance(value, int | float) and value == value and abs(value) != float("inf")
        if finite:  # bools included, as 0/1
            out[prefix + key] = float(value)
    return out


def _kubernetes_executor(step: str, executor: str, launch: Any) -> Any:
    """The :class:`~components.launchers.LaunchSettings` of the ``kubernetes`` executor: ``launch``,
    else from the ``PERUCAST_*`` environment.

    Raises:
        ExecutorNotAvailableError: ``executor`` is neither ``local`` nor ``kubernetes``.
    """
    if executor != "kubernetes":
        raise ExecutorNotAvailableError(
            f"unknown executor {executor!r} for the {step} step: use 'local' or 'kubernetes'"
        )
    from components.launchers import LaunchSettings

    return launch or LaunchSettings.from_env()


def _job_output(path: Path, job: str) -> dict[str, Any]:
    """A JSON file the Kubernetes job wrote (copied back into the step's artifact)."""
    from components.launchers import LaunchError

    if not path.is_file():
        raise LaunchError(f"{job} succeeded but did not write {path.name}")
    return json.loads(path.read_text(encoding="utf-8"))


# --- ingest -----------------------------------------------------------------------------------


def ingest_step(use_case: str, source: Mapping[str, Any], raw_dir: str | Path) -> StepOutput:
    """Raw tables from the source (synthetic generator, DVC repository or directory)."""
    from components.ingest import SourceConfig, acquire

    started = time.perf_counter()
    config = SourceConfig.model_validate(dict(source))
    metrics = acquire(use_case, config, Path(raw_dir))
    return _record(use_case, "ingest", started, StepOutput(_numbers(metrics)))


# --- validate ---------------------------------------------------------------------------------


def validate_step(
    use_case: str, raw_dir: str | Path, validated_dir: str | Path, report_path: str | Path
) -> StepOutput:
    """Schema and range checks; the Markdown report goes to ``report_path`` either way.

    Raises:
        ValidationFailedError: The data is invalid (nothing is written to ``validated_dir``).
    """
    import tempfile

    from components.validate import ValidateConfig, validate

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="perucast-validation-") as tmp:
        report = validate(
            ValidateConfig(
                use_case=use_case,
                input_dir=Path(raw_dir),
                output_dir=Path(validated_dir),
                report_dir=Path(tmp),
            )
        )
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report.markdown_path, report_path)
    if not report.ok:
        raise ValidationFailedError(report.summary())
    rows = sum(t.rows or 0 for t in report.tables.values())
    metrics = {
        "rows": float(rows),
        "tables": float(len(report.tables)),
        "warnings": float(len(report.warnings)),
    }
    return _record(use_case, "validate", started, StepOutput(metrics))


# --- preprocess -------------------------------------------------------------------------------


def preprocess_step(
    use_case: str,
    validated_dir: str | Path,
    features_dir: str | Path,
    executor: Executor = "local",
    spark_master: str = "local[*]",
    driver_memory: str = "2g",
    *,
    launch: Any = None,
) -> StepOutput:
    """Spark features (joins, lags, calendar and ENSO features) and the time splits.

    ``executor="kubernetes"`` runs a SparkApplication rendered from ``manifests/`` instead
    (:class:`components.launchers.SparkLauncher`; ``spark_master`` and ``driver_memory`` are
    then the template's); ``launch`` defaults to :meth:`LaunchSettings.from_env`.
    """
    started = time.perf_counter()
    if executor != "local":
        from components.launchers import SparkLauncher

        settings = _kubernetes_executor("preprocess", executor, launch)
        job = SparkLauncher(settings).preprocess(use_case, validated_dir, features_dir)
        report = _job_output(Path(features_dir) / "report.json", f"SparkApplication {job.name}")
        metrics = _numbers({f"rows_{split}": rows for split, rows in report["rows"].items()})
        metrics["horizon"] = float(report["horizon"])
        output = StepOutput(metrics, {"job": job.name})
        return _record(use_case, "preprocess", started, output)

    from components.preprocess import PreprocessConfig, preprocess
    from perucast.spark import SparkConfig

    result = preprocess(
        PreprocessConfig(
            use_case=use_case,
            input_dir=Path(validated_dir),
            output_dir=Path(features_dir),
            spark=SparkConfig(master=spark_master, driver_memory=driver_memory, ui=False),
        )
    )
    metrics = _numbers({f"rows_{split}": rows for split, rows in result.rows.items()})
    metrics["horizon"] = float(result.spec.horizon)
    return _record(use_case, "preprocess", started, StepOutput(metrics))


# --- train ------------------------------------------------------------------------------------


def model_version_dir(model_dir: str | Path, use_case: str) -> Path:
    """Where the train step exports inside its Model artifact: ``<artifact>/<use case>/1``."""
    return Path(model_dir) / use_case / "1"


def train_step(
    use_case: str,
    features_dir: str | Path,
    model_dir: str | Path,
    logs_dir: str | Path,
    executor: Executor = "local",
    workers: int = 2,
    gpus: int = 0,
    epochs: int = 30,
    batch_size: int = 512,
    patience: int = 5,
    seed: int = 0,
    *,
    launch: Any = None,
) -> StepOutput:
    """Distributed Keras training; the SavedModel lands in the Model artifact as version 1.

    ``gpus`` is the GPUs per worker the Kubernetes executor requests for the TFJob; the local
    executor uses whatever GPUs the process sees (none on this machine). ``executor=
    "kubernetes"`` runs a TFJob rendered from ``manifests/`` (a Chief and ``workers - 1``
    Workers; :class:`components.launchers.TFJobLauncher`); ``launch`` defaults to
    :meth:`LaunchSettings.from_env`.
    """
    started = time.perf_counter()
    if executor != "local":
        from components.launchers import TFJobLauncher

        settings = _kubernetes_executor("train", executor, launch)
        job = TFJobLauncher(settings).train(
            use_case, features_dir, model_dir, logs_dir, workers=workers, gpus=gpus,
            epochs=epochs, batch_size=batch_size, patience=patience, seed=seed,
        )  # fmt: skip
        result = _job_output(Path(logs_dir) / "training.json", f"TFJob {job.name}")
        history, epochs_run = result.get("history") or {}, int(result["epochs_run"])
        best_epoch, trained_workers = int(result["best_epoch"]), int(result["workers"])
    else:
        from components.train import TrainConfig, train

        local = train(
            TrainConfig(
                use_case=use_case,
                features_dir=Path(features_dir),
                model_repository=Path(model_dir),
                output_dir=Path(logs_dir),
                version=1,
                workers=workers,
                epochs=epochs,
                batch_size=batch_size,
                patience=patience,
                seed=seed,
            )
        )
        history, epochs_run = local.history, local.epochs_run
        best_epoch, trained_workers = local.best_epoch, local.workers
    version_dir = model_version_dir(model_dir, use_case)
    metrics = {
        "epochs_run": float(epochs_run),
        "best_epoch": float(best_epoch + 1),
        "workers": float(trained_workers),
        "gpus_requested": float(gpus),
        **_numbers({k: v[-1] for k, v in history.items() if v}, prefix="final_"),
    }
    output = StepOutput(metrics, {"version_dir": str(version_dir)})
    return _record(use_case, "train", started, output)


# --- evaluate ---------------------------------------------------------------------------------


def served_version_dir(
    model_repository: str | Path, model_name: str, serving_config: str | Path | None = None
) -> Path | None:
    """The version clients get now: the ``stable`` label of the serving config, else the newest.

    Only blessed, infra-validated models are ever pushed, so without a config the newest
    version in the repository is the one a plain TF Serving (policy ``latest``) serves.
    """
    from perucast.export import versions

    base = Path(model_repository) / model_name
    if serving_config and Path(serving_config).is_file():
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2

        config = text_format.Parse(
            Path(serving_config).read_text(), model_server_config_pb2.ModelServerConfig()
        )
        for model in config.model_config_list.config:
            if model.name == model_name and "stable" in model.version_labels:
                candidate = base / str(model.version_labels["stable"])
                if candidate.is_dir():
                    return candidate
    present = versions(base) if base.is_dir() else []
    return base / str(max(present)) if present else None


def evaluate_step(
    use_case: str,
    features_dir: str | Path,
    model_dir: str | Path,
    validated_dir: str | Path,
    evaluation_dir: str | Path,
    report_html: str | Path,
    model_repository: str | Path,
    serving_config: str = "",
    min_improvement_vs_naive: float = 0.0,
    max_regression_vs_blessed: float = 0.02,
    baselines: tuple[str, ...] = ("seasonal_naive", "ets", "gbt"),
) -> StepOutput:
    """Rolling-origin backtest against baselines and the served model; decides the blessing."""
    from components.evaluate import EvaluateConfig, evaluate
    from perucast.blessing import BlessingConfig

    started = time.perf_counter()
    served = served_version_dir(model_repository, use_case, serving_config or None)
    raw = Path(validated_dir)
    result = evaluate(
        EvaluateConfig(
            use_case=use_case,
            features_dir=Path(features_dir),
            model_dir=model_version_dir(model_dir, use_case),
            output_dir=Path(evaluation_dir),
            raw_dir=raw if any(raw.glob("oracle.*")) else None,
            blessed_model_dir=served,
            baselines=baselines,
            blessing=BlessingConfig(
                metric="mase",
                min_improvement_vs_naive=min_improvement_vs_naive,
                max_regression_vs_blessed=max_regression_vs_blessed,
            ),
        )
    )
    Path(report_html).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(evaluation_dir) / "report" / "report.html", report_html)
    metrics = {"blessed": float(result.blessed), "goals_passed": float(result.goals_passed)}
    for model, values in result.headline.items():
        metrics.update(_numbers(values, prefix=f"{model}_"))
    values = {"blessed": result.blessed, "served": str(served) if served else ""}
    return _record(use_case, "evaluate", started, StepOutput(metrics, values))


# --- push -------------------------------------------------------------------------------------


def push_step(
    use_case: str,
    model_dir: str | Path,
    evaluation_dir: str | Path,
    features_dir: str | Path,
    model_repository: str | Path,
    report_md: str | Path,
) -> StepOutput:
    """Infra-validate the blessed candidate in a real server, then add it as the next version.

    Not blessed: nothing is pushed (``pushed`` False, the reason in the report). A failed
    infra-validation raises (the step fails with the reason).
    """
    import tempfile

    from components.push import PushConfig, push

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="perucast-push-") as tmp:
        result = push(
            PushConfig(
                use_case=use_case,
                model_dir=model_version_dir(model_dir, use_case),
                evaluation_dir=Path(evaluation_dir),
                features_dir=Path(features_dir),
                model_repository=Path(model_repository),
                report_dir=Path(tmp),
            )
        )
        Path(report_md).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "push.md", report_md)
    metrics = {"pushed": float(result.pushed), "version": float(result.version or 0)}
    metrics.update(_numbers(result.infra_validation or {}, prefix="infra_"))
    values = {"pushed": result.pushed, "version": int(result.version or 0)}
    return _record(use_case, "push", started, StepOutput(metrics, values))


# --- deploy -----------------------------------------------------------------------------------


def deploy_step(
    use_case: str,
    version: int,
    model_repository: str | Path,
    mode: str,
    serving_config: str,
    serving_target: str,
    namespace: str,
    configmap: str,
    features_dir: str | Path,
    report_md: str | Path,
) -> StepOutput:
    """Canary by version labels, smoke check, promote to stable; roll back and raise on failure."""
    import tempfile

    from components.deploy import DeployConfig, deploy

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="perucast-deploy-") as tmp:
        config = DeployConfig(
            use_case=use_case,
            version=version,
            model_repository=Path(model_repository),
            mode=mode,
            config_file=Path(serving_config) if mode == "local" else None,
            namespace=namespace if mode == "kubernetes" else None,
            configmap=configmap if mode == "kubernetes" else None,
            serving_target=serving_target,
            features_dir=Path(features_dir),
            report_dir=Path(tmp),
        )
        try:
            result = deploy(config)
        finally:
            Path(report_md).parent.mkdir(parents=True, exist_ok=True)
            if (Path(tmp) / "deploy.md").exists():
                shutil.copyfile(Path(tmp) / "deploy.md", report_md)
    metrics = {"version": float(version)}
    metrics.update(_numbers(result.to_dict(), prefix=""))
    return _record(use_case, "deploy", started, StepOutput(metrics))


# --- monitor ----------------------------------------------------------------------------------


def monitor_step(
    use_case: str,
    model_repository: str | Path,
    prediction_logs: str | Path,
    actuals_dir: str | Path | None,
    report_dir: str | Path,
    report_html: str | Path,
    settings: Mapping[str, Any] | None = None,
) -> StepOutput:
    """Drift and realized accuracy of the served model from its prediction logs.

    ``settings`` are :class:`components.monitor.MonitorConfig` fields (thresholds, window,
    Pushgateway; flat ``psi_threshold`` and ``p_value`` go to its ``drift``). The values hold
    ``retrain`` (1 when retraining is recommended, else 0) and the monitored ``version``.
    """
    from components.monitor import HTML_FILE, MonitorConfig, monitor

    started = time.perf_counter()
    config = MonitorConfig.from_settings(
        use_case=use_case,
        model_repository=Path(model_repository),
        prediction_logs=Path(prediction_logs),
        actuals_dir=Path(actuals_dir) if actuals_dir else None,
        output_dir=Path(report_dir),
        **(settings or {}),
    )
    result = monitor(config)
    Path(report_html).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(report_dir) / HTML_FILE, report_html)
    report = result.report
    metrics = {
        "version": float(report["version"]),
        "predictions": float(report["predictions"]["rows"]),
        "drifted_features": float(sum(f["drifted"] for f in report["drift"]["features"])),
        "retrain": float(result.retrain),
    }
    if report.get("realized"):
        metrics.update(_numbers(report["realized"]["segments"].get("all", {}), prefix="realized_"))
        metrics.update(_numbers(report["realized"]["states"], prefix="actuals_"))
    out = StepOutput(metrics, {"retrain": int(result.retrain), "version": report["version"]})
    return _record(use_case, "monitor", started, out)


# --- exit handler -----------------------------------------------------------------------------


def record_outcome_step(
    use_case: str,
    runs_log: str,
    outcome_path: str | Path,
    state: str,
    job: str,
    task: str,
    error_code: int | None,
    error_message: str | None,
) -> dict[str, Any]:
    """The run's final state as Markdown (and one JSON line in ``runs_log`` when given)."""
    import datetime as dt

    record = {
        "use_case": use_case,
        "state": state,
        "pipeline_job": job,
        "task": task,
        "error_code": error_code or 0,
        "error_message": error_message or "",
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    lines = [
        f"# {use_case} training run: {state}",
        "",
        f"- pipeline job: `{job}`",
        f"- finished: {record['finished_at']}",
    ]
    if error_message:
        lines += [f"- error {error_code}: {error_message}"]
    Path(outcome_path).parent.mkdir(parents=True, exist_ok=True)
    Path(outcome_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if runs_log:
        Path(runs_log).parent.mkdir(parents=True, exist_ok=True)
        with open(runs_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    log.info("%s: run %s%s", use_case, state, f" ({error_message})" if error_message else "")
    return record
