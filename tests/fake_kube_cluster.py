"""A small fake of a Kubernetes cluster for the launchers: API server, operators and kubelet.

No cluster can run in the test environment (no container runtime, no kind, no network), so the
``kubernetes`` executor's launchers (:mod:`components.launchers`) are tested against this: the
official ``kubernetes`` client talks real HTTP to it on loopback, exactly as it talks to an API
server (``kubernetes.client.Configuration(host=fake.host)``). It is not a cluster: nothing is
scheduled, no image is pulled, and the "jobs" are Python callbacks.

The API server part implements, with the API server's paths, bodies and ``Status`` errors:

* custom objects of two kinds, ``sparkoperator.k8s.io/v1beta2`` ``sparkapplications`` and
  ``kubeflow.org/v1`` ``tfjobs``: ``POST`` (create: 409 AlreadyExists, 404 for an unknown
  namespace or a kind whose CRD is "not installed", 422 Invalid from the optional ``admission``
  validator, as a CRD's schema would), ``GET`` one, ``DELETE`` (records the
  ``propagationPolicy`` and, like the garbage collector with ``Background``, deletes the pods);
* pods: ``GET`` list with an equality ``labelSelector``, ``GET`` one, and ``GET .../log`` with
  ``container``, ``tailLines``, ``previous`` and ``follow`` (a chunked stream that ends when
  the container terminates or the pod is deleted; 400 while the container waits to start).

The operator part advances each object by one step per ``GET`` of it (a poll), so a test is
deterministic and needs no sleeps. A :class:`Scenario` (per plural, default: success) says how:

* SparkApplication: ``SUBMITTED`` (driver pod ``<name>-driver`` Pending, ContainerCreating) ->
  ``RUNNING`` (driver Running, an executor pod, log lines appear) -> ``COMPLETED`` (driver
  Succeeded) or ``FAILED`` (driver terminated ``OOMKilled``, exit code 137, and the operator's
  ``errorMessage``), or ``SUBMISSION_FAILED`` without pods;
* TFJob: conditions ``Created`` -> ``Running`` (a ``<name>-chief-0`` pod and one pod per Worker
  replica, labelled as the Training Operator labels them) -> ``Succeeded`` or ``Failed`` (chief
  OOMKilled, 137, restarted ``restarts`` times first);
* ``hang`` stays Running, ``unschedulable`` stays Pending with the scheduler's message: the
  launcher's timeout is what ends them.

The kubelet part "runs" the job: ``workload(job)`` is called when a job would finish, with a
:class:`Job` whose :meth:`Job.path` maps a path inside the pods to a local directory through the
object's own volumes (``volumes={"perucast-data": tmp_path}`` is the PVC); an exception from it
fails the job like a container exiting with code 1.

``get_failures`` makes the next polls fail with the given codes (an API server that hiccups).
Every request is recorded in ``requests``; ``created`` holds the bodies as received and
``deleted`` the (plural, namespace, name, propagationPolicy) of each delete.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fake_http import send_json
from fake_kube_api import Request, status

KINDS = {
    ("sparkoperator.k8s.io", "v1beta2", "sparkapplications"): "SparkApplication",
    ("kubeflow.org", "v1", "tfjobs"): "TFJob",
}
_CUSTOM = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?$"
)
_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$")


def _bool(value: str | None) -> bool:
    """A query flag as the API server parses it (Go's strconv.ParseBool: the client sends True)."""
    return (value or "") in ("1", "t", "T", "TRUE", "true", "True")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Scenario:
    """How the fake operator runs a job.

    Attributes:
        outcome: ``succeed``, ``fail`` (the main container is OOMKilled), ``submission_failed``
            (Spark only: no pod), ``hang`` (Running forever) or ``unschedulable`` (Pending
            forever).
        log_lines: What the main container prints, spread over the running polls.
        running_polls: Polls the job stays Running before it finishes.
        reason, exit_code, message: The main container's termination on ``fail``.
        restarts: Container restarts before the final failure (TFJob ``OnFailure``).
    """

    outcome: str = "succeed"
    log_lines: list[str] = field(
        default_factory=lambda: ["starting", "reading input", "working", "writing output"]
    )
    running_polls: int = 2
    reason: str = "OOMKilled"
    exit_code: int = 137
    message: str = ""
    restarts: int = 0


@dataclass
class Job:
    """A job as the fake kubelet sees it: its object and the local directories of its volumes."""

    obj: dict[str, Any]
    volumes: dict[str, Path]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    def pod_spec(self) -> tuple[list[dict], list[dict], list[str]]:
        """(volumes, main container's volumeMounts, main container's args)."""
        spec = self.obj["spec"]
        if self.obj["kind"] == "SparkApplication":
            return (
                spec.get("volumes") or [],
                spec["driver"].get("volumeMounts") or [],
                spec.get("arguments") or [],
            )
        pod = spec["tfReplicaSpecs"]["Chief"]["template"]["spec"]
        container = pod["containers"][0]
        return pod.get("volumes") or [], container.get("volumeMounts") or [], container["args"]

    @property
    def args(self) -> dict[str, str]:
        """The main container's ``--name=value`` arguments."""
        out = {}
        for arg in self.pod_spec()[2]:
            name, _, value = arg.partition("=")
            out[name] = value
        return out

    def path(self, inside: str) -> Path:
        """The local directory behind a path inside the pod (through a mounted PVC)."""
        volumes, mounts, _ = self.pod_spec()
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in volumes
            if "persistentVolumeClaim" in v
        }
        target = PurePosixPath(inside)
        for mount in mounts:
            root = PurePosixPath(mount["mountPath"])
            if mount["name"] in claims and (target == root or root in target.parents):
                claim = claims[mount["name"]]
                if claim not in self.volumes:
                    raise FileNotFoundError(f"PVC {claim} is not bound in the fake")
                return self.volumes[claim] / target.relative_to(root)
        raise FileNotFoundError(f"{inside} is on no mounted PVC of {self.name}")


@dataclass
class _Pod:
    obj: dict[str, Any]
    container: str
    log: list[str] = field(default_factory=list)
    previous_log: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def finished(self) -> bool:
        return self.obj["status"]["phase"] in ("Succeeded", "Failed")


@dataclass
class _Run:
    plural: str
    namespace: str
    obj: dict[str, Any]
    scenario: Scenario
    polls: int = 0
    pods: list[str] = field(default_factory=list)  # names; the first is the main pod
    finished: bool = False


class FakeKubeCluster:
    """The fake API server, operators and kubelet on ``127.0.0.1`` (a random free port)."""

    def __init__(
        self,
        namespaces: tuple[str, ...] = ("perucast",),
        volumes: dict[str, Path] | None = None,
        admission: Callable[[dict[str, Any]], list[str]] | None = None,
    ) -> None:
        self.namespaces = set(namespaces)
        self.volumes = dict(volumes or {})
        self.admission = admission
        self.scenarios: dict[str, Scenario] = {}
        self.workload: Callable[[Job], None] | None = None
        self.installed = set(KINDS)  # CRDs present; remove one to simulate a missing operator
        self.get_failures: list[int] = []  # codes the next GETs of a custom object fail with
        self.requests: list[Request] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str, str | None]] = []
        self._runs: dict[tuple[str, str, str], _Run] = {}
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._lock = threading.Condition()
        self._versions = itertools.count(5000)
        self._server: ThreadingHTTPServer | None = None
        self._stopping = False

    # --- the test's side --------------------------------------------------------------------

    @property
    def host(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` for this fake (no credentials)."""
        from kubernetes import client

        return client.ApiClient(client.Configuration(host=self.host))

    def objects(self, plural: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r.obj) for k, r in self._runs.items() if k[0] == plural]

    def pod_names(self) -> list[str]:
        with self._lock:
            return sorted(name for _, name in self._pods)

    def add_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """A running pod of nobody (the KFP task's own pod, for owner references)."""
        pod = self._pod(namespace, name, {"app": "kfp-task"}, "main", "task:1", "Running")
        with self._lock:
            self._pods[(namespace, name)] = _Pod(pod, "main")
        return copy.deepcopy(pod)

    def start(self) -> FakeKubeCluster:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API server ---------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, raw: bytes) -> tuple[int, Any]:
        """(code, JSON body) of a plain request; log follows go through :meth:`follow`."""
        url = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as err:
                return 400, status(400, "BadRequest", f"the body is not JSON: {err}")
        self.requests.append(Request(method, raw_path, "", body))
        match = _CUSTOM.match(url.path)
        if match:
            return self._custom(method, match, query, body)
        match = _PODS.match(url.path)
        if match and method == "GET":
            if match["log"]:
                return self._log(match["ns"], match["name"], query)
            if match["name"]:
                return self._get_pod(match["ns"], match["name"])
            return self._list_pods(match["ns"], query.get("labelSelector", ""))
        return 404, status(404, "NotFound", "the server could not find the requested resource")

    def _custom(self, method: str, match: re.Match, query: dict, body: Any) -> tuple[int, Any]:
        api = (match["group"], match["version"], match["plural"])
        ns, name, plural = match["ns"], match["name"], match["plural"]
        if api not in self.installed:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        if ns not in self.namespaces:
            return 404, status(404, "NotFound", f'namespaces "{ns}" not found')
        key = (plural, ns, name)
        if method == "POST" and name is None:
            return self._create(api, ns, body)
        if name is None:
            return 405, status(405, "MethodNotAllowed", f"{method} on a collection")
        with self._lock:
            run = self._runs.get(key)
            if run is None:
                return 404, status(
                    404, "NotFound", f'{plural}.{api[0]} "{name}" not found', {"name": name}
                )
            if method == "GET" and self.get_failures:
                code = self.get_failures.pop(0)
                return code, status(code, "InternalError", "etcdserver: request timed out")
            if method == "GET":
                self._advance(run)
                return 200, copy.deepcopy(run.obj)
            if method == "DELETE":
                policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy")
                self.deleted.append((plural, ns, name, policy))
                del self._runs[key]
                if policy != "Orphan":
                    for pod in run.pods:
                        self._pods.pop((ns, pod), None)
                self._lock.notify_all()
                return 200, {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "group": api[0], "kind": plural},
                }
        return 405, status(405, "MethodNotAllowed", f"{method} is not supported by the fake")

    def _create(self, api: tuple[str, str, str], ns: str, body: Any) -> tuple[int, Any]:
        group, version, plural = api
        kind = KINDS[api]
        if not isinstance(body, dict):
            return 400, status(400, "BadRequest", "the body must be an object")
        if body.get("apiVersion") != f"{group}/{version}" or body.get("kind") != kind:
            return 400, status(400, "BadRequest", f"the body is not a {group}/{version} {kind}")
        self.created.append(copy.deepcopy(body))
        metadata = body.get("metadata") or {}
        name = metadata.get("name")
        if not name or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
            return 422, status(422, "Invalid", f"{kind} name {name!r} is not a DNS-1123 label")
        if metadata.get("namespace", ns) != ns:
            return 400, status(400, "BadRequest", "the namespace of the body does not match")
        errors = self.admission(body) if self.admission else []
        if errors:
            return 422, status(
                422, "Invalid", f'{kind}.{group} "{name}" is invalid: ' + "; ".join(errors)
            )
        key = (plural, ns, name)
        with self._lock:
            if key in self._runs:
                return 409, status(
                    409, "AlreadyExists", f'{plural}.{group} "{name}" already exists'
                )
            obj = copy.deepcopy(body)
            obj["metadata"].update(
                {
                    "namespace": ns,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(next(self._versions)),
                    "creationTimestamp": _now(),
                    "generation": 1,
                }
            )
            scenario = self.scenarios.get(plural, Scenario())
            self._runs[key] = _Run(plural, ns, obj, scenario)
            return 201, copy.deepcopy(obj)

    def _get_pod(self, ns: str, name: str) -> tuple[int, Any]:
        with self._lock:
            pod = self._pods.get((ns, name))
            if pod is None:
                return 404, status(404, "NotFound", f'pods "{name}" not found', {"name": name})
            return 200, copy.deepcopy(pod.obj)

    def _list_pods(self, ns: str, selector: str) -> tuple[int, Any]:
        wanted = {}
        for term in filter(None, selector.split(",")):
            if "=" not in term or "!=" in term:
                return 400, status(400, "BadRequest", f"the fake supports k=v only: {term!r}")
            key, _, value = term.partition("=")
            wanted[key.strip()] = value.lstrip("=").strip()
        with self._lock:
            items = [
                copy.deepcopy(p.obj)
                for (pod_ns, _), p in sorted(self._pods.items())
                if pod_ns == ns
                and all(p.obj["metadata"]["labels"].get(k) == v for k, v in wanted.items())
            ]
        return 200, {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(next(self._versions))},
            "items": items,
        }

    def _log_target(self, ns: str, name: str, query: dict) -> tuple[int, Any] | _Pod:
        pod = self._pods.get((ns, name))
        if pod is None:
            return 404, status(404, "NotFound", f'pods "{name}" not found')
        container = query.get("container") or pod.container
        if container != pod.container:
            return 400, status(
                400, "BadRequest", f"container {container} is not valid for pod {name}"
            )
        state = pod.obj["status"]["containerStatuses"][0]["state"]
        if "waiting" in state:
            return 400, status(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: '
                f"{state['waiting']['reason']}",
            )
        return pod

    def _log(self, ns: str, name: str, query: dict) -> tuple[int, Any]:
        with self._lock:
            target = self._log_target(ns, name, query)
            if not isinstance(target, _Pod):
                return target
            lines = target.previous_log if _bool(query.get("previous")) else target.log
            if query.get("tailLines"):
                lines = lines[-int(query["tailLines"]) :]
            return 200, "".join(line + "\n" for line in lines)

    def follow(self, raw_path: str, write: Callable[[bytes], None]) -> tuple[int, Any] | None:
        """Stream a followed log through ``write``; (code, body) when it cannot start."""
        url = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.requests.append(Request("GET", raw_path, "", None))
        match = _PODS.match(url.path)
        assert match and match["log"]
        ns, name = match["ns"], match["name"]
        with self._lock:
            target = self._log_target(ns, name, query)
            if not isinstance(target, _Pod):
                return target
        write(b"")  # the headers: the stream is open
        sent = 0
        while True:
            with self._lock:
                pod = self._pods.get((ns, name))
                if pod is not target:  # deleted (or replaced)
                    lines, done = [], True
                else:
                    lines, done = pod.log[sent:], pod.finished
                    sent += len(lines)
                if not lines and not done and not self._stopping:
                    self._lock.wait(timeout=0.2)
                    continue
            if lines:
                write("".join(line + "\n" for line in lines).encode())
            if done or self._stopping:
                return None

    # --- the operators ----------------------------------------------------------------------

    @staticmethod
    def _pod(
        ns: str, name: str, labels: dict, container: str, image: str, phase: str
    ) -> dict[str, Any]:
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        running = {"running": {"startedAt": _now()}}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "labels": dict(labels),
                "creationTimestamp": _now(),
            },
            "spec": {"containers": [{"name": container, "image": image}]},
            "status": {
                "phase": phase,
                "containerStatuses": [
                    {
                        "name": container,
                        "image": image,
                        "imageID": "",
                        "ready": phase == "Running",
                        "restartCount": 0,
                        "state": running if phase == "Running" else waiting,
                    }
                ],
            },
        }

    def _make_pods(self, run: _Run) -> None:
        obj, ns, name = run.obj, run.namespace, run.obj["metadata"]["name"]
        specs: list[tuple[str, dict, str, str]] = []  # pod name, labels, container, image
        if run.plural == "sparkapplications":
            spec = obj["spec"]
            base = {"sparkoperator.k8s.io/app-name": name, "spark-app-selector": f"spark-{name}"}
            for role, pod_name in (("driver", f"{name}-driver"), ("executor", f"{name}-exec-1")):
                labels = {**(spec[role].get("labels") or {}), **base, "spark-role": role}
                image = spec[role].get("image") or spec["image"]
                specs.append((pod_name, labels, f"spark-kubernetes-{role}", image))
        else:
            for replica in sorted(obj["spec"]["tfReplicaSpecs"], key=lambda r: r != "Chief"):
                spec = obj["spec"]["tfReplicaSpecs"][replica]
                template = spec["template"]
                container = template["spec"]["containers"][0]
                for index in range(int(spec.get("replicas", 1))):
                    labels = {
                        **(template.get("metadata", {}).get("labels") or {}),
                        "training.kubeflow.org/job-name": name,
                        "training.kubeflow.org/operator-name": "tfjob-controller",
                        "training.kubeflow.org/replica-type": replica.lower(),
                        "training.kubeflow.org/replica-index": str(index),
                    }
                    pod_name = f"{name}-{replica.lower()}-{index}"
                    specs.append((pod_name, labels, container["name"], container["image"]))
        for pod_name, labels, container, image in specs:
            pod = self._pod(ns, pod_name, labels, container, image, "Pending")
            if run.scenario.outcome == "unschedulable":
                pod["status"]["containerStatuses"] = []
                pod["status"]["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ]
            self._pods[(ns, pod_name)] = _Pod(pod, container)
            run.pods.append(pod_name)

    def _set_pods(self, run: _Run, phase: str, main_state: dict | None = None) -> None:
        """All pods Running, or finished: the main one with ``main_state``, the others done."""
        for index, pod_name in enumerate(run.pods):
            pod = self._pods.get((run.namespace, pod_name))
            if pod is None:
                continue
            cs = pod.obj["status"]["containerStatuses"][0]
            cs["ready"] = phase == "Running"
            if phase == "Running":
                pod.obj["status"]["phase"] = phase
                cs["state"] = {"running": {"startedAt": _now()}}
            elif index == 0 and main_state is not None:
                pod.obj["status"]["phase"] = phase
                cs["state"] = main_state
            else:
                pod.obj["status"]["phase"] = "Succeeded"
                cs["state"] = {
                    "terminated": {"reason": "Completed", "exitCode": 0, "finishedAt": _now()}
                }

    def _main(self, run: _Run) -> _Pod | None:
        return self._pods.get((run.namespace, run.pods[0])) if run.pods else None

    def _advance(self, run: _Run) -> None:
        """One operator step per poll (called with the lock held)."""
        if run.finished:
            return
        run.polls += 1
        scenario, spark = run.scenario, run.plural == "sparkapplications"
        if run.polls == 1:
            if spark and scenario.outcome == "submission_failed":
                message = scenario.message or "failed to run spark-submit"
                self._finish_spark(run, "SUBMISSION_FAILED", message)
                return
            self._make_pods(run)
            self._status(run, "SUBMITTED" if spark else "Created")
            return
        if scenario.outcome == "unschedulable":
            return
        if run.polls <= 1 + scenario.running_polls:
            if run.polls == 2:
                self._set_pods(run, "Running")
                self._status(run, "RUNNING" if spark else "Running")
            main = self._main(run)
            if main is not None:
                share = -(-len(scenario.log_lines) // max(1, scenario.running_polls))
                start = (run.polls - 2) * share
                main.log.extend(scenario.log_lines[start : start + share])
                self._lock.notify_all()
            return
        if scenario.outcome == "hang":
            return
        outcome, reason, code, message = (
            scenario.outcome,
            scenario.reason,
            scenario.exit_code,
            scenario.message,
        )
        if outcome == "succeed" and self.workload is not None:
            try:
                self.workload(Job(copy.deepcopy(run.obj), self.volumes))
            except Exception as err:  # the job's process failed: exit code 1
                outcome, reason, code, message = "fail", "Error", 1, f"{type(err).__name__}: {err}"
                main = self._main(run)
                if main is not None:
                    main.log.append(f"Traceback (most recent call last): {message}")
        if outcome == "succeed":
            self._set_pods(run, "Succeeded")
            if spark:
                self._finish_spark(run, "COMPLETED", "")
            else:
                self._status(run, "Succeeded", "TFJob has successfully completed.")
        else:
            terminated = {
                "terminated": {
                    "reason": reason,
                    "exitCode": code,
                    "finishedAt": _now(),
                    **({"message": message} if message else {}),
                }
            }
            main = self._main(run)
            if main is not None and scenario.restarts:
                cs = main.obj["status"]["containerStatuses"][0]
                cs["restartCount"] = scenario.restarts
                cs["lastState"] = copy.deepcopy(terminated)
                main.previous_log = list(main.log)
            self._set_pods(run, "Failed", terminated)
            if spark:
                self._finish_spark(
                    run,
                    "FAILED",
                    f"driver container failed with ExitCode: {code}, Reason: {reason}",
                )
            else:
                ns, name = run.namespace, run.obj["metadata"]["name"]
                self._status(
                    run,
                    "Failed",
                    f"TFJob {ns}/{name} has failed because 1 Chief replica(s) failed.",
                )
        run.finished = True
        self._lock.notify_all()

    def _status(self, run: _Run, phase: str, message: str = "") -> None:
        obj = run.obj
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        if run.plural == "sparkapplications":
            obj["status"] = {
                "applicationState": {"state": phase},
                "driverInfo": {"podName": f"{obj['metadata']['name']}-driver"},
                "executorState": {f"{obj['metadata']['name']}-exec-1": "RUNNING"}
                if phase == "RUNNING"
                else {},
                "submissionAttempts": 1,
            }
            return
        status_ = obj.setdefault("status", {"conditions": []})
        for condition in status_["conditions"]:
            condition["status"] = "False" if phase != "Created" else condition["status"]
        status_["conditions"].append(
            {
                "type": phase,
                "status": "True",
                "reason": f"TFJob{phase}",
                "message": message or f"TFJob {run.obj['metadata']['name']} is {phase.lower()}.",
                "lastTransitionTime": _now(),
            }
        )
        counts = {"Running": "active", "Succeeded": "succeeded", "Failed": "failed"}
        if phase in counts:
            status_["replicaStatuses"] = {
                replica: {counts[phase]: int(spec.get("replicas", 1))}
                for replica, spec in obj["spec"]["tfReplicaSpecs"].items()
            }

    def _finish_spark(self, run: _Run, state: str, message: str) -> None:
        self._status(run, state)
        if message:
            run.obj["status"]["applicationState"]["errorMessage"] = message
        run.finished = True


def _handler(cluster: FakeKubeCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls

        def _send(self, code: int, body: Any) -> None:
            send_json(self, code, body)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = parse_qs(urlsplit(self.path).query)
            if (
                self.command == "GET"
                and self.path.split("?")[0].endswith("/log")
                and _bool(query.get("follow", [""])[-1])
            ):
                self._follow()
                return
            code, body = cluster.handle(self.command, self.path, raw)
            self._send(code, body)

        def _follow(self) -> None:
            headers_sent = False

            def write(data: bytes) -> None:
                nonlocal headers_sent
                if not headers_sent:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    headers_sent = True
                if data:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

            try:
                refused = cluster.follow(self.path, write)
                if refused is not None:
                    self._send(*refused)
                    return
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler
