"""The ``kubernetes`` executor: run preprocessing as a SparkApplication and training as a TFJob.

With ``executor=kubernetes`` the preprocess and train steps do not compute anything in their
own (KFP task) pod. They create one custom resource per run through the Kubernetes API, wait
for it, stream its logs, and copy the result back into their output artifacts:

1. **Render.** The object is the template in ``manifests/`` (``base/preprocessing/
   sparkapplication.yaml``, ``base/training/tfjob.yaml``), read at run time, with the base
   kustomization's namespace and labels and, when asked, an overlay's patches applied
   (strategic-merge patches that name the object, which for a custom resource merge like an
   RFC 7386 merge patch, and RFC 6902 JSON patches with a ``target``). Only the run's fields
   change: ``metadata.name`` (``<use-case>-preprocess-<8 hex>`` / ``<use-case>-train-<8 hex>``),
   ``metadata.namespace``, run labels (``app.kubernetes.io/instance``, ``perucast.io/use-case``,
   ``app.kubernetes.io/managed-by``), an owner reference to the task's pod when known, the
   ``suspend`` flag (the installed templates are suspended), the image when one is given, the
   step's arguments (``--use-case``, paths, epochs, ...), and for a TFJob the Worker replicas
   and GPUs. See :func:`render_spark_application` and :func:`render_tfjob`.
2. **Move the data.** KFP passes artifacts between tasks through its object store, but Spark
   executors and TFJob workers need a shared filesystem: the data PVC the templates mount
   (``perucast-data`` at ``/mnt/data``, found in the template, not hard-coded). The task pod
   mounts the same claim at ``PERUCAST_DATA_DIR`` (default ``/mnt/data``). The launcher copies
   the task's input artifact to ``<data>/runs/<run name>/<input>``, points the job at the same
   files through the job's own mount path, and after success copies ``<data>/runs/<run name>/
   <output>`` into the task's output artifact. The run directory is removed afterwards (success
   or not; ``PERUCAST_KEEP_RUN_DATA=1`` keeps it for a post-mortem).
3. **Submit and wait.** ``create_namespaced_custom_object``, then a status poll every
   ``poll_seconds`` until the job succeeds, fails, or ``timeout_seconds`` pass. Every change of
   the job's state and of its pods' phases (with waiting reasons such as ``ImagePullBackOff``
   or an ``Unschedulable`` message) is logged once. The driver's / chief's log is followed
   (``read_namespaced_pod_log(follow=True)`` in a thread) into this task's log, line by line,
   and followed again after a container restart.
4. **Fail clearly.** On failure the pods of the job are read and the first container that
   terminated with a non-zero exit code is named in the :class:`LaunchError` with its reason,
   exit code and message (``OOMKilled``, 137), together with the operator's message and the
   last lines of the driver's / chief's log. A timeout raises :class:`LaunchTimeoutError` with
   the last state seen.
5. **Clean up, always.** The custom object is deleted (``propagationPolicy: Background``, so
   its pods go with it) on success, failure, timeout, any exception, ``KeyboardInterrupt``, and
   SIGTERM (KFP stops a task's pod with SIGTERM; while a launch runs in the main thread that
   signal raises :class:`SystemExit` so the ``finally`` runs). When the task's pod is known
   (in a cluster: ``HOSTNAME`` and the service-account namespace file), the object also gets an
   owner reference to it, so the garbage collector removes it even if this process is killed.

**Where the templates come from** (:func:`manifests_dir`): an explicit ``manifests`` setting,
else ``$PERUCAST_MANIFESTS``, else the repository checkout this module belongs to
(``<repo>/manifests``, when ``components/`` is imported from a checkout or an editable
install), else ``/opt/perucast/manifests`` (where an image should put a copy of the repo's
``manifests/``). The templates are never copied into Python code or package data: one source
of truth, read when a run starts.

**Settings** come from :class:`LaunchSettings` (``LaunchSettings.from_env()`` is what the
pipeline's components use): ``PERUCAST_MANIFESTS``, ``PERUCAST_OVERLAY`` (e.g. ``production``),
``PERUCAST_NAMESPACE`` (else the pod's service-account namespace, else the kustomization's),
``PERUCAST_IMAGE`` (else the template's), ``PERUCAST_DATA_DIR``, ``PERUCAST_KUBE_API_HOST``
(an API server without credentials, for tests; else in-cluster config, else kubeconfig),
``PERUCAST_LAUNCH_TIMEOUT``, ``PERUCAST_LAUNCH_POLL_SECONDS``, ``PERUCAST_KEEP_RUN_DATA``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import urllib3
import yaml

log = logging.getLogger("perucast.launch")

MANIFESTS_ENV = "PERUCAST_MANIFESTS"
IMAGE_MANIFESTS = Path("/opt/perucast/manifests")
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
GPU_RESOURCE = "nvidia.com/gpu"
RUNS_SUBDIR = "runs"
MANAGED_BY = "perucast-pipeline"


class LaunchError(RuntimeError):
    """A job could not be created, failed, or was not finished in time (the message says why).

    Attributes:
        kind, name, namespace: The job.
        state: The job's last state (``FAILED``, ``Failed``, ...).
        pod, container, reason, exit_code: The first container that failed, when one did.
        log_tail: The last lines of the driver's or chief's log, when they could be read.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "",
        name: str = "",
        namespace: str = "",
        state: str = "",
        pod: str | None = None,
        container: str | None = None,
        reason: str | None = None,
        exit_code: int | None = None,
        log_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.kind, self.name, self.namespace, self.state = kind, name, namespace, state
        self.pod, self.container, self.reason, self.exit_code = pod, container, reason, exit_code
        self.log_tail = log_tail


class LaunchTimeoutError(LaunchError):
    """The job did not finish within the timeout (it has been deleted)."""


# --- settings ----------------------------------------------------------------------------------


def _env_float(environ: Mapping[str, str], key: str) -> float | None:
    value = environ.get(key, "").strip()
    return float(value) if value else None


@dataclass(frozen=True)
class LaunchSettings:
    """Where and how the launchers run jobs (every field has a default that suits a KFP pod).

    Attributes:
        manifests: The ``manifests/`` directory (see :func:`manifests_dir`).
        overlay: Apply this overlay's patches (``local``, ``production``, or a directory);
            None: the base template as it is.
        namespace: Where jobs go; None: the service-account namespace file, else the base
            kustomization's namespace.
        image: The jobs' image; None: the template's.
        data_dir: Where this process sees the data PVC that the job templates mount.
        kube_api_host: An API server to use without credentials (tests); None: in-cluster
            config, else kubeconfig. ``api_client`` wins over both.
        api_client: A ``kubernetes.client.ApiClient`` to use (tests).
        timeout_seconds: None: the TFJob's ``activeDeadlineSeconds`` plus 10 minutes, or 4 hours
            for a SparkApplication.
        poll_seconds: Status poll interval.
        log_drain_seconds: How long to wait for the log stream to end after the job finished.
        keep_run_data: Keep ``<data>/runs/<run>`` (default: removed after the run).
        owner_pod: Name of this task's pod: the job gets an owner reference to it.
        namespace_file: The service-account namespace file.
        handle_sigterm: While a launch runs in the main thread, SIGTERM raises SystemExit (so
            the job is deleted); the previous handler is restored afterwards.
    """

    manifests: Path | None = None
    overlay: str | None = None
    namespace: str | None = None
    image: str | None = None
    data_dir: Path = Path("/mnt/data")
    kube_api_host: str | None = None
    api_client: Any = None
    timeout_seconds: float | None = None
    poll_seconds: float = 5.0
    log_drain_seconds: float = 10.0
    keep_run_data: bool = False
    owner_pod: str | None = None
    namespace_file: Path = SA_NAMESPACE_FILE
    handle_sigterm: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> LaunchSettings:
        """Settings from ``PERUCAST_*`` variables (see the module docstring), then overrides."""
        env = os.environ if environ is None else environ
        namespace_file = Path(overrides.get("namespace_file", SA_NAMESPACE_FILE))
        in_cluster = namespace_file.is_file()
        values: dict[str, Any] = {
            "manifests": Path(env[MANIFESTS_ENV]) if env.get(MANIFESTS_ENV) else None,
            "overlay": env.get("PERUCAST_OVERLAY") or None,
            "namespace": env.get("PERUCAST_NAMESPACE") or None,
            "image": env.get("PERUCAST_IMAGE") or None,
            "data_dir": Path(env.get("PERUCAST_DATA_DIR") or "/mnt/data"),
            "kube_api_host": env.get("PERUCAST_KUBE_API_HOST") or None,
            "timeout_seconds": _env_float(env, "PERUCAST_LAUNCH_TIMEOUT"),
            "poll_seconds": _env_float(env, "PERUCAST_LAUNCH_POLL_SECONDS") or 5.0,
            "keep_run_data": env.get("PERUCAST_KEEP_RUN_DATA", "") in ("1", "true", "yes"),
            "owner_pod": (env.get("HOSTNAME") or None) if in_cluster else None,
            "namespace_file": namespace_file,
        }
        values.update(overrides)
        return cls(**values)


# --- templates ---------------------------------------------------------------------------------


def manifests_dir(explicit: str | Path | None = None) -> Path:
    """The ``manifests/`` directory: explicit, ``$PERUCAST_MANIFESTS``, the checkout, the image.

    Raises:
        FileNotFoundError: None of them has ``base/kustomization.yaml``.
    """
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("the manifests setting", Path(explicit)))
    elif os.environ.get(MANIFESTS_ENV):
        candidates.append((f"${MANIFESTS_ENV}", Path(os.environ[MANIFESTS_ENV])))
    else:
        candidates.append(("the repository", Path(__file__).resolve().parents[1] / "manifests"))
        candidates.append(("the image", IMAGE_MANIFESTS))
    for _, path in candidates:
        if (path / "base" / "kustomization.yaml").is_file():
            return path
    tried = ", ".join(f"{path} ({what})" for what, path in candidates)
    raise FileNotFoundError(
        f"no manifests directory with base/kustomization.yaml: tried {tried}. Point "
        f"${MANIFESTS_ENV} at a copy of the repository's manifests/ directory"
    )


def _load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what a strategic-merge patch does to a custom resource)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} does not start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def json_patch(doc: Any, operations: Sequence[Mapping[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test) on a copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for op in operations:
        kind, parts = op["op"], _pointer(op["path"])
        if kind in ("move", "copy"):
            source = _pointer(op["from"])
            value = copy.deepcopy(_walk(doc, source))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
            continue
        if kind == "test":
            if _walk(doc, parts) != op["value"]:
                raise ValueError(f"JSON patch test failed at {op['path']}")
            continue
        if not parts:
            if kind == "remove":
                raise ValueError("cannot remove the whole document")
            doc = copy.deepcopy(op["value"])
            continue
        parent, last = _walk(doc, parts[:-1]), parts[-1]
        if kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind == "replace":
            if isinstance(parent, list):
                parent[int(last)] = copy.deepcopy(op["value"])
            else:
                if last not in parent:
                    raise KeyError(f"JSON patch replace: {op['path']} does not exist")
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "add":
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                parent.insert(index, copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"unknown JSON patch op {kind!r}")
    return doc


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _matches_target(obj: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    group, version = _group_version(obj["apiVersion"])
    wanted = {
        "group": group,
        "version": version,
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace"),
    }
    for key, value in target.items():
        if key in ("labelSelector", "annotationSelector"):
            return False  # not needed by these manifests: such a patch is not ours
        if (
            key in wanted
            and wanted[key] != value
            and not (key == "name" and re.fullmatch(str(value), str(wanted[key])))
        ):
            return False
    return True


def _kustomization(directory: Path) -> dict[str, Any]:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return yaml.safe_load((directory / name).read_text(encoding="utf-8")) or {}
    raise FileNotFoundError(f"{directory} has no kustomization.yaml")


def _apply_patches(obj: dict[str, Any], directory: Path) -> dict[str, Any]:
    kustomization = _kustomization(directory)
    patches = list(kustomization.get("patches") or [])
    patches += [{"path": p} for p in kustomization.get("patchesStrategicMerge") or []]
    patches += list(kustomization.get("patchesJson6902") or [])
    for entry in patches:
        if isinstance(entry, str):
            entry = {"path": entry}
        text = (
            (directory / entry["path"]).read_text(encoding="utf-8")
            if "path" in entry
            else entry["patch"]
        )
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        target = entry.get("target")
        if target is not None and not _matches_target(obj, target):
            continue
        for doc in docs:
            if isinstance(doc, list):  # RFC 6902: only with a target
                if target is not None:
                    obj = json_patch(obj, doc)
                continue
            if target is None and not (
                doc.get("kind") == obj["kind"]
                and (doc.get("metadata") or {}).get("name") == obj["metadata"]["name"]
                and _group_version(doc.get("apiVersion", ""))[0]
                == _group_version(obj["apiVersion"])[0]
            ):
                continue
            patch = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
            patch["metadata"] = {
                k: v for k, v in (doc.get("metadata") or {}).items() if k != "name"
            }
            obj = merge_patch(obj, patch)
    return obj


def _apply_kustomization_metadata(obj: dict[str, Any], kustomization: Mapping[str, Any]) -> None:
    """What the kustomization does to a custom resource's metadata: namespace and labels."""
    metadata = obj.setdefault("metadata", {})
    if kustomization.get("namespace"):
        metadata["namespace"] = kustomization["namespace"]
    labels = dict(kustomization.get("commonLabels") or {})
    for entry in kustomization.get("labels") or []:
        labels.update(entry.get("pairs") or {})
    if labels:
        metadata["labels"] = {**(metadata.get("labels") or {}), **labels}


@dataclass(frozen=True)
class JobKind:
    """A custom resource the launchers create, and where its template lives."""

    kind: str
    group: str
    version: str
    plural: str
    template: str  # relative to manifests/

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


SPARK_APPLICATION = JobKind(
    "SparkApplication",
    "sparkoperator.k8s.io",
    "v1beta2",
    "sparkapplications",
    "base/preprocessing/sparkapplication.yaml",
)
TFJOB = JobKind("TFJob", "kubeflow.org", "v1", "tfjobs", "base/training/tfjob.yaml")


def load_template(
    kind: JobKind, manifests: str | Path | None = None, overlay: str | Path | None = None
) -> dict[str, Any]:
    """The job's template as ``kubectl kustomize`` renders it (base, or base plus an overlay).

    The base's namespace and labels are applied, then the overlay's namespace and the patches
    that target this object. Overlays must build on ``../../base`` directly (as ours do).
    """
    root = manifests_dir(manifests)
    path = root / kind.template
    found = [
        d
        for d in _load_yaml_docs(path)
        if isinstance(d, dict)
        and d.get("kind") == kind.kind
        and d.get("apiVersion") == kind.api_version
    ]
    if len(found) != 1:
        raise LaunchError(
            f"{path}: expected one {kind.api_version} {kind.kind}, found {len(found)}"
        )
    obj = found[0]
    _apply_kustomization_metadata(obj, _kustomization(root / "base"))
    if overlay:
        directory = (
            Path(overlay) if Path(str(overlay)).is_absolute() else root / "overlays" / str(overlay)
        )
        obj = _apply_patches(obj, directory)
        _apply_kustomization_metadata(
            obj, {"namespace": _kustomization(directory).get("namespace")}
        )
    return obj


# --- rendering ---------------------------------------------------------------------------------


def set_args(args: Sequence[str], values: Mapping[str, Any]) -> list[str]:
    """``args`` with the values of ``--name=value`` / ``--name value`` options replaced.

    Options not present are appended as ``--name=value``, in the order given.
    """
    out, seen, i = [], set(), 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name in values:
            seen.add(name)
            out.append(f"{name}={values[name]}")
            if "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("--"):
                i += 1  # the old value of "--name value"
        else:
            out.append(arg)
        i += 1
    out += [f"{name}={value}" for name, value in values.items() if name not in seen]
    return out


def run_name(use_case: str, step: str) -> str:
    """A unique, DNS-1123 name for one run of a step: ``crop-demand-train-1a2b3c4d``."""
    base = re.sub(r"[^a-z0-9-]+", "-", use_case.lower()).strip("-")
    return f"{base}-{step}-{uuid.uuid4().hex[:8]}"


def _run_metadata(
    obj: dict[str, Any],
    name: str,
    namespace: str,
    use_case: str,
    owner: Mapping[str, Any] | None,
) -> None:
    metadata = obj["metadata"]
    metadata["name"] = name
    metadata["namespace"] = namespace
    metadata["labels"] = {
        **(metadata.get("labels") or {}),
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "perucast.io/use-case": use_case,
    }
    if owner:
        metadata["ownerReferences"] = [dict(owner)]


def render_spark_application(
    template: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    use_case: str,
    input_path: str | PurePosixPath,
    output_path: str | PurePosixPath,
    image: str | None = None,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The SparkApplication of one preprocess run: the template with the run's fields."""
    obj = copy.deepcopy(dict(template))
    _run_metadata(obj, name, namespace, use_case, owner)
    spec = obj["spec"]
    spec["suspend"] = False
    if image:
        spec["image"] = image
    spec["arguments"] = set_args(
        spec.get("arguments") or [],
        {"--use-case": use_case, "--input": str(input_path), "--output": str(output_path)},
    )
    return obj


def _main_container(pod_spec: Mapping[str, Any]) -> dict[str, Any]:
    containers = pod_spec["containers"]
    return next((c for c in containers if c.get("name") == "tensorflow"), containers[0])


def _set_gpus(pod_spec: dict[str, Any], gpus: int, base_pod_spec: Mapping[str, Any] | None) -> None:
    container = _main_container(pod_spec)
    resources = container.setdefault("resources", {})
    if gpus > 0:
        for kind in ("requests", "limits"):
            resources.setdefault(kind, {})[GPU_RESOURCE] = str(gpus)
        if base_pod_spec:  # an overlay may have removed the GPU scheduling: the base's
            for key, value in (base_pod_spec.get("nodeSelector") or {}).items():
                if "gpu" in key:
                    pod_spec.setdefault("nodeSelector", {}).setdefault(key, value)
            tolerations = pod_spec.setdefault("tolerations", [])
            for toleration in base_pod_spec.get("tolerations") or []:
                if toleration.get("key") == GPU_RESOURCE and toleration not in tolerations:
                    tolerations.append(copy.deepcopy(toleration))
            if not tolerations:
                del pod_spec["tolerations"]
        return
    for kind in ("requests", "limits"):
        resources.get(kind, {}).pop(GPU_RESOURCE, None)
        if kind in resources and not resources[kind]:
            del resources[kind]
    selector = {k: v for k, v in (pod_spec.get("nodeSelector") or {}).items() if "gpu" not in k}
    if selector:
        pod_spec["nodeSelector"] = selector
    else:
        pod_spec.pop("nodeSelector", None)
    tolerations = [t for t in pod_spec.get("tolerations") or [] if t.get("key") != GPU_RESOURCE]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    else:
        pod_spec.pop("tolerations", None)


def render_tfjob(
    template: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    use_case: str,
    features: str | PurePosixPath,
    model_repository: str | PurePosixPath,
    output: str | PurePosixPath,
    workers: int,
    gpus: int,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    image: str | None = None,
    owner: Mapping[str, Any] | None = None,
    base_template: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The TFJob of one train run: the template with the run's fields.

    ``workers`` counts every training process, as ``--workers`` does locally: the Chief is one
    of them, so the Worker replicas are ``workers - 1`` (no Worker spec for one worker).
    ``gpus`` per pod: ``nvidia.com/gpu`` requests and limits; with 0 they are removed, and so
    are the GPU node selector and toleration (CPU pods must not wait for GPU nodes).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1 (the Chief)")
    if gpus < 0:
        raise ValueError("gpus must not be negative")
    obj = copy.deepcopy(dict(template))
    _run_metadata(obj, name, namespace, use_case, owner)
    spec = obj["spec"]
    spec.setdefault("runPolicy", {})["suspend"] = False
    replicas = spec["tfReplicaSpecs"]
    if "Chief" not in replicas:
        raise LaunchError("the TFJob template has no Chief replica (the Chief exports the model)")
    if workers == 1:
        replicas.pop("Worker", None)
    else:
        if "Worker" not in replicas:
            raise LaunchError("the TFJob template has no Worker replica to scale")
        replicas["Worker"]["replicas"] = workers - 1
    base_replicas = (base_template or {}).get("spec", {}).get("tfReplicaSpecs", {})
    values = {
        "--use-case": use_case,
        "--features": str(features),
        "--model-repository": str(model_repository),
        "--output": str(output),
        "--batch-size": batch_size,
        "--patience": patience,
        "--epochs": epochs,
        "--seed": seed,
        "--version": 1,
    }
    for replica, replica_spec in replicas.items():
        pod_spec = replica_spec["template"]["spec"]
        container = _main_container(pod_spec)
        if image:
            container["image"] = image
        container["args"] = set_args(container.get("args") or [], values)
        base_pod = (base_replicas.get(replica) or {}).get("template", {}).get("spec")
        _set_gpus(pod_spec, gpus, base_pod)
    return obj


# --- the data volume ---------------------------------------------------------------------------


def data_mount(obj: Mapping[str, Any], pvcs: Sequence[str] | None = None) -> tuple[str, str]:
    """(claim name, mount path) of the PVC the job's main container mounts.

    For a SparkApplication the driver's mounts, for a TFJob the Chief's main container. When
    ``pvcs`` is given (the claims of ``base/storage/pvcs.yaml``), the claim must be one of them.
    """
    spec = obj["spec"]
    if obj["kind"] == "SparkApplication":
        volumes, mounts = spec.get("volumes") or [], spec["driver"].get("volumeMounts") or []
    else:
        pod = spec["tfReplicaSpecs"]["Chief"]["template"]["spec"]
        volumes, mounts = pod.get("volumes") or [], _main_container(pod).get("volumeMounts") or []
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in volumes
        if v.get("persistentVolumeClaim")
    }
    found = [(claims[m["name"]], m["mountPath"]) for m in mounts if m["name"] in claims]
    if len(found) != 1:
        raise LaunchError(
            f"the {obj['kind']} template must mount exactly one PersistentVolumeClaim (the shared "
            f"data volume), it mounts {len(found)}"
        )
    if pvcs is not None and found[0][0] not in pvcs:
        raise LaunchError(
            f"the {obj['kind']} template mounts claim {found[0][0]!r}, which "
            f"base/storage/pvcs.yaml does not define ({', '.join(pvcs)})"
        )
    return found[0]


def storage_claims(manifests: str | Path | None = None) -> list[str]:
    """The PVC names ``base/storage/pvcs.yaml`` defines."""
    path = manifests_dir(manifests) / "base" / "storage" / "pvcs.yaml"
    return [
        d["metadata"]["name"]
        for d in _load_yaml_docs(path)
        if isinstance(d, dict) and d.get("kind") == "PersistentVolumeClaim"
    ]


@dataclass(frozen=True)
class RunDirs:
    """A run's directory on the data PVC, as this process and as the job's pods see it."""

    task_root: Path
    job_root: PurePosixPath

    def task(self, part: str) -> Path:
        return self.task_root / part

    def job(self, part: str) -> PurePosixPath:
        return self.job_root / part


def run_dirs(settings: LaunchSettings, name: str, job_mount: str) -> RunDirs:
    if not settings.data_dir.is_dir():
        raise LaunchError(
            f"the data volume is not mounted at {settings.data_dir}: the kubernetes executor's "
            "task pod must mount the data PVC the job templates use (set PERUCAST_DATA_DIR to "
            "its mount path)"
        )
    return RunDirs(
        settings.data_dir / RUNS_SUBDIR / name, PurePosixPath(job_mount) / RUNS_SUBDIR / name
    )


def copy_dir(source: str | Path, target: str | Path, what: str = "") -> None:
    """Copy a directory tree into ``target`` (created; existing files are replaced)."""
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise LaunchError(f"{what or source} is missing: {source} is not a directory")
    shutil.copytree(source, target, dirs_exist_ok=True)


# --- the Kubernetes API ------------------------------------------------------------------------


def api_client(settings: LaunchSettings) -> Any:
    """The ApiClient of the settings: given, ``kube_api_host``, in-cluster, else kubeconfig."""
    from kubernetes import client
    from kubernetes import config as kube_config

    if settings.api_client is not None:
        return settings.api_client
    if settings.kube_api_host:
        return client.ApiClient(client.Configuration(host=settings.kube_api_host))
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    return client.ApiClient()


def resolve_namespace(settings: LaunchSettings, template: Mapping[str, Any]) -> str:
    if settings.namespace:
        return settings.namespace
    if settings.namespace_file.is_file():
        value = settings.namespace_file.read_text(encoding="utf-8").strip()
        if value:
            return value
    return template.get("metadata", {}).get("namespace") or "default"


def _api_message(err: Exception) -> str:
    body = getattr(err, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(err, "reason", "") or err)


def _plain(api: Any, obj: Any) -> Any:
    return obj if isinstance(obj, dict) else api.sanitize_for_serialization(obj)


# --- job states --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    phase: str
    done: bool = False
    failed: bool = False
    message: str = ""
    detail: str = ""

    def describe(self) -> str:
        text = self.phase
        if self.detail:
            text += f" [{self.detail}]"
        if self.message:
            text += f": {self.message}"
        return text


def spark_state(obj: Mapping[str, Any]) -> JobState:
    """The state of a SparkApplication (``status.applicationState.state``)."""
    status = obj.get("status") or {}
    app = status.get("applicationState") or {}
    phase = app.get("state") or "NEW"
    executors = status.get("executorState") or {}
    counts: dict[str, int] = {}
    for value in executors.values():
        counts[value] = counts.get(value, 0) + 1
    detail = ", ".join(f"{n} executor(s) {s}" for s, n in sorted(counts.items()))
    return JobState(
        phase=phase,
        done=phase == "COMPLETED",
        failed=phase in ("FAILED", "SUBMISSION_FAILED"),
        message=app.get("errorMessage") or "",
        detail=detail,
    )


def tfjob_state(obj: Mapping[str, Any]) -> JobState:
    """The state of a TFJob: its latest true condition (Created, Running, Succeeded, Failed)."""
    status = obj.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    latest = conditions[-1] if conditions else {}
    for wanted in ("Failed", "Succeeded"):  # terminal conditions win
        terminal = [c for c in conditions if c.get("type") == wanted]
        if terminal:
            latest = terminal[-1]
            break
    phase = latest.get("type") or "Pending"
    replicas = status.get("replicaStatuses") or {}
    detail = "; ".join(
        f"{name} " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if v)
        for name, counts in sorted(replicas.items())
        if any(v for k, v in counts.items() if k in ("active", "succeeded", "failed"))
    )
    return JobState(
        phase=phase,
        done=phase == "Succeeded",
        failed=phase == "Failed",
        message=latest.get("message") or "",
        detail=detail,
    )


@dataclass(frozen=True)
class JobAdapter:
    """What differs between the two kinds: state, pod selector, the pod whose log we follow."""

    kind: JobKind
    state: Callable[[Mapping[str, Any]], JobState]
    selector: Callable[[str], str]
    is_main_pod: Callable[[Mapping[str, Any]], bool]
    main_container: str
    default_timeout: Callable[[Mapping[str, Any]], float]


def _tfjob_main(pod: Mapping[str, Any]) -> bool:
    labels = pod.get("metadata", {}).get("labels") or {}
    return (labels.get("training.kubeflow.org/replica-type") or "").lower() == "chief"


SPARK_ADAPTER = JobAdapter(
    kind=SPARK_APPLICATION,
    state=spark_state,
    selector=lambda name: f"sparkoperator.k8s.io/app-name={name}",
    is_main_pod=lambda pod: (
        (pod.get("metadata", {}).get("labels") or {}).get("spark-role") == "driver"
    ),
    main_container="spark-kubernetes-driver",
    default_timeout=lambda obj: 4 * 3600.0,
)
TFJOB_ADAPTER = JobAdapter(
    kind=TFJOB,
    state=tfjob_state,
    selector=lambda name: f"training.kubeflow.org/job-name={name}",
    is_main_pod=_tfjob_main,
    main_container="tensorflow",
    default_timeout=lambda obj: (
        float((obj["spec"].get("runPolicy") or {}).get("activeDeadlineSeconds") or 6 * 3600) + 600.0
    ),
)


def _pod_summary(pod: Mapping[str, Any]) -> str:
    """Phase plus what a person needs: waiting/terminated reasons, unschedulable messages."""
    status = pod.get("status") or {}
    parts = [status.get("phase") or "Unknown"]
    if status.get("reason"):
        parts.append(status["reason"])
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            parts.append(f"{condition.get('reason', '')}: {condition.get('message', '')}".strip())
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if state.get("waiting") and state["waiting"].get("reason") not in (None, "PodInitializing"):
            waiting = state["waiting"]
            parts.append(
                f"{cs['name']} waiting: {waiting['reason']}"
                + (f" ({waiting['message']})" if waiting.get("message") else "")
            )
        if state.get("terminated"):
            term = state["terminated"]
            parts.append(
                f"{cs['name']} terminated: {term.get('reason', '')} exit {term.get('exitCode')}"
            )
        if cs.get("restartCount"):
            parts.append(f"{cs['name']} restarts {cs['restartCount']}")
    return ", ".join(p for p in parts if p)


@dataclass
class _Failure:
    pod: str
    container: str
    reason: str | None
    exit_code: int | None
    message: str
    previous: bool


def _failed_container(pods: Sequence[Mapping[str, Any]]) -> _Failure | None:
    """The first container (main pod first) that terminated with an error, or a failed pod."""
    fallback = None
    for pod in pods:
        status = pod.get("status") or {}
        name = pod["metadata"]["name"]
        statuses = (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        )
        for cs in statuses:
            for key, previous in (("state", False), ("lastState", True)):
                term = (cs.get(key) or {}).get("terminated")
                if term and (term.get("exitCode") or 0) != 0:
                    return _Failure(
                        name,
                        cs["name"],
                        term.get("reason"),
                        term.get("exitCode"),
                        (term.get("message") or "").strip(),
                        previous,
                    )
        if fallback is None and (status.get("phase") == "Failed" or status.get("reason")):
            fallback = _Failure(
                name, "", status.get("reason"), None, status.get("message") or "", False
            )
    return fallback


# --- log streaming -----------------------------------------------------------------------------


class _LogFollower(threading.Thread):
    """Follows one container's log (``follow=True``) and logs each line as it arrives."""

    def __init__(self, core: Any, namespace: str, pod: str, container: str) -> None:
        super().__init__(name=f"log-{pod}", daemon=True)
        self._core, self._namespace, self._pod, self._container = core, namespace, pod, container
        self._response: Any = None
        self._stopping = threading.Event()
        self.lines = 0

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.lines += 1
        log.info("[%s] %s", self._pod, line)

    def run(self) -> None:
        buffer = b""
        try:
            self._response = self._core.read_namespaced_pod_log(
                self._pod,
                self._namespace,
                container=self._container,
                follow=True,
                _preload_content=False,
                _request_timeout=(10, None),
            )
            if self._stopping.is_set():
                return
            for chunk in self._response.stream(4096, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._emit(line)
                if self._stopping.is_set():
                    break
            if buffer:
                self._emit(buffer)
        except Exception as err:  # a broken log stream must not fail the job
            if not self._stopping.is_set():
                log.debug("log stream of %s ended: %s", self._pod, err)
        finally:
            if self._response is not None:
                with contextlib.suppress(Exception):
                    self._response.release_conn()

    def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.close()


@contextlib.contextmanager
def _sigterm_raises(enabled: bool) -> Iterator[None]:
    """While inside, SIGTERM raises SystemExit(143) in the main thread (so finally blocks run)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the clean-up finish
        log.warning("SIGTERM: stopping; the job is deleted")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the launcher ------------------------------------------------------------------------------


@dataclass
class LaunchResult:
    """What a finished job left: its last object and how long it took."""

    name: str
    namespace: str
    object: dict[str, Any]
    seconds: float
    log_lines: int = 0
    states: list[str] = field(default_factory=list)


class Launcher:
    """Create one custom resource, wait for it, stream its logs, delete it (always)."""

    adapter: JobAdapter

    def __init__(self, settings: LaunchSettings | None = None) -> None:
        self.settings = settings or LaunchSettings.from_env()
        self._api: Any = None

    # the API, created on first use
    def _client(self) -> Any:
        if self._api is None:
            self._api = api_client(self.settings)
        return self._api

    def close(self) -> None:
        if self._api is not None and self.settings.api_client is None:
            with contextlib.suppress(Exception):
                self._api.close()
        self._api = None

    def template(self) -> dict[str, Any]:
        return load_template(self.adapter.kind, self.settings.manifests, self.settings.overlay)

    def owner_reference(self, namespace: str) -> dict[str, Any] | None:
        """An owner reference to this task's pod (``owner_pod``), or None when unknown."""
        if not self.settings.owner_pod:
            return None
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            pod = client.CoreV1Api(self._client()).read_namespaced_pod(
                self.settings.owner_pod, namespace
            )
        except (ApiException, OSError) as err:
            log.warning(
                "no owner reference to pod %s (%s): the job is deleted by this task only",
                self.settings.owner_pod,
                _api_message(err),
            )
            return None
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
        }

    def run(self, body: dict[str, Any]) -> LaunchResult:
        """Create ``body``, wait until it finishes, and delete it whatever happens.

        Raises:
            LaunchError: It could not be created, or failed (with the failing pod's reason).
            LaunchTimeoutError: It did not finish within the timeout.
        """
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        kind = self.adapter.kind
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        custom = client.CustomObjectsApi(self._client())
        started = time.monotonic()
        timeout = self.settings.timeout_seconds or self.adapter.default_timeout(body)
        with _sigterm_raises(self.settings.handle_sigterm):
            try:
                custom.create_namespaced_custom_object(
                    kind.group, kind.version, namespace, kind.plural, body
                )
            except ApiException as err:
                raise LaunchError(
                    self._create_error(err, name, namespace),
                    kind=kind.kind,
                    name=name,
                    namespace=namespace,
                ) from None
            try:
                log.info("%s %s/%s created (timeout %.0fs)", kind.kind, namespace, name, timeout)
                return self._wait(custom, name, namespace, started, timeout)
            finally:
                self._delete(custom, name, namespace)

    def _create_error(self, err: Any, name: str, namespace: str) -> str:
        kind = self.adapter.kind
        what = f"cannot create {kind.kind} {namespace}/{name}: {err.status} {_api_message(err)}"
        if err.status == 404:
            what += (
                f" (is the {kind.plural}.{kind.group} CRD installed, and does namespace "
                f"{namespace!r} exist?)"
            )
        elif err.status == 403:
            what += (
                " (the task's service account needs the perucast-pipeline-runner Role of "
                "manifests/base/rbac)"
            )
        return what

    def _delete(self, custom: Any, name: str, namespace: str) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        kind = self.adapter.kind
        try:
            custom.delete_namespaced_custom_object(
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                name,
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )
            log.info("%s %s/%s deleted", kind.kind, namespace, name)
        except ApiException as err:
            if err.status != 404:
                log.error(
                    "could not delete %s %s/%s: %s %s (delete it by hand)",
                    kind.kind,
                    namespace,
                    name,
                    err.status,
                    _api_message(err),
                )
        except Exception as err:  # never mask the job's own outcome
            log.error("could not delete %s %s/%s: %s", kind.kind, namespace, name, err)

    def _wait(
        self, custom: Any, name: str, namespace: str, started: float, timeout: float
    ) -> LaunchResult:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        kind = self.adapter.kind
        core = client.CoreV1Api(self._client())
        followers: dict[tuple[str, str, int], _LogFollower] = {}
        pod_states: dict[str, str] = {}
        states: list[str] = []
        last = ""
        errors = 0
        obj: dict[str, Any] = {}
        pods: list[dict[str, Any]] = []
        try:
            while True:
                try:
                    obj = _plain(
                        self._client(),
                        custom.get_namespaced_custom_object(
                            kind.group, kind.version, namespace, kind.plural, name
                        ),
                    )
                    pods = self._pods(core, name, namespace)
                    errors = 0
                except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
                    status = getattr(err, "status", None)
                    if status == 404:
                        raise LaunchError(
                            f"{kind.kind} {namespace}/{name} disappeared while running (deleted "
                            "by someone else?)",
                            kind=kind.kind,
                            name=name,
                            namespace=namespace,
                        ) from None
                    errors += 1
                    what = f"{status} {_api_message(err)}" if status else str(err)
                    if errors >= 5:
                        raise LaunchError(
                            f"the Kubernetes API failed {errors} times in a row while watching "
                            f"{kind.kind} {namespace}/{name}: {what}",
                            kind=kind.kind,
                            name=name,
                            namespace=namespace,
                        ) from None
                    log.warning("polling %s %s failed (%s); retrying", kind.kind, name, what)
                    time.sleep(self.settings.poll_seconds)
                    continue
                state = self.adapter.state(obj) if obj else JobState("Unknown")
                text = state.describe()
                if text != last:
                    elapsed = time.monotonic() - started
                    log.info("%s %s: %s (%.0fs)", kind.kind, name, text, elapsed)
                    states.append(state.phase)
                    last = text
                for pod in pods:
                    pod_name = pod["metadata"]["name"]
                    summary = _pod_summary(pod)
                    if pod_states.get(pod_name) != summary:
                        log.info("pod %s: %s", pod_name, summary)
                        pod_states[pod_name] = summary
                    self._follow(core, namespace, pod, followers)
                if state.done:
                    self._drain(followers)
                    return LaunchResult(
                        name,
                        namespace,
                        obj,
                        time.monotonic() - started,
                        sum(f.lines for f in followers.values()),
                        states,
                    )
                if state.failed:
                    self._drain(followers)
                    raise self._failure(core, name, namespace, state, pods)
                if time.monotonic() - started > timeout:
                    seen = "; ".join(f"{p}: {s}" for p, s in pod_states.items()) or "no pods"
                    raise LaunchTimeoutError(
                        f"{kind.kind} {namespace}/{name} did not finish within {timeout:.0f}s "
                        f"(last state {text}; pods: {seen}); it is deleted",
                        kind=kind.kind,
                        name=name,
                        namespace=namespace,
                        state=state.phase,
                    )
                time.sleep(self.settings.poll_seconds)
        finally:
            for follower in followers.values():
                follower.stop()

    def _pods(self, core: Any, name: str, namespace: str) -> list[dict[str, Any]]:
        listed = core.list_namespaced_pod(namespace, label_selector=self.adapter.selector(name))
        pods = [_plain(self._client(), p) for p in listed.items]
        # The main pod (driver, chief) first, then by name.
        return sorted(pods, key=lambda p: (not self.adapter.is_main_pod(p), p["metadata"]["name"]))

    def _follow(
        self,
        core: Any,
        namespace: str,
        pod: Mapping[str, Any],
        followers: dict[tuple[str, str, int], _LogFollower],
    ) -> None:
        """Follow the main pod's log once it has a container that ran (again after restarts)."""
        if not self.adapter.is_main_pod(pod):
            return
        status = pod.get("status") or {}
        if status.get("phase") not in ("Running", "Succeeded", "Failed"):
            return
        container = self.adapter.main_container
        statuses = {cs["name"]: cs for cs in status.get("containerStatuses") or []}
        if container not in statuses and statuses:
            container = next(iter(statuses))
        restarts = (statuses.get(container) or {}).get("restartCount") or 0
        key = (pod["metadata"].get("uid") or pod["metadata"]["name"], container, restarts)
        if key in followers:
            return
        follower = _LogFollower(core, namespace, pod["metadata"]["name"], container)
        followers[key] = follower
        follower.start()

    def _drain(self, followers: Mapping[Any, _LogFollower]) -> None:
        deadline = time.monotonic() + self.settings.log_drain_seconds
        for follower in followers.values():
            follower.join(timeout=max(0.0, deadline - time.monotonic()))

    def _failure(
        self,
        core: Any,
        name: str,
        namespace: str,
        state: JobState,
        pods: Sequence[Mapping[str, Any]],
    ) -> LaunchError:
        from kubernetes.client.rest import ApiException

        kind = self.adapter.kind
        with contextlib.suppress(ApiException):  # the pods now: the poll's list may be older
            pods = self._pods(core, name, namespace) or pods
        failure = _failed_container(pods)
        message = f"{kind.kind} {namespace}/{name} failed ({state.phase}"
        message += f": {state.message})" if state.message else ")"
        if failure:
            where = f"pod {failure.pod}" + (
                f" container {failure.container}" if failure.container else ""
            )
            message += f"; {where}: {failure.reason or 'Error'}"
            if failure.exit_code is not None:
                message += f" (exit code {failure.exit_code})"
            if failure.message:
                message += f": {failure.message}"
        elif not pods:
            message += "; no pod was created"
        tail = ""
        main = next((p for p in pods if self.adapter.is_main_pod(p)), None)
        if main is not None:
            previous = bool(
                failure and failure.previous and failure.pod == main["metadata"]["name"]
            )
            tail = self._log_tail(core, namespace, main, previous)
            if tail:
                message += f"\nlast lines of {main['metadata']['name']}:\n{tail}"
        return LaunchError(
            message,
            kind=kind.kind,
            name=name,
            namespace=namespace,
            state=state.phase,
            pod=failure.pod if failure else None,
            container=failure.container if failure else None,
            reason=failure.reason if failure else None,
            exit_code=failure.exit_code if failure else None,
            log_tail=tail,
        )

    def _log_tail(
        self, core: Any, namespace: str, pod: Mapping[str, Any], previous: bool, lines: int = 20
    ) -> str:
        from kubernetes.client.rest import ApiException

        try:
            return str(
                core.read_namespaced_pod_log(
                    pod["metadata"]["name"],
                    namespace,
                    container=self.adapter.main_container,
                    tail_lines=lines,
                    previous=previous,
                )
            ).rstrip("\n")
        except (ApiException, OSError) as err:
            log.debug("no log tail of %s: %s", pod["metadata"]["name"], err)
            return ""

    # the run's directory on the data volume
    def _prepare(self, template: Mapping[str, Any], name: str) -> RunDirs:
        _, mount = data_mount(template, storage_claims(self.settings.manifests))
        return run_dirs(self.settings, name, mount)

    def _cleanup_dirs(self, dirs: RunDirs) -> None:
        if self.settings.keep_run_data:
            log.info("keeping the run's data in %s", dirs.task_root)
            return
        shutil.rmtree(dirs.task_root, ignore_errors=True)


class SparkLauncher(Launcher):
    """The preprocess step as a SparkApplication."""

    adapter = SPARK_ADAPTER

    def render(
        self,
        use_case: str,
        name: str,
        input_path: Any,
        output_path: Any,
        namespace: str | None = None,
        template: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The run's SparkApplication (``template``: default, read now from the manifests)."""
        template = template or self.template()
        namespace = namespace or resolve_namespace(self.settings, template)
        return render_spark_application(
            template,
            name=name,
            namespace=namespace,
            use_case=use_case,
            input_path=input_path,
            output_path=output_path,
            image=self.settings.image,
            owner=self.owner_reference(namespace),
        )

    def preprocess(
        self, use_case: str, validated_dir: str | Path, features_dir: str | Path
    ) -> LaunchResult:
        """Copy ``validated_dir`` onto the data volume, run the job, copy the features back."""
        template = self.template()
        name = run_name(use_case, "preprocess")
        dirs = self._prepare(template, name)
        try:
            copy_dir(validated_dir, dirs.task("validated"), "the validated data")
            body = self.render(
                use_case, name, dirs.job("validated"), dirs.job("features"), template=template
            )
            result = self.run(body)
            copy_dir(dirs.task("features"), features_dir, f"the output of {name}")
            return result
        finally:
            self._cleanup_dirs(dirs)
            self.close()


class TFJobLauncher(Launcher):
    """The train step as a TFJob."""

    adapter = TFJOB_ADAPTER

    def render(
        self,
        use_case: str,
        name: str,
        features: Any,
        model_repository: Any,
        output: Any,
        *,
        workers: int,
        gpus: int,
        epochs: int,
        batch_size: int,
        patience: int,
        seed: int,
        namespace: str | None = None,
        template: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The run's TFJob (``template``: default, read now from the manifests)."""
        template = template or self.template()
        base = load_template(TFJOB, self.settings.manifests) if self.settings.overlay else template
        namespace = namespace or resolve_namespace(self.settings, template)
        return render_tfjob(
            template,
            name=name,
            namespace=namespace,
            use_case=use_case,
            features=features,
            model_repository=model_repository,
            output=output,
            workers=workers,
            gpus=gpus,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            image=self.settings.image,
            owner=self.owner_reference(namespace),
            base_template=base,
        )

    def train(
        self,
        use_case: str,
        features_dir: str | Path,
        model_dir: str | Path,
        logs_dir: str | Path,
        *,
        workers: int,
        gpus: int,
        epochs: int,
        batch_size: int,
        patience: int,
        seed: int,
    ) -> LaunchResult:
        """Copy the features onto the data volume, train, copy the model and the logs back.

        The job exports version 1 to ``<run>/candidates/<use case>/1``, which lands in
        ``model_dir/<use case>/1``; its logs (``training.json``, TensorBoard, epochs) land in
        ``logs_dir``.
        """
        template = self.template()
        name = run_name(use_case, "train")
        dirs = self._prepare(template, name)
        try:
            copy_dir(features_dir, dirs.task("features"), "the features")
            body = self.render(
                use_case,
                name,
                dirs.job("features"),
                dirs.job("candidates"),
                dirs.job("training"),
                workers=workers,
                gpus=gpus,
                epochs=epochs,
                batch_size=batch_size,
                patience=patience,
                seed=seed,
                template=template,
            )
            result = self.run(body)
            copy_dir(dirs.task("candidates"), model_dir, f"the model of {name}")
            copy_dir(dirs.task("training"), logs_dir, f"the training logs of {name}")
            return result
        finally:
            self._cleanup_dirs(dirs)
            self.close()
