"""The compiled pipelines as KFP's own protobufs, their drift, and definition-time validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
from kfp.pipeline_spec import pipeline_spec_pb2
from pydantic import ValidationError

from models import USE_CASE_NAMES
from pipelines.config import MonitoringConfig, PipelineConfig
from pipelines.run import COMPILED_DIR, compile_all, compiled_path, monitoring_compiled_path

VARIANTS = [(name, gpu) for name in USE_CASE_NAMES for gpu in (False, True)]


def _load(path: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, pipeline_spec_pb2.PlatformSpec]:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2, "expected a PipelineSpec and a PlatformSpec document"
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    return spec, platform


def _executors(spec: pipeline_spec_pb2.PipelineSpec) -> dict:
    return json_format.MessageToDict(spec.deployment_spec)["executors"]


def _all_dags(spec: pipeline_spec_pb2.PipelineSpec):
    yield "root", spec.root
    for name, component in spec.components.items():
        if component.HasField("dag"):
            yield name, component


@pytest.fixture(
    scope="module", params=VARIANTS, ids=[f"{n}{'-gpu' if g else ''}" for n, g in VARIANTS]
)
def compiled(request):
    name, gpu = request.param
    spec, platform = _load(compiled_path(name, gpu))
    return name, gpu, spec, platform


def test_every_reference_in_the_compiled_spec_resolves(compiled):
    _, _, spec, _ = compiled
    executors = _executors(spec)
    for name, component in spec.components.items():
        if not component.HasField("dag"):
            assert component.executor_label in executors, f"{name}: no executor"
    for owner, component in _all_dags(spec):
        tasks = component.dag.tasks
        declared = set(component.input_definitions.parameters) | set(
            component.input_definitions.artifacts
        )
        for task_name, task in tasks.items():
            assert task.component_ref.name in spec.components, f"{owner}/{task_name}"
            for upstream in task.dependent_tasks:
                assert upstream in tasks, f"{owner}/{task_name} depends on unknown {upstream}"
            for value in task.inputs.parameters.values():
                kind = value.WhichOneof("kind")
                if kind == "task_output_parameter":
                    assert value.task_output_parameter.producer_task in tasks
                elif kind == "component_input_parameter":
                    assert value.component_input_parameter in declared, f"{owner}/{task_name}"
            for value in task.inputs.artifacts.values():
                kind = value.WhichOneof("kind")
                if kind == "task_output_artifact":
                    assert value.task_output_artifact.producer_task in tasks
                elif kind == "component_input_artifact":
                    assert value.component_input_artifact in declared, f"{owner}/{task_name}"


def test_pipeline_parameters_are_the_configs_arguments(compiled):
    name, _, spec, _ = compiled
    root = spec.root.input_definitions.parameters
    arguments = PipelineConfig(use_case=name).arguments()
    assert set(root) == set(arguments)
    assert root["workers"].default_value.number_value == arguments["workers"]
    assert root["source_kind"].default_value.string_value == arguments["source_kind"] == "synthetic"
    assert root["baselines"].default_value.list_value.values[0].string_value == "seasonal_naive"


def test_steps_run_in_order_inside_an_exit_handler_with_gates(compiled):
    _, _, spec, _ = compiled
    root = spec.root.dag.tasks
    outcome = root["record-outcome"]
    assert outcome.trigger_policy.strategy == outcome.trigger_policy.ALL_UPSTREAM_TASKS_COMPLETED
    handler = spec.components[root[outcome.dependent_tasks[0]].component_ref.name].dag.tasks
    order = {"validate": "ingest", "preprocess": "validate", "train": "preprocess"}
    for task, upstream in order.items():
        assert upstream in handler[task].dependent_tasks
    assert {"train", "preprocess", "validate"} <= set(handler["evaluate"].dependent_tasks)
    # push only under the blessing; deploy only when pushed and deploying
    blessed = next(t for t in handler.values() if "evaluate-Output" in t.trigger_policy.condition)
    assert "== true" in blessed.trigger_policy.condition
    inner = spec.components[blessed.component_ref.name].dag.tasks
    assert "push" in inner
    found = []

    def walk(tasks):
        for task_name, task in tasks.items():
            if task.trigger_policy.condition:
                found.append(task.trigger_policy.condition)
            component = spec.components[task.component_ref.name]
            if task_name == "deploy":
                found.append("deploy")
            if component.HasField("dag"):
                walk(component.dag.tasks)

    walk(inner)
    assert any("push-Output" in c and "> 0" in c for c in found)
    assert any("deploy_mode" in c and "!=" in c for c in found)
    assert "deploy" in found


def test_components_use_the_pinned_project_image_without_installing_kfp(compiled):
    _, _, spec, _ = compiled
    for label, executor in _executors(spec).items():
        container = executor["container"]
        assert container["image"].startswith("ghcr.io/perucast/perucast:"), label
        assert not container["image"].endswith(":latest")
        assert "pip install" not in " ".join(container.get("command", [])), label


def test_kubernetes_settings_parse_as_executor_configs(compiled):
    _, gpu, spec, platform = compiled
    executors = _executors(spec)
    deployment = json_format.MessageToDict(platform.platforms["kubernetes"])["deploymentSpec"]
    configs = {
        label: json_format.ParseDict(value, k8s_pb2.KubernetesExecutorConfig())
        for label, value in deployment["executors"].items()
    }
    assert set(configs) <= set(executors)
    for label in ("exec-evaluate", "exec-push", "exec-deploy", "exec-record-outcome"):
        mounts = {(p.mount_path, p.constant) for p in configs[label].pvc_mount}
        assert ("/mnt/models", "perucast-models") in mounts, label
    for label, config in configs.items():
        assert config.security_context.run_as_user == 10001, label
        assert config.security_context.run_as_non_root, label
    assert dict(configs["exec-deploy"].pod_metadata.labels) == {
        "perucast.io/serving-client": "true"
    }
    for label in ("exec-preprocess", "exec-train"):  # the launchers' hand-over volume
        mounts = {(p.mount_path, p.constant) for p in configs[label].pvc_mount}
        assert ("/mnt/data", "perucast-data") in mounts, label
    ingest = configs["exec-ingest"]
    assert ingest.secret_as_env[0].optional is True
    assert {m.env_var for m in ingest.secret_as_env[0].key_to_env} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    train_resources = executors["exec-train"]["container"]["resources"]
    assert train_resources["cpuRequest"] == 4.0
    if gpu:
        assert train_resources["accelerator"]["resourceCount"] == "1"
        assert configs["exec-train"].tolerations[0].key == "nvidia.com/gpu"
        assert dict(configs["exec-train"].node_selector.labels) == {
            "nvidia.com/gpu.present": "true"
        }
    else:
        assert "accelerator" not in train_resources
        assert not configs.get("exec-train", k8s_pb2.KubernetesExecutorConfig()).tolerations


def test_committed_yaml_equals_a_fresh_compile(tmp_path):
    fresh = compile_all(tmp_path)
    assert len(fresh) == len(VARIANTS) + len(USE_CASE_NAMES)  # + the monitoring pipelines
    for path in fresh:
        committed = COMPILED_DIR / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `perucast pipeline compile` and commit it"
        )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workers": 0}, "greater than or equal to 1"),
        ({"deploy_mode": "local"}, "needs serving_config"),
        ({"gpus": 1}, "TFJob worker"),
        ({"baselines": ("ets",)}, "seasonal_naive"),
        ({"serving_target": "nohostport"}, "host:port"),
        ({"source": {"kind": "dvc", "dvc_repo": "."}}, "dvc_repo and dvc_path"),
        ({"min_improvement_vs_naive": 1.5}, "less than 1"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_pipeline_config_rejects_bad_values_before_anything_runs(values, message):
    with pytest.raises(ValidationError, match=message):
        PipelineConfig(use_case="fish_stock", **values)


def test_use_case_defaults_fill_the_arguments():
    with pytest.raises(ValidationError, match="epochs"):
        PipelineConfig(use_case="crop_demand", epochs=20_000)
    defaults = PipelineConfig(use_case="crop_demand").arguments()
    assert defaults["batch_size"] == 1024 and defaults["min_improvement_vs_naive"] == 0.25
    fish = PipelineConfig(use_case="fish_stock").arguments()
    assert fish["batch_size"] == 64 and fish["min_improvement_vs_naive"] == 0.20


def test_the_kubernetes_executor_submits_through_the_launchers(tmp_path):
    """executor=kubernetes runs the launchers (tests/test_launchers.py runs them against a fake
    cluster); without the shared data volume they stop before any request, with a clear message.
    """
    from components.launchers import LaunchError, LaunchSettings
    from components.pipeline_steps import ExecutorNotAvailableError, preprocess_step, train_step

    unmounted = LaunchSettings(
        data_dir=tmp_path / "no-volume", kube_api_host="http://127.0.0.1:9", owner_pod=None
    )
    with pytest.raises(LaunchError, match=r"data volume is not mounted.*PERUCAST_DATA_DIR"):
        preprocess_step(
            "fish_stock", tmp_path, tmp_path / "f", executor="kubernetes", launch=unmounted
        )
    with pytest.raises(LaunchError, match="data volume is not mounted"):
        train_step(
            "fish_stock", tmp_path, tmp_path / "m", tmp_path / "l", executor="kubernetes",
            launch=unmounted,
        )  # fmt: skip
    with pytest.raises(ExecutorNotAvailableError, match="'local' or 'kubernetes'"):
        preprocess_step("fish_stock", tmp_path, tmp_path / "f", executor="slurm")


def test_served_version_follows_the_stable_label_then_the_newest(tmp_path):
    from components.pipeline_steps import served_version_dir

    repo = tmp_path / "repo"
    assert served_version_dir(repo, "fish_stock") is None
    for v in (1, 2, 3):
        (repo / "fish_stock" / str(v)).mkdir(parents=True)
    assert served_version_dir(repo, "fish_stock") == repo / "fish_stock" / "3"
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "fish_stock" base_path: "/x" '
        "model_version_policy { specific { versions: 2 versions: 3 } } "
        'version_labels { key: "stable" value: 2 } } }\n'
    )
    assert served_version_dir(repo, "fish_stock", config) == repo / "fish_stock" / "2"


# --- the monitoring pipeline ------------------------------------------------------------------


@pytest.fixture(scope="module", params=USE_CASE_NAMES)
def monitoring(request):
    spec, platform = _load(monitoring_compiled_path(request.param))
    return request.param, spec, platform


def test_monitoring_parameters_are_the_configs_arguments(monitoring):
    name, spec, _ = monitoring
    root = spec.root.input_definitions.parameters
    arguments = MonitoringConfig(training=PipelineConfig(use_case=name)).arguments()
    assert set(root) == set(arguments)
    assert root["prediction_logs"].default_value.string_value == (
        f"/mnt/models/prediction-logs/{name}"
    )
    assert root["pushgateway"].default_value.string_value == "perucast-pushgateway:9091"
    assert root["accuracy_margin"].default_value.number_value == 0.2
    assert root["retrain"].default_value.bool_value is True


def test_monitoring_retrains_through_the_nested_training_pipeline_only_on_evidence(monitoring):
    name, spec, platform = monitoring
    root = spec.root.dag.tasks
    assert set(root) == {"ingest", "monitor", "condition-1"}
    assert "ingest" in root["monitor"].dependent_tasks
    assert root["monitor"].inputs.artifacts["actuals"].task_output_artifact.producer_task == (
        "ingest"
    )
    enabled = root["condition-1"]
    assert enabled.task_info.name == "retrain-enabled"
    assert "retrain" in enabled.trigger_policy.condition
    assert "== true" in enabled.trigger_policy.condition
    inner = spec.components[enabled.component_ref.name].dag.tasks
    (recommended,) = inner.values()
    assert recommended.task_info.name == "retrain-recommended"
    assert "monitor-Output" in recommended.trigger_policy.condition
    assert "== 1" in recommended.trigger_policy.condition
    nested = spec.components[recommended.component_ref.name].dag.tasks
    (training,) = nested.values()
    assert training.component_ref.name == f"comp-perucast-{name.replace('_', '-')}-training"
    # the nested training DAG is the whole training pipeline, exit handler included
    training_dag = spec.components[training.component_ref.name].dag.tasks
    assert "record-outcome" in training_dag
    # every training parameter is forwarded from the monitoring pipeline's own parameters
    forwarded = {
        key: value.component_input_parameter for key, value in training.inputs.parameters.items()
    }
    arguments = PipelineConfig(use_case=name).arguments()
    assert forwarded == {key: f"pipelinechannel--{key}" for key in arguments}
    deployment = json_format.MessageToDict(platform.platforms["kubernetes"])["deploymentSpec"]
    monitor = json_format.ParseDict(
        deployment["executors"]["exec-monitor"], k8s_pb2.KubernetesExecutorConfig()
    )
    assert ("/mnt/models", "perucast-models") in {
        (p.mount_path, p.constant) for p in monitor.pvc_mount
    }
    assert monitor.security_context.run_as_user == 10001


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"window_days": 0}, "greater than 0"),
        ({"p_value": 1.5}, "less than 1"),
        ({"coverage_margin": 2}, "less than or equal to 1"),
        ({"min_drifted_features": 0}, "greater than or equal to 1"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_monitoring_config_rejects_bad_values_before_anything_runs(values, message):
    with pytest.raises(ValidationError, match=message):
        MonitoringConfig(training=PipelineConfig(use_case="fish_stock"), **values)
