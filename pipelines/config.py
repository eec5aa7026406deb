"""The typed configuration of a training run, checked when the pipeline is built or launched.

KFP passes plain parameters; :class:`PipelineConfig` is what people (and the CLI) fill in. Its
validators, and :meth:`PipelineConfig.check_steps`, build every step's own config (with
placeholder paths) so that a bad value fails before anything runs, with the step's own message,
instead of halfway through a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.ingest import SourceConfig
from models import UseCaseName

Executor = Literal["local", "kubernetes"]
DeployMode = Literal["local", "kubernetes", "none"]
Baseline = Literal["seasonal_naive", "ets", "gbt"]

# Per use case: what the network trains well with on the small data (see bench/RESULTS.md) and
# the margin over seasonal naive its evaluation requires (components.evaluate's goals).
USE_CASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "crop_demand": {"batch_size": 1024, "patience": 5, "min_improvement_vs_naive": 0.25},
    "fish_stock": {"batch_size": 64, "patience": 20, "min_improvement_vs_naive": 0.20},
}
# Where the cluster mounts the model repository PVC (manifests/): the compiled default.
CLUSTER_MODEL_REPOSITORY = "/mnt/models/repository"
CLUSTER_SERVING_TARGET = "perucast-serving:8500"


class PipelineConfig(BaseModel):
    """One training run of one use case.

    Attributes:
        use_case: crop_demand or fish_stock.
        source: Where the raw data comes from.
        executor: ``local`` (Spark local[*], local TF worker processes) or ``kubernetes``
            (SparkApplication and TFJob).
        workers: Training workers (local processes or TFJob workers).
        gpus: GPUs per training worker (TFJob on Kubernetes).
        epochs: Most training epochs (early stopping may end sooner).
        batch_size: Global batch; None takes the use case's default.
        patience: Epochs without validation improvement; None takes the use case's default.
        seed: Training seed.
        model_repository: The repository servers load from (a PVC mount on a cluster).
        min_improvement_vs_naive: The margin by which the candidate must beat seasonal naive
            (MASE); None takes the use case's default.
        max_regression_vs_blessed: How much worse than the served model a candidate may be.
        baselines: The baselines evaluate fits besides the served model (seasonal naive is
            always needed: the blessing compares with it).
        deploy_mode: ``local`` (rewrite the config file a server polls), ``kubernetes``
            (patch the serving ConfigMap) or ``none`` (push only).
        serving_config: The ModelServerConfig file (local deploy).
        serving_target: gRPC address of the server or Service deploy checks.
        namespace: Namespace of the serving ConfigMap (kubernetes deploy).
        configmap: Name of the serving ConfigMap (kubernetes deploy).
        runs_log: A JSON-lines file the exit handler appends the run's outcome to ("" = none).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    source: SourceConfig = Field(default_factory=SourceConfig)
    executor: Executor = "local"
    workers: int = Field(default=2, ge=1, le=64)
    gpus: int = Field(default=0, ge=0, le=16)
    epochs: int = Field(default=30, ge=1, le=10_000)
    batch_size: int | None = Field(default=None, ge=8)
    patience: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0)
    model_repository: str = CLUSTER_MODEL_REPOSITORY
    min_improvement_vs_naive: float | None = Field(default=None, ge=0, lt=1)
    max_regression_vs_blessed: float = Field(default=0.02, ge=0)
    baselines: tuple[Baseline, ...] = ("seasonal_naive", "ets", "gbt")
    deploy_mode: DeployMode = "kubernetes"
    serving_config: str = ""
    serving_target: str = CLUSTER_SERVING_TARGET
    namespace: str = "perucast"
    configmap: str = "perucast-serving-config"
    runs_log: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if not self.model_repository:
            raise ValueError("model_repository must not be empty")
        if self.deploy_mode == "local" and not self.serving_config:
            raise ValueError("deploy_mode 'local' needs serving_config (the file a server polls)")
        if self.deploy_mode == "kubernetes" and not (self.namespace and self.configmap):
            raise ValueError("deploy_mode 'kubernetes' needs namespace and configmap")
        if self.deploy_mode != "none" and ":" not in self.serving_target:
            raise ValueError(f"serving_target {self.serving_target!r} is not host:port")
        if "seasonal_naive" not in self.baselines:
            raise ValueError("baselines must include seasonal_naive (the blessing compares to it)")
        if self.gpus and self.executor == "local":
            raise ValueError(
                "gpus is what each TFJob worker requests (executor 'kubernetes'); the local "
                "executor uses the GPUs the process sees"
            )
        return self

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size or USE_CASE_DEFAULTS[self.use_case]["batch_size"]

    @property
    def resolved_patience(self) -> int:
        return self.patience or USE_CASE_DEFAULTS[self.use_case]["patience"]

    @property
    def resolved_margin(self) -> float:
        if self.min_improvement_vs_naive is not None:
            return self.min_improvement_vs_naive
        return USE_CASE_DEFAULTS[self.use_case]["min_improvement_vs_naive"]

    def check_steps(self) -> None:
        """Builds every step's own config with placeholder paths; raises what the step would.

        Raises:
            pydantic.ValidationError: A value a step does not accept.
        """
        from components.train import TrainConfig
        from perucast.blessing import BlessingConfig

        where = Path("/placeholder")
        TrainConfig(
            use_case=self.use_case,
            features_dir=where,
            model_repository=where,
            output_dir=where,
            version=1,
            workers=self.workers,
            epochs=self.epochs,
            batch_size=self.resolved_batch_size,
            patience=self.resolved_patience,
            seed=self.seed,
        )
        BlessingConfig(
            min_improvement_vs_naive=self.resolved_margin,
            max_regression_vs_blessed=self.max_regression_vs_blessed,
        )

    def arguments(self) -> dict[str, Any]:
        """The pipeline's parameters for this run (``kfp.Client`` / ``kfp.local``).

        Flat scalars (the source too): the KFP UI shows one field per parameter, and a dict
        parameter's default would be compiled in an order that changes between compiles.
        """
        self.check_steps()
        source = self.source.model_dump(mode="json")
        return {
            "source_kind": source["kind"],
            "data_seed": source["seed"],
            "data_scale": source["scale"],
            "source_path": source["path"],
            "dvc_repo": source["dvc_repo"],
            "dvc_rev": source["dvc_rev"],
            "dvc_path": source["dvc_path"],
            "executor": self.executor,
            "workers": self.workers,
            "gpus": self.gpus,
            "epochs": self.epochs,
            "batch_size": self.resolved_batch_size,
            "patience": self.resolved_patience,
            "seed": self.seed,
            "model_repository": self.model_repository,
            "min_improvement_vs_naive": self.resolved_margin,
            "max_regression_vs_blessed": self.max_regression_vs_blessed,
            "baselines": list(self.baselines),
            "deploy_mode": self.deploy_mode,
            "serving_config": self.serving_config,
            "serving_target": self.serving_target,
            "namespace": self.namespace,
            "configmap": self.configmap,
            "runs_log": self.runs_log,
        }


# Where the model server's prediction logs land on the cluster (the models PVC), per use case,
# and the Pushgateway of manifests/components/monitoring.
CLUSTER_PREDICTION_LOGS = "/mnt/models/prediction-logs"
CLUSTER_PUSHGATEWAY = "perucast-pushgateway:9091"


class MonitoringConfig(BaseModel):
    """One monitoring run of one use case, and the training run it launches when needed.

    Attributes:
        training: The training run (its source is also where the actuals come from).
        prediction_logs: The serving logging config's ``filename_prefix`` or a directory of
            logs ("" = ``<CLUSTER_PREDICTION_LOGS>/<use case>``).
        window_days: The monitored window, ending at the newest logged record.
        psi_threshold: PSI that flags a feature (with ``p_value``).
        p_value: Test p-value that flags a feature (with ``psi_threshold``).
        accuracy_margin: Relative MASE margin over the evaluation-time level.
        coverage_margin: Absolute coverage margin under the evaluation-time level.
        min_matched_actuals: Scored forecast periods before accuracy can decide.
        min_drifted_features: Drifted features that recommend retraining.
        pushgateway: Pushgateway ``host:port`` for the alerts' metrics ("" = none).
        retrain: Launch the training pipeline when the monitor recommends it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    training: PipelineConfig
    prediction_logs: str = ""
    window_days: float = Field(default=28.0, gt=0, le=3660)
    psi_threshold: float = Field(default=0.25, gt=0)
    p_value: float = Field(default=0.01, gt=0, lt=1)
    accuracy_margin: float = Field(default=0.2, ge=0, le=10)
    coverage_margin: float = Field(default=0.1, ge=0, le=1)
    min_matched_actuals: int = Field(default=100, ge=1)
    min_drifted_features: int = Field(default=1, ge=1)
    pushgateway: str = CLUSTER_PUSHGATEWAY
    retrain: bool = True

    @property
    def resolved_prediction_logs(self) -> str:
        return self.prediction_logs or f"{CLUSTER_PREDICTION_LOGS}/{self.training.use_case}"

    def check_steps(self) -> None:
        """Builds the monitor's own config (and the training run's); raises what they would."""
        from components.monitor import MonitorConfig

        self.training.check_steps()
        where = Path("/placeholder")
        settings = self.model_dump(exclude={"training", "prediction_logs", "retrain"})
        MonitorConfig.from_settings(
            use_case=self.training.use_case,
            model_repository=where,
            prediction_logs=Path(self.resolved_prediction_logs),
            output_dir=where,
            **settings,
        )

    def arguments(self) -> dict[str, Any]:
        """The monitoring pipeline's parameters: the monitor's, then the training run's."""
        self.check_steps()
        return {
            "prediction_logs": self.resolved_prediction_logs,
            **self.model_dump(exclude={"training", "prediction_logs"}),
            **self.training.arguments(),
        }
