"""A stub of the Kubeflow Pipelines v2beta1 REST API, over real HTTP on loopback.

There is no KFP server on this machine (no cluster, no KFP API server, and tests must not reach
the network), so ``perucast pipeline submit`` is tested against this stub: ``kfp.Client`` 2.x
(through ``kfp_server_api``) talks real HTTP to it, exactly as it talks to
``http://<kubeflow>/pipeline``. It implements only what the client calls for perucast's flows,
with the paths, methods and JSON shapes (snake_case field names, RFC 3339 timestamps, UUID ids)
of the KFP API server:

* ``GET  /apis/v2beta1/healthz``: ``multi_user`` and ``pipeline_store``;
* ``GET  /apis/v2beta1/experiments``: ``filter`` (a JSON ``Filter``: ``EQUALS``,
  ``NOT_EQUALS`` or ``IS_SUBSTRING`` on ``display_name``, operations by name or number) and
  ``namespace``; an empty result has no ``experiments`` key, as proto3 JSON has it;
* ``POST /apis/v2beta1/experiments``: a new experiment (409 ALREADY_EXISTS for a name taken in
  its namespace);
* ``GET  /apis/v2beta1/experiments/{id}``;
* ``POST /apis/v2beta1/runs``: a run from an inline ``pipeline_spec`` (a bare PipelineSpec, or
  ``{"pipeline_spec": ..., "platform_spec": ...}`` as ``kfp.Client`` sends a pipeline with
  Kubernetes settings); state ``PENDING``;
* ``GET  /apis/v2beta1/runs/{id}`` and ``GET /apis/v2beta1/runs?experiment_id=``;
* ``POST /apis/v2beta1/recurringruns`` and ``GET /apis/v2beta1/recurringruns/{id}``.

It validates what it receives where that matters, answering errors as the server's gateway
does (``{"error", "code", "message", "details"}`` with the gRPC code, and the HTTP status):

* 400 INVALID_ARGUMENT: a body that is not JSON; an experiment without a name; a run or
  recurring run without a display name, without an ``experiment_id`` (stricter than the real
  server, which falls back to its default experiment: perucast always names one), with neither
  or both of ``pipeline_spec`` and ``pipeline_version_reference``, with a spec that is not a
  PipelineSpec (no ``pipelineInfo.name``, ``root.dag`` or ``schemaVersion``); runtime
  parameters the spec's root does not declare ("Unrecognized input parameter"), a required one
  missing, or a value of the wrong type for its ``parameterType`` (the real server leaves the
  type check to the driver when the run starts: the stub does it up front); a recurring run's
  ``max_concurrency`` outside 1-10, a trigger with neither or both schedules, a cron
  ``robfig/cron`` v1 would not parse (5 or 6 fields, seconds first, or a ``@descriptor``), a
  periodic interval under 1 s, an unknown ``mode``; an unsupported filter; in multi-user mode,
  an experiment without a namespace;
* 401 UNAUTHENTICATED when the stub has a ``token`` and the request's bearer token differs;
* 404 NOT_FOUND for an unknown experiment, run, recurring run, pipeline version or path;
  405 for another method on a known path.

Every request is recorded in ``requests`` (method, path, query, parsed JSON body, headers) for
assertions. Use it as a context manager::

    with FakeKfpApi() as api:
        kfp.Client(host=api.url).create_experiment("x")
        assert api.calls("POST", "/apis/v2beta1/experiments")
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fake_http import send_json

API = "/apis/v2beta1"
EPOCH = "1970-01-01T00:00:00Z"

# gRPC status codes and the HTTP statuses grpc-gateway maps them to.
INVALID_ARGUMENT = (3, 400)
NOT_FOUND = (5, 404)
ALREADY_EXISTS = (6, 409)
UNIMPLEMENTED = (12, 405)
UNAUTHENTICATED = (16, 401)

# google.protobuf.Value kinds a runtime parameter of each PipelineSpec parameterType may take.
_PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "LIST": (list,),
    "STRUCT": (dict,),
}
_FILTER_OPERATIONS = {1: "EQUALS", 2: "NOT_EQUALS", 9: "IS_SUBSTRING"}
_CRON_DESCRIPTORS = frozenset(
    ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
)
_CRON_EVERY = re.compile(r"@every (\d+(\.\d+)?(ns|us|ms|s|m|h))+")  # a Go time.Duration
# (lowest, highest, names) of each field of a six-field robfig/cron v1 spec (seconds first).
_CRON_FIELDS = (
    (0, 59, ()),
    (0, 59, ()),
    (0, 23, ()),
    (1, 31, ()),
    (1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    (0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)


class ApiError(Exception):
    """An error answer: ``status`` is the (gRPC code, HTTP status) pair."""

    def __init__(self, status: tuple[int, int], message: str) -> None:
        super().__init__(message)
        self.code, self.http_status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, "message": self.message, "details": []}


@dataclass(frozen=True)
class Request:
    """One request the stub received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def split_pipeline_spec(spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PipelineSpec, PlatformSpec) of a run's ``pipeline_spec`` field, in either shape."""
    if isinstance(spec, dict) and "pipeline_spec" in spec and "pipelineInfo" not in spec:
        return spec["pipeline_spec"] or {}, spec.get("platform_spec") or {}
    return spec or {}, {}


def cron_error(expression: str) -> str | None:
    """Why robfig/cron v1 ``cron.Parse`` rejects ``expression`` (None when it parses)."""
    spec = expression.strip()
    if spec.startswith("@"):
        if spec in _CRON_DESCRIPTORS or re.fullmatch(
            r"@every (\d+(\.\d+)?(ns|us|ms|s|m|h))+", spec
        ):
            return None
        return f"Unrecognized descriptor: {spec}"
    fields = spec.split()
    if not 5 <= len(fields) <= 6:
        return f"Expected 5 to 6 fields, found {len(fields)}: {spec}"
    for text, (low, high, names) in zip(fields, _CRON_FIELDS, strict=False):
        for part in text.split(","):
            problem = _cron_part_error(part, low, high, names)
            if problem:
                return problem
    return None


def _cron_part_error(part: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    range_text, _, step = part.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return f"Failed to parse int from {step}"
    if range_text in ("*", "?"):
        return None
    for bound in range_text.split("-", 1):
        if bound.upper() in names:
            continue
        if not bound.isdigit():
            return f"Failed to parse int from {bound}"
        if not low <= int(bound) <= high:
            return f"Value ({bound}) out of range [{low}, {high}]: {part}"
    return None


class FakeKfpApi:
    """The stub server: ``start``/``stop``, or ``with FakeKfpApi() as api: ... api.url``.

    Args:
        token: When set, every request must carry ``Authorization: Bearer <token>``.
        multi_user: What healthz reports; experiments then need a namespace.
    """

    def __init__(self, token: str | None = None, multi_user: bool = False) -> None:
        self.token = token
        self.multi_user = multi_user
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKfpApi:
        stub = self

        class Handler(_Handler):
            api = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-kfp-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeKfpApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests read ------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """The recorded requests with this method and path (either None: any)."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def add_experiment(self, display_name: str, namespace: str = "") -> dict[str, Any]:
        """An experiment that exists before the test's requests (no request recorded)."""
        with self._lock:
            return self._new_experiment({"display_name": display_name, "namespace": namespace})

    # --- dispatch -------------------------------------------------------------------------

    _ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
        (method, re.compile(f"^{API}{pattern}$"), name)
        for method, pattern, name in (
            ("GET", "/healthz", "_healthz"),
            ("GET", "/experiments", "_list_experiments"),
            ("POST", "/experiments", "_create_experiment"),
            ("GET", r"/experiments/(?P<id>[^/:]+)", "_get_experiment"),
            ("GET", "/runs", "_list_runs"),
            ("POST", "/runs", "_create_run"),
            ("GET", r"/runs/(?P<id>[^/:]+)", "_get_run"),
            ("POST", "/recurringruns", "_create_recurring_run"),
            ("GET", r"/recurringruns/(?P<id>[^/:]+)", "_get_recurring_run"),
        )
    )

    def handle(self, request: Request, raw_body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) for one request; records it first."""
        with self._lock:
            self._requests.append(request)
            try:
                self._authenticate(request)
                if raw_body and request.body is None:
                    raise ApiError(INVALID_ARGUMENT, "Invalid request body: not JSON")
                return 200, self._route(request)
            except ApiError as err:
                return err.http_status, err.body()

    def _authenticate(self, request: Request) -> None:
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        if given != f"Bearer {self.token}":
            raise ApiError(UNAUTHENTICATED, "Unauthenticated: missing or invalid bearer token")

    def _route(self, request: Request) -> dict[str, Any]:
        known_path = False
        for method, pattern, name in self._ROUTES:
            match = pattern.match(request.path)
            if match is None:
                continue
            known_path = True
            if method == request.method:
                return getattr(self, name)(request, **match.groupdict())
        if known_path:
            raise ApiError(UNIMPLEMENTED, "Method Not Allowed")
        raise ApiError(NOT_FOUND, "Not Found")

    # --- healthz and experiments ----------------------------------------------------------

    def _healthz(self, request: Request) -> dict[str, Any]:
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    def _list_experiments(self, request: Request) -> dict[str, Any]:
        namespace = request.param("namespace")
        if self.multi_user and not namespace:
            raise ApiError(
                INVALID_ARGUMENT,
                "Failed to list experiments: Invalid input error: "
                "In multi-user mode, ListExperiment requires a namespace",
            )
        predicates = self._filter(request.param("filter"))
        found = [
            e
            for e in self.experiments.values()
            if (namespace is None or e["namespace"] == namespace) and all(p(e) for p in predicates)
        ]
        if not found:
            return {}
        return {"experiments": found, "total_size": len(found)}

    @staticmethod
    def _filter(text: str | None) -> list[Any]:
        if not text:
            return []
        try:
            predicates = json.loads(text).get("predicates", [])
        except (ValueError, AttributeError):
            raise ApiError(INVALID_ARGUMENT, f"Invalid filter: {text}") from None
        tests = []
        for predicate in predicates:
            operation = predicate.get("operation")
            operation = _FILTER_OPERATIONS.get(operation, operation)
            key = predicate.get("key")
            value = predicate.get("stringValue", predicate.get("string_value"))
            if key != "display_name" or operation not in _FILTER_OPERATIONS.values():
                raise ApiError(
                    INVALID_ARGUMENT, f"Invalid filter: {operation} on {key!r} is not supported"
                )
            if not isinstance(value, str):
                raise ApiError(INVALID_ARGUMENT, "Invalid filter: a string_value is required")
            tests.append(
                {
                    "EQUALS": lambda e, v=value: e["display_name"] == v,
                    "NOT_EQUALS": lambda e, v=value: e["display_name"] != v,
                    "IS_SUBSTRING": lambda e, v=value: v in e["display_name"],
                }[operation]
            )
        return tests

    def _create_experiment(self, request: Request) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        name = body.get("display_name") or ""
        namespace = body.get("namespace") or ""
        if not name.strip():
            raise ApiError(
                INVALID_ARGUMENT,
                "Failed to create an experiment: Invalid input error: "
                "Experiment name cannot be empty",
            )
        if self.multi_user and not namespace:
            raise ApiError(
                INVALID_ARGUMENT,
                "Failed to create an experiment: Invalid input error: "
                "In multi-user mode, experiment namespace cannot be empty",
            )
        if any(
            e["display_name"] == name and e["namespace"] == namespace
            for e in self.experiments.values()
        ):
            raise ApiError(
                ALREADY_EXISTS,
                f"Failed to create an experiment: Already exist error: "
                f"Failed to create a new experiment. The name {name} already exists. "
                "Please specify a new name",
            )
        return self._new_experiment(body)

    def _new_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        experiment = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": body["display_name"],
            "description": body.get("description") or "",
            "created_at": now(),
            "namespace": body.get("namespace") or "",
            "storage_state": "AVAILABLE",
            "last_run_created_at": EPOCH,
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _get_experiment(self, request: Request, id: str) -> dict[str, Any]:
        return self._experiment(id, "get an experiment")

    def _experiment(self, experiment_id: str, doing: str) -> dict[str, Any]:
        if experiment_id not in self.experiments:
            raise ApiError(
                NOT_FOUND,
                f"Failed to {doing}: ResourceNotFoundError: Experiment {experiment_id} not found",
            )
        return self.experiments[experiment_id]

    # --- runs -----------------------------------------------------------------------------

    def _check_run_source(self, body: dict[str, Any], doing: str) -> dict[str, Any]:
        """The experiment of a run or recurring run after checking its pipeline and parameters."""

        def invalid(message: str) -> ApiError:
            return ApiError(INVALID_ARGUMENT, f"Failed to {doing}: Invalid input error: {message}")

        if not (body.get("display_name") or "").strip():
            raise invalid("display_name cannot be empty")
        experiment_id = body.get("experiment_id") or ""
        if not experiment_id:
            raise invalid("experiment_id is required (the stub has no default experiment)")
        experiment = self._experiment(experiment_id, doing)
        spec, reference = body.get("pipeline_spec"), body.get("pipeline_version_reference")
        if not spec and not reference:
            raise invalid("Pipeline spec or pipeline version reference is required")
        if spec and reference:
            raise invalid("Pipeline spec and pipeline version reference cannot both be set")
        if reference:
            version = reference.get("pipeline_version_id") or reference.get("pipeline_id")
            raise ApiError(
                NOT_FOUND,
                f"Failed to {doing}: ResourceNotFoundError: PipelineVersion {version} not found",
            )
        pipeline_spec, platform_spec = split_pipeline_spec(spec)
        if not isinstance(pipeline_spec, dict) or not pipeline_spec.get("schemaVersion"):
            raise invalid("pipeline spec is not a PipelineSpec: no schemaVersion")
        if not (pipeline_spec.get("pipelineInfo") or {}).get("name"):
            raise invalid("pipeline spec is not a PipelineSpec: no pipelineInfo.name")
        if not (pipeline_spec.get("root") or {}).get("dag"):
            raise invalid("pipeline spec is not a PipelineSpec: no root.dag")
        if platform_spec and "platforms" not in platform_spec:
            raise invalid("platform spec has no platforms")
        runtime_config = body.get("runtime_config") or {}
        parameters = runtime_config.get("parameters") or {}
        declared = ((pipeline_spec["root"].get("inputDefinitions") or {}).get("parameters")) or {}
        for name, value in parameters.items():
            if name not in declared:
                raise invalid(f"Unrecognized input parameter: {name}")
            kind = declared[name].get("parameterType", "")
            allowed = _PARAMETER_TYPES.get(kind)
            wrong_bool = isinstance(value, bool) and kind != "BOOLEAN"
            if allowed is None or wrong_bool or not isinstance(value, allowed):
                raise invalid(
                    f"input parameter {name} requires type {kind} but got {value!r} "
                    f"({type(value).__name__})"
                )
        for name, definition in declared.items():
            required = not definition.get("isOptional") and "defaultValue" not in definition
            if required and name not in parameters:
                raise invalid(f"Missing required input parameter: {name}")
        return experiment

    def _create_run(self, request: Request) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        experiment = self._check_run_source(body, "create a run")
        created = now()
        run = {
            "experiment_id": experiment["experiment_id"],
            "run_id": str(uuid.uuid4()),
            "display_name": body["display_name"],
            "description": body.get("description") or "",
            "storage_state": "AVAILABLE",
            "pipeline_spec": body["pipeline_spec"],
            "runtime_config": body.get("runtime_config") or {},
            "service_account": body.get("service_account") or "pipeline-runner",
            "created_at": created,
            "scheduled_at": created,
            "finished_at": EPOCH,
            "state": "PENDING",
            "state_history": [{"update_time": created, "state": "PENDING"}],
        }
        self.runs[run["run_id"]] = run
        experiment["last_run_created_at"] = created
        return run

    def _get_run(self, request: Request, id: str) -> dict[str, Any]:
        if id not in self.runs:
            raise ApiError(
                NOT_FOUND, f"Failed to get a run: ResourceNotFoundError: Run {id} not found"
            )
        return self.runs[id]

    def _list_runs(self, request: Request) -> dict[str, Any]:
        experiment_id = request.param("experiment_id")
        if experiment_id is not None:
            self._experiment(experiment_id, "list runs")
        found = [
            r
            for r in self.runs.values()
            if experiment_id is None or r["experiment_id"] == experiment_id
        ]
        return {"runs": found, "total_size": len(found)} if found else {}

    # --- recurring runs -------------------------------------------------------------------

    def _create_recurring_run(self, request: Request) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        doing = "create a recurring run"
        experiment = self._check_run_source(body, doing)

        def invalid(message: str) -> ApiError:
            return ApiError(
                INVALID_ARGUMENT,
                f"Validate create job request failed: Invalid input error: {message}",
            )

        try:
            concurrency = int(body.get("max_concurrency") or 0)
        except (TypeError, ValueError):
            given = body["max_concurrency"]
            raise invalid(f"max_concurrency is not an integer: {given!r}") from None
        if not 1 <= concurrency <= 10:
            raise invalid(
                "The max concurrency of the recurring run is out of range. Support 1-10. "
                f"Received {concurrency}."
            )
        trigger = body.get("trigger") or {}
        cron, periodic = trigger.get("cron_schedule"), trigger.get("periodic_schedule")
        if bool(cron) == bool(periodic):
            raise invalid("a trigger needs exactly one of cron_schedule and periodic_schedule")
        if cron:
            problem = cron_error(cron.get("cron") or "")
            if problem:
                raise invalid(
                    "Schedule cron is not a supported format"
                    f"(https://godoc.org/github.com/robfig/cron). Error: {problem}"
                )
        if periodic and int(periodic.get("interval_second") or 0) < 1:
            raise invalid(
                f"Found invalid period schedule interval {periodic.get('interval_second')}. "
                "Set at interval to least 1 second."
            )
        mode = body.get("mode") or "MODE_UNSPECIFIED"
        if mode not in ("ENABLE", "DISABLE", "MODE_UNSPECIFIED"):
            raise invalid(f"unknown mode {mode!r}")
        created = now()
        recurring = {
            "recurring_run_id": str(uuid.uuid4()),
            "display_name": body["display_name"],
            "description": body.get("description") or "",
            "pipeline_spec": body["pipeline_spec"],
            "runtime_config": body.get("runtime_config") or {},
            "service_account": body.get("service_account") or "pipeline-runner",
            "max_concurrency": str(concurrency),  # int64: a string in proto3 JSON
            "trigger": trigger,
            "mode": mode,
            "created_at": created,
            "updated_at": created,
            "status": "DISABLED" if mode == "DISABLE" else "ENABLED",
            "no_catchup": bool(body.get("no_catchup")),
            "namespace": experiment["namespace"],
            "experiment_id": experiment["experiment_id"],
        }
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return recurring

    def _get_recurring_run(self, request: Request, id: str) -> dict[str, Any]:
        if id not in self.recurring_runs:
            raise ApiError(
                NOT_FOUND,
                f"Failed to get a recurring run: ResourceNotFoundError: Job {id} not found",
            )
        return self.recurring_runs[id]


class _Handler(BaseHTTPRequestHandler):
    """Parses a request, hands it to the stub (``api``), writes the JSON answer."""

    api: FakeKfpApi
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        url = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            body=body,
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        status, answer = self.api.handle(request, raw)
        send_json(self, status, answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass
