"""The monitoring pipeline of a use case: the evidence, then retraining when it says so.

ingest (the latest raw data: the actual values that arrived since the forecasts were made) ->
monitor (drift of the served inputs and realized accuracy, from the model server's prediction
logs; :mod:`components.monitor`) -> when ``retrain`` is on and the monitor recommends it, the use
case's training pipeline (:func:`pipelines.forecast.build_pipeline`) as a nested sub-DAG with
the same data source, so a retraining run is an ordinary training run: validated, evaluated
against the served model, blessed, pushed and canary-deployed, or stopped at any of those gates.

Schedule it with ``perucast pipeline submit --pipeline monitoring --schedule '0 0 6 * * *'``
(a recurring run); ``perucast monitor --retrain`` runs it here through ``kfp.local``.
Compiled to ``pipelines/compiled/<use case>-monitoring.yaml``.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as objects.

from typing import Any

from kfp import dsl

from components import kfp_components as c
from pipelines.config import MonitoringConfig, PipelineConfig
from pipelines.forecast import _settle, build_pipeline, ingest_task


def monitoring_pipeline_name(use_case: str) -> str:
    return f"perucast-{use_case.replace('_', '-')}-monitoring"


def build_monitoring_pipeline(use_case: str):
    """The monitoring pipeline of ``use_case`` (defaults: ``MonitoringConfig``'s, validated)."""
    defaults: dict[str, Any] = MonitoringConfig(
        training=PipelineConfig(use_case=use_case)
    ).arguments()
    training_pipeline = build_pipeline(use_case)
    training = list(PipelineConfig(use_case=use_case).arguments())

    @dsl.pipeline(
        name=monitoring_pipeline_name(use_case),
        description=f"perucast {use_case}: drift and realized accuracy from the prediction logs; "
        "retrains through the training pipeline when they cross their thresholds.",
    )
    def monitoring(
        prediction_logs: str = defaults["prediction_logs"],
        window_days: float = defaults["window_days"],
        psi_threshold: float = defaults["psi_threshold"],
        p_value: float = defaults["p_value"],
        accuracy_margin: float = defaults["accuracy_margin"],
        coverage_margin: float = defaults["coverage_margin"],
        min_matched_actuals: int = defaults["min_matched_actuals"],
        min_drifted_features: int = defaults["min_drifted_features"],
        pushgateway: str = defaults["pushgateway"],
        retrain: bool = defaults["retrain"],
        source_kind: str = defaults["source_kind"],
        data_seed: int = defaults["data_seed"],
        data_scale: str = defaults["data_scale"],
        source_path: str = defaults["source_path"],
        dvc_repo: str = defaults["dvc_repo"],
        dvc_rev: str = defaults["dvc_rev"],
        dvc_path: str = defaults["dvc_path"],
        executor: str = defaults["executor"],
        workers: int = defaults["workers"],
        gpus: int = defaults["gpus"],
        epochs: int = defaults["epochs"],
        batch_size: int = defaults["batch_size"],
        patience: int = defaults["patience"],
        seed: int = defaults["seed"],
        model_repository: str = defaults["model_repository"],
        min_improvement_vs_naive: float = defaults["min_improvement_vs_naive"],
        max_regression_vs_blessed: float = defaults["max_regression_vs_blessed"],
        baselines: list = defaults["baselines"],
        deploy_mode: str = defaults["deploy_mode"],
        serving_config: str = defaults["serving_config"],
        serving_target: str = defaults["serving_target"],
        namespace: str = defaults["namespace"],
        configmap: str = defaults["configmap"],
        runs_log: str = defaults["runs_log"],
    ):
        parameters = dict(locals())  # the pipeline's parameters, before any task is named
        actuals = ingest_task(
            use_case, "ingest (actuals)", source_kind, data_seed, data_scale, source_path,
            dvc_repo, dvc_rev, dvc_path,
        )  # fmt: skip
        watched = c.monitor(
            use_case=use_case,
            model_repository=model_repository,
            prediction_logs=prediction_logs,
            window_days=window_days,
            psi_threshold=psi_threshold,
            p_value=p_value,
            accuracy_margin=accuracy_margin,
            coverage_margin=coverage_margin,
            min_matched_actuals=min_matched_actuals,
            min_drifted_features=min_drifted_features,
            pushgateway=pushgateway,
            actuals=actuals.outputs["raw"],
        )
        _settle(watched, "monitor", "1", "4Gi", models=True)
        with (
            dsl.If(retrain == True, name="retrain-enabled"),  # noqa: E712
            dsl.If(watched.outputs["Output"] == 1, name="retrain-recommended"),
        ):
            # the training run gets the same source and its own parameters, by name
            retraining = training_pipeline(**{name: parameters[name] for name in training})
            retraining.set_display_name("retrain (training pipeline)")

    return monitoring
