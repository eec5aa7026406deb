"""Thin KFP components over :mod:`components.pipeline_steps`.

Each component runs in the project's image (pinned tag, the project installed, so
``install_kfp_package=False``), imports its step function inside its body and only maps
artifacts to paths and metrics to its ``Metrics`` artifact: the logic lives in the library and
is tested there. Under ``kfp.local``'s SubprocessRunner the same bodies run in this virtualenv.

Parameters are plain strings, numbers and bools (what KFP can pass); the pipeline validates them
as typed configs when it is built (:mod:`pipelines.config`).
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from perucast import __version__

# No `from __future__ import annotations`: KFP reads the parameter and return annotations as
# objects when it builds each component's interface.

# The image every component, Spark and training pod runs (built from the Dockerfile, pinned).
IMAGE = f"ghcr.io/perucast/perucast:{__version__}"


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(
    use_case: str,
    source_kind: str,
    seed: int,
    scale: str,
    path: str,
    dvc_repo: str,
    dvc_rev: str,
    dvc_path: str,
    raw: Output[Dataset],
    metrics: Output[Metrics],
):
    """Raw tables from the synthetic generator, a DVC repository at a revision, or a path."""
    from components.pipeline_steps import ingest_step

    source = {"kind": source_kind, "seed": seed, "scale": scale, "path": path,
              "dvc_repo": dvc_repo, "dvc_rev": dvc_rev, "dvc_path": dvc_path}  # fmt: skip
    out = ingest_step(use_case, source, raw.path)
    out.log_to(metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate(
    use_case: str,
    raw: Input[Dataset],
    validated: Output[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """Schema, range and consistency checks: invalid data stops the run with the report."""
    from components.pipeline_steps import validate_step

    out = validate_step(use_case, raw.path, validated.path, report.path)
    out.log_to(metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(
    use_case: str,
    executor: str,
    validated: Input[Dataset],
    features: Output[Dataset],
    metrics: Output[Metrics],
):
    """Spark feature engineering (local[*], or a SparkApplication on Kubernetes)."""
    from components.pipeline_steps import preprocess_step

    out = preprocess_step(use_case, validated.path, features.path, executor=executor)
    out.log_to(metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    use_case: str,
    executor: str,
    workers: int,
    gpus: int,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    features: Input[Dataset],
    model: Output[Model],
    logs: Output[Dataset],
    metrics: Output[Metrics],
):
    """Distributed TensorFlow training (local worker processes, or a TFJob on Kubernetes)."""
    from components.pipeline_steps import train_step

    out = train_step(
        use_case, features.path, model.path, logs.path, executor, workers, gpus, epochs,
        batch_size, patience, seed,
    )  # fmt: skip
    out.log_to(metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    use_case: str,
    model_repository: str,
    serving_config: str,
    min_improvement_vs_naive: float,
    max_regression_vs_blessed: float,
    baselines: list,
    features: Input[Dataset],
    validated: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> bool:
    """Backtest vs baselines and the served model; returns the blessing."""
    from components.pipeline_steps import evaluate_step

    out = evaluate_step(
        use_case, features.path, model.path, validated.path, evaluation.path, report.path,
        model_repository, serving_config, min_improvement_vs_naive, max_regression_vs_blessed,
        tuple(baselines),
    )  # fmt: skip
    out.log_to(metrics)
    return out.values["blessed"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def push(
    use_case: str,
    model_repository: str,
    model: Input[Model],
    evaluation: Input[Dataset],
    features: Input[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> int:
    """Infra-validate a blessed model in a real server, add it as the next version; returns
    that version (0: nothing pushed). One plain output: kfp.local resolves conditions only on
    outputs named ``Output``."""
    from components.pipeline_steps import push_step

    out = push_step(use_case, model.path, evaluation.path, features.path, model_repository,
                    report.path)  # fmt: skip
    out.log_to(metrics)
    return out.values["version"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    use_case: str,
    version: int,
    model_repository: str,
    mode: str,
    serving_config: str,
    serving_target: str,
    namespace: str,
    configmap: str,
    features: Input[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """Canary rollout by version labels; promote to stable, or roll back on failure."""
    from components.pipeline_steps import deploy_step

    out = deploy_step(
        use_case, version, model_repository, mode, serving_config, serving_target, namespace,
        configmap, features.path, report.path,
    )  # fmt: skip
    out.log_to(metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def monitor(
    use_case: str,
    model_repository: str,
    prediction_logs: str,
    window_days: float,
    psi_threshold: float,
    p_value: float,
    accuracy_margin: float,
    coverage_margin: float,
    min_matched_actuals: int,
    min_drifted_features: int,
    pushgateway: str,
    actuals: Input[Dataset],
    report: Output[Dataset],
    summary: Output[HTML],
    metrics: Output[Metrics],
) -> int:
    """Drift and realized accuracy from the prediction logs; returns 1 when retraining is
    recommended, else 0 (one plain output: kfp.local resolves conditions only on ``Output``)."""
    from components.pipeline_steps import monitor_step

    settings = dict(window_days=window_days, psi_threshold=psi_threshold, p_value=p_value,
                    accuracy_margin=accuracy_margin, coverage_margin=coverage_margin,
                    min_matched_actuals=min_matched_actuals, pushgateway=pushgateway,
                    min_drifted_features=min_drifted_features)  # fmt: skip
    out = monitor_step(use_case, model_repository, prediction_logs, actuals.path, report.path,
                       summary.path, settings)  # fmt: skip
    out.log_to(metrics)
    return out.values["retrain"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def record_outcome(
    use_case: str, runs_log: str, status: dsl.PipelineTaskFinalStatus, outcome: Output[Markdown]
):
    """Exit handler: the run's final state and error, appended to ``runs_log`` when given."""
    from components.pipeline_steps import record_outcome_step

    record_outcome_step(
        use_case, runs_log, outcome.path, status.state, status.pipeline_job_resource_name,
        status.pipeline_task_name, status.error_code, status.error_message,
    )  # fmt: skip
