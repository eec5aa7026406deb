"""TensorFlow Serving's REST API (aiohttp) over the serving core, plus the metrics endpoint.

Routes and errors follow TF Serving's HTTP handler: `/v1/models/{m}[/versions/{v}|/labels/{l}]`
for status, `.../metadata`, and `...:predict|:classify|:regress`; anything else is "Malformed
request" (400); every error is `{"error": "..."}` with the status code mapped from the canonical
code (serving.errors.HTTP_STATUS).
"""

from __future__ import annotations

import asyncio
import logging
import re
from urllib.parse import unquote

from aiohttp import web
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    regression_pb2,
)

from serving import codec
from serving.errors import ServingError, invalid_argument
from serving.service import ServingCore

log = logging.getLogger(__name__)

# http_rest_api_util.cc's kPredictionApiRegex / kModelStatusApiRegex, matched (like TF Serving)
# against the raw, still percent-encoded path; `\d` is ASCII-only in RE2, hence [0-9].
_VERSION = r"(?:/versions/([0-9]+)|/labels/([^/:]+))?"
PREDICTION_PATH = re.compile(rf"(?ai)/v1/models/([^/:]+){_VERSION}:(classify|regress|predict)")
STATUS_PATH = re.compile(rf"(?ai)/v1/models(?:/([^/:]+))?{_VERSION}(?:/(metadata))?")
JSON = "application/json"
_INT64_MAX = 2**63 - 1


def _model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    """ParseModelInfo + FillModelSpecWithNameVersionAndLabel: name and label are URL-decoded."""
    spec = model_pb2.ModelSpec(name=unquote(name))
    if version:
        if int(version) > _INT64_MAX:  # absl::SimpleAtoi into an int64 fails
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        spec.version.value = int(version)
    elif label:
        spec.version_label = unquote(label)
    return spec


def _error(exc: ServingError) -> web.Response:
    return web.Response(
        body=codec.error_json(exc.message), status=exc.http_status, content_type=JSON
    )


class RestApi:
    """The aiohttp application of one server process.

    Args:
        core: The serving core shared with gRPC.
        timeout_ms: `--rest_api_timeout_in_ms` (a slower call answers 504 DEADLINE_EXCEEDED).
        metrics_path: Where Prometheus scrapes, or None when monitoring is off.
        max_body_bytes: The largest request body accepted.
    """

    def __init__(
        self,
        core: ServingCore,
        timeout_ms: int = 30000,
        metrics_path: str | None = None,
        max_body_bytes: int = 2**31 - 1,
    ):
        self.core = core
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self.metrics_path = metrics_path
        self.app = web.Application(client_max_size=max_body_bytes)
        if metrics_path:
            self.app.router.add_get(metrics_path, self.metrics)
        # Every other path (also with a %0A in it) is the API's, which answers "Malformed request".
        self.app.router.add_route("*", r"/{tail:[\s\S]*}", self.dispatch)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.core.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def dispatch(self, request: web.Request) -> web.Response:
        path = request.rel_url.raw_path
        try:
            handlers = {"predict": self.predict, "classify": self.classify, "regress": self.regress}
            if request.method == "POST" and (match := PREDICTION_PATH.fullmatch(path)):
                name, version, label, method = match.groups()
                spec = _model_spec(name, version, label)
                # The method is matched case-insensitively but dispatched case-sensitively.
                if method in handlers:
                    body = await request.read()
                    return await self._with_timeout(handlers[method](spec, body))
            elif request.method == "GET" and (match := STATUS_PATH.fullmatch(path)):
                name, version, label, subresource = match.groups()
                spec = _model_spec(name or "", version, label)
                if not name:
                    raise invalid_argument("Missing model name in request.")
                return await (
                    self.metadata(spec) if subresource == "metadata" else self.status(spec)
                )
            raise invalid_argument(f"Malformed request: {request.method} {path}")
        except ServingError as exc:
            return _error(exc)
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("REST request failed")
            return _error(ServingError(__import__("grpc").StatusCode.INTERNAL, str(exc)))

    async def _with_timeout(self, work) -> web.Response:
        if self.timeout is None:
            return await work
        try:
            return await asyncio.wait_for(work, self.timeout)
        except TimeoutError as exc:
            import grpc

            raise ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"Request timed out after {int(self.timeout * 1000)} ms (--rest_api_timeout_in_ms)",
            ) from exc

    async def predict(self, spec: model_pb2.ModelSpec, body: bytes) -> web.Response:
        body = await self.core.predict_json(spec, body)
        return web.Response(body=body, content_type=JSON)

    async def classify(self, spec: model_pb2.ModelSpec, body: bytes) -> web.Response:
        request = classification_pb2.ClassificationRequest(model_spec=spec)
        signature_name, request_input = codec.decode_examples_request(body)
        request.model_spec.signature_name = signature_name or ""
        request.input.CopyFrom(request_input)
        response = await self.core.call(self.core.classify, request, "rest")
        return web.Response(body=codec.encode_classify_response(response.result), content_type=JSON)

    async def regress(self, spec: model_pb2.ModelSpec, body: bytes) -> web.Response:
        request = regression_pb2.RegressionRequest(model_spec=spec)
        signature_name, request_input = codec.decode_examples_request(body)
        request.model_spec.signature_name = signature_name or ""
        request.input.CopyFrom(request_input)
        response = await self.core.call(self.core.regress, request, "rest")
        return web.Response(body=codec.encode_regress_response(response.result), content_type=JSON)

    async def status(self, spec: model_pb2.ModelSpec) -> web.Response:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        response = self.core.status(request, "rest")  # no model run: never blocks
        return web.Response(body=codec.encode_status_json(response), content_type=JSON)

    async def metadata(self, spec: model_pb2.ModelSpec) -> web.Response:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=["signature_def"]
        )
        response = await self.core.call(self.core.metadata, request, "rest")
        return web.Response(body=codec.encode_metadata_json(response), content_type=JSON)
