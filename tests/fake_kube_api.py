"""A small fake of the Kubernetes API server: ConfigMaps only, over real HTTP on loopback.

No cluster can run in the test environment, so the deploy step's ``kubernetes`` mode is tested
against this: the official ``kubernetes`` client talks real HTTP to it, exactly as it talks to
an API server (point it here with ``kubernetes.client.Configuration(host=fake.host)``).

What it implements, as the API server does:

* ``GET /api/v1/namespaces/{ns}/configmaps/{name}``: the ConfigMap object;
* ``PATCH`` of the same path with ``application/merge-patch+json`` or
  ``application/strategic-merge-patch+json`` (for a ConfigMap's ``data`` map both are a JSON
  merge patch, RFC 7386: ``null`` deletes a key); ``metadata.resourceVersion`` in the patch is a
  precondition (409 Conflict when the object changed); each change bumps the resourceVersion;
* errors as ``Status`` objects: 404 NotFound for an unknown namespace, ConfigMap or path, 409
  Conflict, 415 UnsupportedMediaType for other patch types (JSON patch is not implemented),
  400 BadRequest for a body that is not JSON, 422 Invalid for non-string ``data`` values,
  405 MethodNotAllowed for other verbs.

``on_change(namespace, name, configmap)`` is called after every change (a test can mirror a
key into a file, as the kubelet does for a mounted ConfigMap), and every request is recorded in
``requests`` (method, path, content type, parsed body).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fake_http import send_json

from components.launchers import merge_patch  # RFC 7386: the launchers' own

_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/configmaps/(?P<name>[^/?]+)$")
_MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


@dataclass
class Request:
    method: str
    path: str
    content_type: str
    body: Any


def status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A ``Status`` object as the API server returns for errors."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class FakeKubeAPI:
    """An in-memory API server for ConfigMaps on ``127.0.0.1`` (a random free port)."""

    def __init__(self) -> None:
        self._configmaps: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1000)
        self.requests: list[Request] = []
        self.on_change: Callable[[str, str, dict], None] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- the test's side --------------------------------------------------------------------

    @property
    def host(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_configmap(self, namespace: str, name: str, data: dict[str, str]) -> dict:
        with self._lock:
            obj = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(next(self._versions)),
                    "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
                "data": dict(data),
            }
            self._configmaps[(namespace, name)] = obj
            return copy.deepcopy(obj)

    def configmap(self, namespace: str, name: str) -> dict:
        with self._lock:
            return copy.deepcopy(self._configmaps[(namespace, name)])

    def start(self) -> FakeKubeAPI:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, content_type: str, raw: bytes) -> tuple[int, dict]:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as err:
                self.requests.append(Request(method, path, content_type, raw))
                return 400, status(400, "BadRequest", f"the body is not JSON: {err}")
        self.requests.append(Request(method, path, content_type, body))
        match = _PATH.match(path.split("?", 1)[0])
        if match is None:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        key = (match["ns"], match["name"])
        not_found = status(
            404,
            "NotFound",
            f'configmaps "{key[1]}" not found',
            {"name": key[1], "kind": "configmaps"},
        )
        if method == "GET":
            with self._lock:
                obj = self._configmaps.get(key)
                return (200, copy.deepcopy(obj)) if obj else (404, not_found)
        if method != "PATCH":
            return 405, status(405, "MethodNotAllowed", f"{method} is not supported by the fake")
        media = content_type.split(";")[0].strip().lower()
        if media not in _MERGE_TYPES:
            return 415, status(
                415,
                "UnsupportedMediaType",
                f"the fake does not implement {media!r}; accepted media types include: "
                + ", ".join(_MERGE_TYPES),
            )
        if not isinstance(body, dict):
            return 400, status(400, "BadRequest", "a merge patch must be a JSON object")
        with self._lock:
            obj = self._configmaps.get(key)
            if obj is None:
                return 404, not_found
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                return 409, status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on configmaps "{key[1]}": the object has '
                    "been modified; please apply your changes to the latest version and try "
                    "again",
                    {"name": key[1], "kind": "configmaps"},
                )
            patched = merge_patch(obj, body)
            data = patched.get("data") or {}
            if not all(isinstance(v, str) for v in data.values()):
                return 422, status(422, "Invalid", "ConfigMap data values must be strings")
            patched["metadata"].update(
                {
                    "name": key[1],
                    "namespace": key[0],
                    "uid": obj["metadata"]["uid"],
                    "creationTimestamp": obj["metadata"]["creationTimestamp"],
                    "resourceVersion": str(next(self._versions)),
                }
            )
            self._configmaps[key] = patched
            result = copy.deepcopy(patched)
        if self.on_change is not None:
            self.on_change(key[0], key[1], copy.deepcopy(result))
        return 200, result


def _handler(api: FakeKubeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            code, body = api.handle(
                self.command, self.path, self.headers.get("Content-Type", ""), raw
            )
            send_json(self, code, body)

        do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler
