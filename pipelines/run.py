"""Compile the pipelines, run one locally through ``kfp.local``, or submit one to Kubeflow.

* :func:`compile_all` writes ``pipelines/compiled/<use case>.yaml`` and ``<use case>-gpu.yaml``
  (committed; a test checks they equal a fresh compile).
* :func:`run_local` runs a use case's pipeline with ``kfp.local``'s SubprocessRunner in this
  virtualenv (every task a subprocess, artifacts under ``pipeline_root``), printing each step as
  it finishes.
* :func:`submit` uploads the compiled pipeline to a Kubeflow Pipelines API with ``kfp.Client``
  and starts a run in an experiment, or a recurring run for ``schedule`` (cron).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import USE_CASE_NAMES
from pipelines.config import MonitoringConfig, PipelineConfig

log = logging.getLogger("perucast.pipeline")

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
STEPS = ("ingest", "validate", "preprocess", "train", "evaluate", "push", "deploy")


def compiled_path(use_case: str, gpu: bool = False, directory: Path = COMPILED_DIR) -> Path:
    return directory / f"{use_case}{'-gpu' if gpu else ''}.yaml"


def monitoring_compiled_path(use_case: str, directory: Path = COMPILED_DIR) -> Path:
    return directory / f"{use_case}-monitoring.yaml"


def compile_pipeline(use_case: str, gpu: bool, path: Path) -> Path:
    """Compiles one pipeline to ``path`` (YAML IR: PipelineSpec plus PlatformSpec)."""
    from kfp import compiler

    from pipelines.forecast import build_pipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(use_case, gpu=gpu), str(path))
    return path


def compile_monitoring_pipeline(use_case: str, path: Path) -> Path:
    """Compiles the use case's monitoring pipeline (training nested) to ``path``."""
    from kfp import compiler

    from pipelines.monitoring import build_monitoring_pipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_monitoring_pipeline(use_case), str(path))
    return path


def compile_all(directory: Path = COMPILED_DIR) -> list[Path]:
    """Both use cases: training (CPU and GPU variants) and monitoring."""
    paths = [
        compile_pipeline(name, gpu, compiled_path(name, gpu, directory))
        for name in USE_CASE_NAMES
        for gpu in (False, True)
    ]
    return paths + [
        compile_monitoring_pipeline(name, monitoring_compiled_path(name, directory))
        for name in USE_CASE_NAMES
    ]


# --- local runs -------------------------------------------------------------------------------


@dataclass
class LocalRun:
    """The outcome of a local run."""

    use_case: str
    state: str
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=dict)
    pipeline_root: Path | None = None
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"

    def step_seconds(self) -> dict[str, float]:
        return {s["step"]: s["seconds"] for s in self.steps}


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def _step_watch(path: Path, on_step: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Calls ``on_step`` for every step the tasks report while the run goes (a thread)."""
    stop = threading.Event()
    seen = 0

    def poll() -> None:
        nonlocal seen
        lines = _read_lines(path)
        for record in lines[seen:]:
            on_step(record)
        seen = len(lines)

    def loop() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(Exception):  # a half-written line: read it next time
                poll()

    thread = threading.Thread(target=loop, name="step-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()


def run_local(
    config: PipelineConfig | MonitoringConfig,
    pipeline_root: Path,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> LocalRun:
    """Runs ``config``'s pipeline with ``kfp.local`` (SubprocessRunner, this virtualenv).

    A ``PipelineConfig`` runs the training pipeline, a ``MonitoringConfig`` the monitoring
    pipeline (which runs the training pipeline nested when the monitor recommends it).
    Every task runs as a subprocess; their logs stream to this process's output. The run's
    final state comes from the exit handler's record, so a failed run returns (``state``
    FAILED and the error) instead of raising. A monitoring run that did not retrain has no
    exit-handler record: it SUCCEEDED when kfp.local raised nothing.
    """
    from kfp import local

    from components.pipeline_steps import STEP_TIMES_ENV
    from pipelines.forecast import build_pipeline
    from pipelines.monitoring import build_monitoring_pipeline

    arguments = config.arguments()  # validates every step's config before anything runs
    if isinstance(config, MonitoringConfig):
        use_case = config.training.use_case
        pipeline = build_monitoring_pipeline(use_case)
    else:
        use_case = config.use_case
        pipeline = build_pipeline(use_case)
    pipeline_root = Path(pipeline_root).resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="perucast-run-") as tmp:
        times = Path(tmp) / "steps.jsonl"
        runs_log = Path(tmp) / "outcome.jsonl"
        arguments["runs_log"] = str(runs_log)
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(pipeline_root),
            raise_on_error=False,
        )
        previous = os.environ.get(STEP_TIMES_ENV)
        os.environ[STEP_TIMES_ENV] = str(times)
        started = time.perf_counter()
        error = ""
        try:
            with _step_watch(times, on_step or (lambda record: None)):
                pipeline(**arguments)
        except Exception as exc:  # kfp.local reports a failed task by raising when asked to
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if previous is None:
                os.environ.pop(STEP_TIMES_ENV, None)
            else:
                os.environ[STEP_TIMES_ENV] = previous
        seconds = time.perf_counter() - started
        outcomes = _read_lines(runs_log)
        steps = _read_lines(times)
    outcome = outcomes[-1] if outcomes else {}
    fallback = "SUCCEEDED" if isinstance(config, MonitoringConfig) else "UNKNOWN"
    state = outcome.get("state") or ("FAILED" if error else fallback)
    return LocalRun(
        use_case=use_case,
        state=state,
        seconds=seconds,
        steps=steps,
        outcome=outcome,
        pipeline_root=pipeline_root,
        error=error or outcome.get("error_message", ""),
    )


def monitor_report(run: LocalRun) -> Path | None:
    """The monitor task's report directory of a local monitoring run (the newest one)."""
    if run.pipeline_root is None:
        return None
    found = sorted(
        run.pipeline_root.glob("*/monitor/report/report.json"), key=lambda p: p.stat().st_mtime
    )
    return found[-1].parent if found else None


# --- cluster ----------------------------------------------------------------------------------


@dataclass
class Submission:
    experiment_id: str
    pipeline_file: Path
    run_id: str = ""
    recurring_run_id: str = ""
    url: str = ""


def submit(
    host: str,
    config: PipelineConfig | MonitoringConfig,
    experiment: str = "perucast",
    run_name: str | None = None,
    schedule: str | None = None,
    gpu: bool = False,
    namespace: str | None = None,
    existing_token: str | None = None,
    service_account: str | None = None,
    client: Any = None,
) -> Submission:
    """Creates a run (or a recurring run on ``schedule``, a cron with seconds first as KFP's API
    expects, e.g. ``0 0 3 * * 1``) of the compiled pipeline in ``experiment``.

    Args:
        host: The KFP API endpoint (``http://.../pipeline``).
        config: The run's parameters (validated before anything is sent): a
            ``PipelineConfig`` submits the training pipeline, a ``MonitoringConfig`` the
            monitoring pipeline.
        experiment: Experiment name; created when missing.
        run_name: Display name; default ``<pipeline>-<UTC time>``.
        schedule: A cron expression for a recurring retraining run instead of one run.
        gpu: Submit the GPU variant (train task on a GPU node).
        namespace: The user's namespace (multi-user Kubeflow).
        existing_token: A bearer token for the API.
        service_account: The ServiceAccount the run's pods use (its Roles let it create
            SparkApplications and TFJobs and patch the serving ConfigMap).
        client: A ``kfp.Client`` to use instead of a new one.
    """
    import datetime as dt

    from pipelines.forecast import pipeline_name
    from pipelines.monitoring import monitoring_pipeline_name

    arguments = config.arguments()
    monitoring = isinstance(config, MonitoringConfig)
    use_case = config.training.use_case if monitoring else config.use_case
    if monitoring and gpu:
        raise ValueError("the monitoring pipeline has no GPU variant (set gpu on its training)")
    pipeline_file = (
        monitoring_compiled_path(use_case) if monitoring else compiled_path(use_case, gpu)
    )
    if not pipeline_file.exists():
        raise FileNotFoundError(f"{pipeline_file} is missing: run `perucast pipeline compile`")
    if client is None:
        import kfp

        client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    name = monitoring_pipeline_name(use_case) if monitoring else pipeline_name(use_case, gpu)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    job = run_name or f"{name}-{stamp}"
    exp = client.create_experiment(name=experiment, namespace=namespace)
    experiment_id = exp.experiment_id
    if schedule:
        recurring = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job,
            description=(
                f"recurring monitoring of {use_case}, retraining on evidence"
                if monitoring
                else f"recurring retraining of {use_case}"
            ),
            cron_expression=schedule,
            max_concurrency=1,
            no_catchup=True,
            pipeline_package_path=str(pipeline_file),
            params=arguments,
            enabled=True,
            service_account=service_account,
        )
        return Submission(
            experiment_id=experiment_id,
            pipeline_file=pipeline_file,
            recurring_run_id=recurring.recurring_run_id,
        )
    run = client.run_pipeline(
        experiment_id=experiment_id,
        job_name=job,
        pipeline_package_path=str(pipeline_file),
        params=arguments,
        enable_caching=False,
        service_account=service_account,
    )
    return Submission(
        experiment_id=experiment_id,
        pipeline_file=pipeline_file,
        run_id=run.run_id,
        url=f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
    )
