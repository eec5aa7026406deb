"""The deploy step against a real `perucast-model-server` process that polls its config file.

One server serves the whole module (each test deploys its own model name into the shared
config file); it polls the file and the model directories every second and tries a failing
load once (``--max_num_load_retries=0``), so a broken version ends quickly with its error.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest
from fake_kube_api import FakeKubeAPI
from serving_harness import wait_for
from serving_models import export_toy, toy_request_inputs

from components.deploy import (
    DeployConfig,
    DeployError,
    SmokeCheckError,
    _ConfigConflict,
    _ConfigMapStore,
    app,
    deploy,
)
from serving.process import ModelServer, model_state

AVAILABLE = 30

EMPTY_CONFIG = "model_config_list {\n}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy-server")
    config_file = root / "models.config"
    config_file.write_text(EMPTY_CONFIG)
    srv = ModelServer(
        [
            f"--model_config_file={config_file}",
            "--model_config_file_poll_wait_seconds=1",
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
        ],
        log_path=root / "server.log",
    )
    srv.start()
    srv.config_file = config_file
    srv.repo = root / "repo"
    yield srv
    assert srv.stop() == 0, srv.log_tail()


def settings(server, name: str, version: int, tmp_path: Path, **overrides) -> DeployConfig:
    values = dict(
        use_case="fish_stock",
        model_name=name,
        version=version,
        model_repository=server.repo,
        config_file=server.config_file,
        serving_target=server.target,
        timeout_s=60,
        poll_interval_s=0.2,
        report_dir=tmp_path / "report",
    )
    return DeployConfig(**{**values, **overrides})


def toy_smoke(ctx):
    """A real Predict through the label with the toy model's inputs (it forecasts nothing)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = ctx.model_name
    request.model_spec.version_label = ctx.label
    for key, value in toy_request_inputs(2).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(ctx.target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=ctx.timeout_s
        )
    assert response.model_spec.version.value == ctx.version
    return {"served_version": response.model_spec.version.value, "rows": 2}


def failing_smoke(ctx):
    raise SmokeCheckError("forced failure", {"rows": 0})


def labels_of(target: str, name: str, *labels: str) -> dict[str, int | None]:
    """Label -> the version it resolves to (AVAILABLE), or None when unknown / not available."""
    out: dict[str, int | None] = {}
    for label in labels:
        try:
            states = model_state(target, name, version_label=label)
        except grpc.RpcError:
            out[label] = None
            continue
        out[label] = next((v for v, (s, _) in states.items() if s == AVAILABLE), None)
    return out


def entry_of(config_file: Path, name: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(config_file.read_text(), model_server_config_pb2.ModelServerConfig())
    return next((m for m in config.model_config_list.config if m.name == name), None)


def state_of(target: str, name: str, version: int) -> int | None:
    try:
        return model_state(target, name).get(version, (None, ""))[0]
    except grpc.RpcError:
        return None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.test-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def add_entry_by_hand(server, text: str, labels: dict[str, int]) -> str:
    """Appends a hand-written model entry to the config and waits until the server uses it.

    As in TF Serving, a label may only name a version that is already AVAILABLE, so the entry
    goes in first without its ``version_labels`` lines, then with them.
    """
    body = server.config_file.read_text().rstrip()
    assert body.endswith("}")
    name = text.split('name: "')[1].split('"')[0]
    unlabelled = "".join(line for line in text.splitlines(True) if "version_labels" not in line)
    write_atomic(server.config_file, body[:-1] + unlabelled + "}\n")
    for version in set(labels.values()):
        wait_for(
            lambda v=version: state_of(server.target, name, v) == AVAILABLE,
            timeout=60,
            what=f"version {version} of {name}",
        )
    new = body[:-1] + text + "}\n"
    write_atomic(server.config_file, new)
    wait_for(
        lambda: labels_of(server.target, name, *labels) == labels,
        timeout=60,
        what=f"the labels of {name}",
    )
    return new


# --- local mode -----------------------------------------------------------------------------


def test_first_and_second_deploy_end_with_stable_new_and_previous_old(server, tmp_path):
    name = "twice"
    export_toy(server.repo / name, 1, offset=1.0)
    first = deploy(settings(server, name, 1, tmp_path), smoke_check=toy_smoke)
    assert first.status == "deployed" and first.previous is None and not first.rolled_back
    assert [p["phase"] for p in first.phases] == [
        "read",
        "prepare smoke check",
        "load",
        "canary",
        "smoke check",
        "promote",
    ]
    assert all(p["ok"] for p in first.phases)
    entry = entry_of(server.config_file, name)
    assert entry.base_path == str(server.repo / name)
    assert entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == [1]
    assert dict(entry.version_labels) == {"stable": 1}
    assert labels_of(server.target, name, "stable", "canary") == {"stable": 1, "canary": None}

    export_toy(server.repo / name, 2, offset=2.0)
    second = deploy(settings(server, name, 2, tmp_path), smoke_check=toy_smoke)
    assert second.status == "deployed" and second.previous == 1
    assert second.smoke == [{"target": server.target, "ok": True, "served_version": 2, "rows": 2}]
    entry = entry_of(server.config_file, name)
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 2, "previous": 1}
    assert labels_of(server.target, name, "stable", "previous", "canary") == {
        "stable": 2,
        "previous": 1,
        "canary": None,
    }
    states = model_state(server.target, name)
    assert states[1][0] == states[2][0] == AVAILABLE

    report = json.loads((tmp_path / "report" / "deploy.json").read_text())
    assert report["status"] == "deployed" and report["previous"] == 1 and report["version"] == 2
    assert not report["rolled_back"]
    assert {p["phase"] for p in report["phases"]} >= {"load", "canary", "smoke check", "promote"}
    markdown = (tmp_path / "report" / "deploy.md").read_text()
    assert "version 2 is `stable`" in markdown and "| promote |" in markdown

    # Deploying the stable version again changes nothing.
    before = server.config_file.read_bytes()
    again = deploy(settings(server, name, 2, tmp_path), smoke_check=failing_smoke)
    assert again.status == "unchanged"
    assert server.config_file.read_bytes() == before


def test_failed_smoke_check_restores_the_config_byte_for_byte(server, tmp_path):
    """After 1 and 2 (stable 2, previous 1), deploying 3 unloads 1; the rollback reloads 1
    before it restores the original labels (TF Serving refuses a label on an unloaded version)."""
    name = "smokefail"
    for version in (1, 2, 3):
        export_toy(server.repo / name, version, offset=float(version))
    original = add_entry_by_hand(
        server,
        f"""
  # written by hand, kept as is by a rollback
  config {{
    name: "{name}"  base_path: "{server.repo / name}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 2 }}
    version_labels {{ key: "previous" value: 1 }}
  }}
""",
        {"stable": 2, "previous": 1},
    )
    with pytest.raises(DeployError, match="forced failure") as caught:
        deploy(settings(server, name, 3, tmp_path), smoke_check=failing_smoke)
    result = caught.value.result
    assert result.status == "rolled_back" and result.rolled_back and result.rollback_verified
    assert result.previous == 2
    assert server.config_file.read_text() == original
    assert labels_of(server.target, name, "stable", "previous", "canary") == {
        "stable": 2,
        "previous": 1,
        "canary": None,
    }
    wait_for(lambda: state_of(server.target, name, 3) != AVAILABLE, what="3 unloaded")
    report = json.loads((tmp_path / "report" / "deploy.json").read_text())
    assert report["status"] == "rolled_back" and report["rolled_back"] is True
    assert "forced failure" in report["error"]
    assert report["smoke"][0]["ok"] is False
    assert [p["phase"] for p in report["phases"]][-2:] == ["smoke check", "rollback"]
    assert "**rolled back**" in (tmp_path / "report" / "deploy.md").read_text()


def test_a_version_that_fails_to_load_is_rolled_back_with_the_load_error(server, tmp_path):
    name = "corrupt"
    export_toy(server.repo / name, 1)
    original = add_entry_by_hand(
        server,
        f"""  config {{ name: "{name}" base_path: "{server.repo / name}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
""",
        {"stable": 1},
    )
    broken = export_toy(server.repo / name, 2)
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    with pytest.raises(DeployError, match="version 2 of model corrupt failed to load") as caught:
        deploy(settings(server, name, 2, tmp_path), smoke_check=toy_smoke)
    message = str(caught.value)
    assert "rolled back" in message
    load_error = model_state(server.target, name)[2][1]
    assert load_error and load_error in message
    assert caught.value.result.status == "rolled_back"
    assert server.config_file.read_text() == original
    assert labels_of(server.target, name, "stable") == {"stable": 1}


def test_default_smoke_check_refuses_a_model_that_is_not_a_forecaster(server, tmp_path):
    """A first deploy (no previous): the real check sends the version's warm-up requests,
    the toy model answers without p10/p50/p90, and the model leaves the config again."""
    name = "notforecaster"
    export_toy(server.repo / name, 1)
    before = server.config_file.read_bytes()
    with pytest.raises(DeployError, match="not a forecaster") as caught:
        deploy(settings(server, name, 1, tmp_path))
    assert caught.value.result.status == "rolled_back"
    assert caught.value.result.previous is None
    assert server.config_file.read_bytes() == before
    wait_for(lambda: state_of(server.target, name, 1) != AVAILABLE, what="the model unloaded")


@pytest.fixture(scope="module")
def fish_model(fish_features, server):
    from components.train import TrainConfig, train

    result = train(
        TrainConfig(
            use_case="fish_stock",
            features_dir=fish_features,
            model_repository=server.repo,
            output_dir=server.repo.parent / "train",
            epochs=2,
            batch_size=64,
        )
    )
    return result.version


def test_default_smoke_check_passes_on_a_trained_fish_model(
    server, fish_model, fish_features, tmp_path
):
    config = settings(
        server, "fish_stock", fish_model, tmp_path, features_dir=fish_features, smoke_samples=10
    )
    result = deploy(config)
    assert result.status == "deployed"
    (smoke,) = result.smoke
    assert smoke["ok"] and smoke["served_version"] == fish_model
    assert smoke["requests"] == 4 and smoke["rows"] == 10 and smoke["horizon"] == 6
    assert 0 <= smoke["p50_min"] <= smoke["p50_max"]
    assert labels_of(server.target, "fish_stock", "stable") == {"stable": fish_model}


# --- kubernetes mode ------------------------------------------------------------------------


@pytest.fixture
def kube(server):
    """The fake API server with a ConfigMap that a 'kubelet' mirrors into the server's file.

    No Kubernetes cluster can run here, so `FakeKubeAPI` (real HTTP, the official client)
    stands in for the API server, and the test plays the kubelet: every change of the
    ConfigMap's key is written (atomically) to the config file the real model server polls.
    """
    api = FakeKubeAPI().start()
    api.add_configmap(
        "serving",
        "tf-serving-models",
        {"models.config": server.config_file.read_text(), "other": "untouched"},
    )

    def kubelet(namespace, name, configmap):
        text = configmap["data"].get("models.config", "")
        tmp = server.config_file.with_name(".kubelet-tmp")
        tmp.write_text(text)
        os.replace(tmp, server.config_file)

    api.on_change = kubelet
    yield api
    api.stop()


def core_api(host: str):
    from kubernetes import client

    return client.CoreV1Api(client.ApiClient(client.Configuration(host=host)))


def kube_settings(server, kube, name, version, tmp_path, **overrides):
    values = dict(
        mode="kubernetes",
        config_file=None,
        namespace="serving",
        configmap="tf-serving-models",
        kube_api_host=kube.host,
    )
    return settings(server, name, version, tmp_path, **{**values, **overrides})


def test_kubernetes_mode_patches_the_configmap_and_rolls_back(server, kube, tmp_path):
    name = "kube"
    export_toy(server.repo / name, 1, offset=1.0)
    export_toy(server.repo / name, 2, offset=2.0)
    deployed = deploy(kube_settings(server, kube, name, 1, tmp_path), smoke_check=toy_smoke)
    assert deployed.status == "deployed"
    assert deployed.config_source == "configmap serving/tf-serving-models[models.config]"
    patches = [r for r in kube.requests if r.method == "PATCH"]
    assert len(patches) == 3  # load, canary, promote
    for patch in patches:
        assert patch.content_type == "application/strategic-merge-patch+json"
        assert set(patch.body) == {"metadata", "data"}
        assert set(patch.body["data"]) == {"models.config"}
        assert patch.body["metadata"]["resourceVersion"]  # the precondition
    configmap = kube.configmap("serving", "tf-serving-models")
    assert configmap["data"]["other"] == "untouched"
    assert 'key: "stable"' in configmap["data"]["models.config"]
    assert labels_of(server.target, name, "stable") == {"stable": 1}

    # Someone deploys another model into the same ConfigMap while our smoke check runs, and
    # the check fails: the rollback restores our entry and keeps theirs.
    other = "kubeother"
    export_toy(server.repo / other, 1)
    original = kube.configmap("serving", "tf-serving-models")["data"]["models.config"]

    def concurrent_then_fail(ctx):
        api = core_api(kube.host)
        text = api.read_namespaced_config_map("tf-serving-models", "serving").data["models.config"]
        entry = f'config {{ name: "{other}" base_path: "{server.repo / other}" }}\n'
        text = text.replace("model_config_list {\n", "model_config_list {\n" + entry, 1)
        api.patch_namespaced_config_map(
            "tf-serving-models", "serving", {"data": {"models.config": text}}
        )
        raise RuntimeError("canary answers look wrong")

    with pytest.raises(DeployError, match="canary answers look wrong") as caught:
        deploy(kube_settings(server, kube, name, 2, tmp_path), smoke_check=concurrent_then_fail)
    assert caught.value.result.status == "rolled_back"
    text = kube.configmap("serving", "tf-serving-models")["data"]["models.config"]
    assert entry_of(server.config_file, other) is not None  # theirs is kept
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    def ours(config_text):
        parsed = text_format.Parse(config_text, model_server_config_pb2.ModelServerConfig())
        return next(m for m in parsed.model_config_list.config if m.name == name)

    assert ours(text) == ours(original)
    assert labels_of(server.target, name, "stable", "canary") == {"stable": 1, "canary": None}


def test_configmap_store_refuses_a_stale_write_and_reports_a_missing_configmap(kube, tmp_path):
    api = core_api(kube.host)
    store = _ConfigMapStore(api, "serving", "tf-serving-models", "models.config")
    text, token = store.read()
    api.patch_namespaced_config_map("tf-serving-models", "serving", {"data": {"other": "moved"}})
    with pytest.raises(_ConfigConflict):
        store.write("model_config_list {}\n", token)
    assert kube.configmap("serving", "tf-serving-models")["data"]["models.config"] == text
    assert isinstance(store.write(text, store.read()[1]), str)

    missing = _ConfigMapStore(api, "serving", "no-such-map", "models.config")
    with pytest.raises(FileNotFoundError, match="no-such-map not found"):
        missing.read()


def test_a_missing_configmap_fails_before_anything_is_written(server, kube, tmp_path):
    config = kube_settings(server, kube, "kube", 1, tmp_path, configmap="absent")
    with pytest.raises(FileNotFoundError, match="absent not found"):
        deploy(config, smoke_check=toy_smoke)
    assert not [r for r in kube.requests if r.method == "PATCH"]
    assert json.loads((tmp_path / "report" / "deploy.json").read_text())["status"] == "failed"


# --- configuration and CLI ------------------------------------------------------------------


def test_config_validation(tmp_path):
    base = dict(
        use_case="fish_stock",
        version=1,
        model_repository=tmp_path,
        serving_target="localhost:8500",
    )
    DeployConfig(**base, config_file=tmp_path / "m.config")
    DeployConfig(**base, mode="kubernetes", namespace="ns", configmap="cm")
    cases = [
        ({}, "needs config_file"),
        ({"mode": "kubernetes"}, "needs namespace and configmap"),
        ({"mode": "kubernetes", "namespace": "ns"}, "needs configmap"),
        (
            {"mode": "kubernetes", "namespace": "ns", "configmap": "c", "config_file": tmp_path},
            "only applies to mode 'local'",
        ),
        ({"config_file": tmp_path, "namespace": "ns"}, "only apply to mode 'kubernetes'"),
        ({"config_file": tmp_path, "mode": "docker"}, "mode"),
        ({"config_file": tmp_path, "version": 0}, "version"),
        ({"config_file": tmp_path, "use_case": "potatoes"}, "unknown use case"),
        ({"config_file": tmp_path, "model_name": "../up"}, "model_name"),
        ({"config_file": tmp_path, "serving_target": " , "}, "serving_target"),
        ({"config_file": tmp_path, "timeout_s": 0}, "timeout_s"),
        ({"config_file": tmp_path, "smoke_samples": 0}, "smoke_samples"),
        ({"config_file": tmp_path, "colour": "red"}, "colour"),
        (
            {"config_file": tmp_path, "features_dir": tmp_path, "smoke_request": tmp_path},
            "not both",
        ),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            DeployConfig(**{**base, **overrides})
    config = DeployConfig(**{**base, "config_file": tmp_path, "serving_target": "a:1, b:2"})
    assert config.name == "fish_stock" and config.targets == ["a:1", "b:2"]
    with pytest.raises(ValueError):
        config.version = 2  # frozen


def test_cli_exit_codes(tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    common = [
        "--use-case",
        "fish_stock",
        "--version",
        "1",
        "--model-repository",
        str(tmp_path / "repo"),
        "--serving-target",
        "127.0.0.1:1",
    ]
    usage = runner.invoke(app, [*common, "--mode", "kubernetes"])
    assert usage.exit_code == 2, usage.output
    missing = runner.invoke(app, [*common, "--config-file", str(tmp_path / "none.config")])
    assert missing.exit_code == 3, missing.output
    (tmp_path / "bad.config").write_text("model_config_list { config { nme: 1 } }")
    started = time.monotonic()
    bad = runner.invoke(app, [*common, "--config-file", str(tmp_path / "bad.config")])
    assert bad.exit_code == 1, bad.output
    assert "not a ModelServerConfig text proto" in bad.output
    assert time.monotonic() - started < 30


def test_smoke_rows_from_a_request_file(tmp_path):
    from components.deploy import _smoke_rows

    base = dict(
        use_case="fish_stock",
        version=1,
        model_repository=tmp_path,
        serving_target="localhost:8500",
        config_file=tmp_path / "m.config",
        smoke_samples=2,
    )
    rows = [{"zone": z, "biomass_tonnes": float(i)} for i, z in enumerate("abc")]
    for body in (
        {"instances": rows},
        {"inputs": {"zone": ["a", "b", "c"], "biomass_tonnes": [0.0, 1.0, 2.0]}},
        {"zone": ["a", "b", "c"], "biomass_tonnes": [0.0, 1.0, 2.0]},
    ):
        path = tmp_path / "request.json"
        path.write_text(json.dumps(body))
        frame = _smoke_rows(DeployConfig(**base, smoke_request=path), None)
        assert frame.to_dict("list") == {"zone": ["a", "b"], "biomass_tonnes": [0.0, 1.0]}
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected"):
        _smoke_rows(DeployConfig(**base, smoke_request=path), None)
