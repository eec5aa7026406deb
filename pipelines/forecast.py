"""The training pipeline of a use case: ingest -> validate -> preprocess -> train -> evaluate
-> (blessed) push -> (pushed) deploy, inside an exit handler that records the outcome.

One pipeline per use case (:func:`build_pipeline`), compiled to
``pipelines/compiled/<use case>.yaml`` (CPU nodes) and ``<use case>-gpu.yaml`` (the train task
on a GPU node). Its parameters default to the cluster settings of :mod:`pipelines.config`;
``perucast pipeline run`` fills in local paths instead.

Kubernetes settings live beside the tasks (kfp-kubernetes): the model repository PVC on the
tasks that read or write it, the DVC remote's credentials as environment variables of ingest
(an optional Secret: a synthetic or path source needs none), CPU and memory requests and limits,
and for the GPU variant an ``nvidia.com/gpu`` accelerator, the GPU taint's toleration and the
GPU Operator's node label on the train task. ``kfp.local`` ignores them.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as objects.

from typing import Any

from kfp import dsl, kubernetes

from components import kfp_components as c
from pipelines.config import PipelineConfig

MODELS_PVC = "perucast-models"
MODELS_MOUNT = "/mnt/models"
# The launchers (executor=kubernetes) hand data to the Spark and TFJob pods on this volume.
DATA_PVC = "perucast-data"
DATA_MOUNT = "/mnt/data"
DVC_SECRET = "perucast-dvc-remote"
DVC_SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
IMAGE_UID = 10001  # the Dockerfile's USER
# The NetworkPolicy lets only pods with this label reach the model server (manifests/).
SERVING_CLIENT_LABEL = ("perucast.io/serving-client", "true")
# Caching is off for every task: ingest reads a source that may change under the same
# parameters (a DVC branch, a directory), so every later task gets new input artifacts anyway,
# and a retraining run must never silently reuse an old model.


def pipeline_name(use_case: str, gpu: bool = False) -> str:
    return f"perucast-{use_case.replace('_', '-')}-training{'-gpu' if gpu else ''}"


def _settle(
    task: dsl.PipelineTask,
    display_name: str,
    cpu: str,
    memory: str,
    models: bool = False,
    data: bool = False,
) -> dsl.PipelineTask:
    """Every task's settings: name, no caching, the image's user, resources, volumes."""
    task.set_display_name(display_name).set_caching_options(False)
    # The image's non-root user: the perucast namespace enforces Pod Security "restricted".
    kubernetes.set_security_context(
        task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID, run_as_non_root=True
    )
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory)
    task.set_memory_limit(memory)
    if models:
        kubernetes.mount_pvc(task, pvc_name=MODELS_PVC, mount_path=MODELS_MOUNT)
    if data:
        kubernetes.mount_pvc(task, pvc_name=DATA_PVC, mount_path=DATA_MOUNT)
    return task


def ingest_task(
    use_case: str,
    display_name: str,
    source_kind: Any,
    data_seed: Any,
    data_scale: Any,
    source_path: Any,
    dvc_repo: Any,
    dvc_rev: Any,
    dvc_path: Any,
) -> dsl.PipelineTask:
    """The ingest task from the pipeline's source parameters, with the DVC remote's Secret."""
    raw = c.ingest(
        use_case=use_case,
        source_kind=source_kind,
        seed=data_seed,
        scale=data_scale,
        path=source_path,
        dvc_repo=dvc_repo,
        dvc_rev=dvc_rev,
        dvc_path=dvc_path,
    )
    _settle(raw, display_name, "1", "2Gi")
    kubernetes.use_secret_as_env(
        raw, secret_name=DVC_SECRET, secret_key_to_env=DVC_SECRET_KEYS, optional=True
    )
    return raw


def build_pipeline(use_case: str, gpu: bool = False):
    """The pipeline of ``use_case``; ``gpu`` runs the train task on a GPU node.

    The defaults are ``PipelineConfig(use_case=...)``'s (validated here, at definition time).
    """
    defaults: dict[str, Any] = PipelineConfig(use_case=use_case).arguments()

    @dsl.pipeline(
        name=pipeline_name(use_case, gpu),
        description=f"perucast {use_case}: data to a blessed, validated, canary-deployed model.",
    )
    def training(
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
        outcome = c.record_outcome(use_case=use_case, runs_log=runs_log)
        _settle(outcome, "record outcome", "500m", "1Gi", models=True)
        with dsl.ExitHandler(outcome, name="training-run"):
            raw = ingest_task(
                use_case, "ingest", source_kind, data_seed, data_scale, source_path, dvc_repo,
                dvc_rev, dvc_path,
            )  # fmt: skip

            checked = c.validate(use_case=use_case, raw=raw.outputs["raw"])
            _settle(checked, "validate", "1", "4Gi")

            features = c.preprocess(
                use_case=use_case, executor=executor, validated=checked.outputs["validated"]
            )
            _settle(features, "preprocess (Spark)", "2", "6Gi", data=True)

            trained = c.train(
                use_case=use_case,
                executor=executor,
                workers=workers,
                gpus=gpus,
                epochs=epochs,
                batch_size=batch_size,
                patience=patience,
                seed=seed,
                features=features.outputs["features"],
            )
            _settle(trained, "train (TensorFlow)", "4", "8Gi", data=True)
            if gpu:
                trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
                kubernetes.add_toleration(
                    trained, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
                )
                kubernetes.add_node_selector(trained, *GPU_NODE_LABEL)

            scored = c.evaluate(
                use_case=use_case,
                model_repository=model_repository,
                serving_config=serving_config,
                min_improvement_vs_naive=min_improvement_vs_naive,
                max_regression_vs_blessed=max_regression_vs_blessed,
                baselines=baselines,
                features=features.outputs["features"],
                validated=checked.outputs["validated"],
                model=trained.outputs["model"],
            )
            _settle(scored, "evaluate", "2", "6Gi", models=True)

            with dsl.If(scored.outputs["Output"] == True, name="blessed"):  # noqa: E712
                pushed = c.push(
                    use_case=use_case,
                    model_repository=model_repository,
                    model=trained.outputs["model"],
                    evaluation=scored.outputs["evaluation"],
                    features=features.outputs["features"],
                )
                _settle(pushed, "push (infra-validated)", "2", "4Gi", models=True)

                deployable = dsl.If(pushed.outputs["Output"] > 0, name="pushed")
                with deployable, dsl.If(deploy_mode != "none", name="deploy-enabled"):
                    rollout = c.deploy(
                        use_case=use_case,
                        version=pushed.outputs["Output"],
                        model_repository=model_repository,
                        mode=deploy_mode,
                        serving_config=serving_config,
                        serving_target=serving_target,
                        namespace=namespace,
                        configmap=configmap,
                        features=features.outputs["features"],
                    )
                    _settle(rollout, "deploy (canary)", "1", "2Gi", models=True)
                    kubernetes.add_pod_label(rollout, *SERVING_CLIENT_LABEL)

    return training
