"""The serving core behind both transports, and TF Serving's gRPC services over it.

`ServingCore` turns requests into model runs (through the dynamic batcher when batching is on,
else directly) and records metrics. Its methods block: gRPC calls them from the threads of
grpc's thread-pool server (on this machine it carries 2.5× the requests of `grpc.aio` for the
same CPU: see serving/README.md), and REST from aiohttp's event loop through `ServingCore.call`.
Both transports share one core, so they answer the same request with the same result and the
same status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving import inference
from serving.errors import ServingError, invalid_argument
from serving.manager import ModelManager
from serving.metrics import ServerMetrics
from serving.servable import DEFAULT_SIGNATURE, Servable, Signature

log = logging.getLogger(__name__)
T = TypeVar("T")

SIGNATURE_DEF_FIELD = "signature_def"


class ServingCore:
    """Runs requests against the manager's servables.

    Args:
        manager: The model lifecycle manager.
        batching: Batching options (None: no server-side batching).
        metrics: Where request, batch and load metrics go.
        executor: Threads for unbatched model runs and config reloads.
        reload_allowed: False when several server processes share the port, where a reload
            reaching one process would leave the others on the old config.
        prediction_logger: Samples successful requests into the models' PredictionLog files
            (`serving.prediction_log`); None: no logging.
    """

    def __init__(
        self,
        manager: ModelManager,
        batching: Any | None,
        metrics: ServerMetrics,
        executor: ThreadPoolExecutor,
        reload_allowed: bool = True,
        prediction_logger: Any | None = None,
    ):
        self.manager = manager
        self.batching = batching
        self.metrics = metrics
        self.executor = executor
        self.reload_allowed = reload_allowed
        self.prediction_logger = prediction_logger
        self.active_requests = 0  # requests between decode and encode, on this process
        self._lock = threading.Lock()

    # --- running the model ---------------------------------------------------------------

    def _batcher(self, servable: Servable, signature: Signature):
        def on_batch(size: int, padded: int, delay: float) -> None:
            self.metrics.observe_batch(servable.name, servable.version, size, padded, delay)

        return servable.batcher(signature.name, self.batching, on_batch)

    def run(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Runs the model for one request: through its batcher, or right here."""
        if self.batching is not None:
            return self._batcher(servable, signature).submit_blocking(inputs)
        return signature.run(inputs)

    async def run_async(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """`run` for the event loop: awaits the batch instead of blocking a thread on it."""
        if self.batching is not None:
            return await self._batcher(servable, signature).submit(inputs)
        if self.active_requests <= 1:  # alone: no thread hand-offs
            return signature.run(inputs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, signature.run, inputs)

    async def call(self, method: Callable[..., T], *args) -> T:
        """Calls a blocking core method from the event loop (REST).

        When no other request is in flight it runs on the loop (two thread hand-offs would only
        add latency); under concurrency it goes to the thread pool, so that the loop keeps
        accepting requests while this one waits for its batch or for TensorFlow.
        """
        if self.active_requests == 0 and self.batching is None:
            return method(*args)  # (with batching, the wait for a batch must not block the loop)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, method, *args)

    @contextlib.contextmanager
    def observing(self, api: str, protocol: str, model: str) -> Iterator[dict]:
        """Counts a request and records its status code and latency when it ends.

        `handle(seen, spec)` notes the version it resolved in the yielded `seen`, so that a
        request failing after resolution (a bad input, say) is counted under its version.
        """
        started = time.perf_counter()
        seen = {"version": ""}
        code = "OK"
        with self._lock:
            self.active_requests += 1
        try:
            yield seen
        except ServingError as exc:
            code = exc.code.name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            with self._lock:
                self.active_requests -= 1
            self.metrics.observe_request(
                model, seen["version"], api, protocol, code, time.perf_counter() - started
            )

    @contextlib.contextmanager
    def handle(self, seen: dict, model_spec) -> Iterator[Servable]:
        """The manager's servable for `model_spec`, its version noted in `seen` for metrics."""
        with self.manager.handle(model_spec) as servable:
            seen["version"] = str(servable.version)
            yield servable

    # --- APIs ----------------------------------------------------------------------------

    def predict(self, request, protocol: str = "grpc"):
        with (
            self.observing("predict", protocol, request.model_spec.name) as seen,
            self.handle(seen, request.model_spec) as servable,
        ):
            signature, inputs, keys = inference.prepare_predict(servable, request)
            outputs = self.run(servable, signature, inputs)
            response = inference.predict_response(servable, signature, outputs, keys)
            if self.prediction_logger is not None:
                self.prediction_logger.log("predict", servable, request, response)
            return response

    async def predict_json(self, model_spec, body: bytes) -> bytes:
        """REST predict on the event loop: TF Serving's JSON in, its JSON answer out."""
        from serving import codec

        with self.observing("predict", "rest", model_spec.name) as seen:
            parsed = codec.parse_json(body)
            signature_name = codec.signature_name_of(parsed) or DEFAULT_SIGNATURE
            with self.handle(seen, model_spec) as servable:
                signature = servable.signatures.get(signature_name)
                if signature is None:  # TF Serving's REST handler words it so (GetInfoMap)
                    raise invalid_argument(
                        f'Serving signature name: "{signature_name}" not found in signature def'
                    )
                inputs, fmt = codec.decode_predict_json(parsed, signature.inputs)
                if not signature.inputs_match(inputs):
                    codec.check_inputs(inputs, signature.inputs, signature.name)
                outputs = await self.run_async(servable, signature, inputs)
                body = codec.encode_predict_response(outputs, fmt, signature.outputs)
                if self.prediction_logger is not None:
                    self.prediction_logger.log_rest_predict(
                        servable, model_spec, signature, inputs, outputs
                    )
                return body

    def classify(self, request, protocol: str = "grpc"):
        return self._examples("classify", inference.CLASSIFY_METHOD, request, protocol)

    def regress(self, request, protocol: str = "grpc"):
        return self._examples("regress", inference.REGRESS_METHOD, request, protocol)

    def _examples(self, api: str, method: str, request, protocol: str):
        with (
            self.observing(api, protocol, request.model_spec.name) as seen,
            self.handle(seen, request.model_spec) as servable,
        ):
            signature, inputs = inference.prepare_examples(
                servable, request.model_spec.signature_name, method, request.input
            )
            outputs = self.run(servable, signature, inputs)
            response = inference.examples_response(servable, signature, method, outputs, inputs)
            if self.prediction_logger is not None:
                self.prediction_logger.log(api, servable, request, response)
            return response

    def multi_inference(self, request, protocol: str = "grpc"):
        from tensorflow_serving.apis import inference_pb2

        model = request.tasks[0].model_spec.name if request.tasks else ""
        with self.observing("multi_inference", protocol, model) as seen:
            inference.check_multi_inference(request)
            with self.handle(seen, request.tasks[0].model_spec) as servable:
                response = inference_pb2.MultiInferenceResponse()
                for task in request.tasks:
                    signature, inputs = inference.prepare_examples(
                        servable, task.model_spec.signature_name, task.method_name, request.input
                    )
                    outputs = self.run(servable, signature, inputs)
                    response.results.append(
                        inference.multi_inference_result(servable, signature, task, outputs, inputs)
                    )
                if self.prediction_logger is not None:
                    self.prediction_logger.log("multi_inference", servable, request, response)
                return response

    def metadata(
        self, request, protocol: str = "grpc"
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """GetModelMetadata: the version's SignatureDefMap, as TF Serving returns it."""
        with self.observing("get_model_metadata", protocol, request.model_spec.name) as seen:
            if not request.metadata_field:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {field} is not supported")
            with self.handle(seen, request.model_spec) as servable:
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for key, definition in servable.signature_defs.items():
                    signature_map.signature_def[key].CopyFrom(definition)
                response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
                return response

    def status(
        self, request, protocol: str = "grpc"
    ) -> get_model_status_pb2.GetModelStatusResponse:
        with self.observing("get_model_status", protocol, request.model_spec.name):
            response = get_model_status_pb2.GetModelStatusResponse()
            response.model_version_status.extend(self.manager.model_status(request.model_spec))
            return response

    def reload_config(
        self, request: model_management_pb2.ReloadConfigRequest
    ) -> model_management_pb2.ReloadConfigResponse:
        """HandleReloadConfigRequest: the status is in the response body, as in TF Serving."""
        response = model_management_pb2.ReloadConfigResponse()
        if not self.reload_allowed:
            response.status.error_code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
            response.status.error_message = (
                "HandleReloadConfigRequest would reach one of several server processes; with "
                "--num_server_processes > 1 change the --model_config_file instead "
                "(polled every --model_config_file_poll_wait_seconds)"
            )
            return response
        try:
            self.manager.reload_config(request.config)
        except ServingError as exc:
            response.status.error_code = exc.code.value[0]
            response.status.error_message = exc.message
        log.info("config reload: %s", response.status.error_message or "OK")
        return response


# --- gRPC ------------------------------------------------------------------------------------


def _answer(context: grpc.ServicerContext, work: Callable[[], T]) -> T:
    try:
        return work()
    except ServingError as exc:
        context.abort(exc.code, exc.message)
    except Exception as exc:
        log.exception("request failed")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: abort raises")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over the serving core."""

    def __init__(self, core: ServingCore):
        self.core = core

    def Predict(self, request, context):
        return _answer(context, lambda: self.core.predict(request))

    def Classify(self, request, context):
        return _answer(context, lambda: self.core.classify(request))

    def Regress(self, request, context):
        return _answer(context, lambda: self.core.regress(request))

    def MultiInference(self, request, context):
        return _answer(context, lambda: self.core.multi_inference(request))

    def GetModelMetadata(self, request, context):
        return _answer(context, lambda: self.core.metadata(request))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: status and config reload."""

    def __init__(self, core: ServingCore):
        self.core = core

    def GetModelStatus(self, request, context):
        return _answer(context, lambda: self.core.status(request))

    def HandleReloadConfigRequest(self, request, context):
        return _answer(context, lambda: self.core.reload_config(request))


def _method_handler(method, request_cls, response_cls) -> grpc.RpcMethodHandler:
    """A unary handler that parses the request itself.

    Bytes that are no valid request get INTERNAL, as from TF Serving's C++ gRPC
    (grpc's own deserializer would answer UNKNOWN).
    """
    from google.protobuf.message import DecodeError

    def handle(raw: bytes, context: grpc.ServicerContext):
        try:
            request = request_cls.FromString(raw)
        except DecodeError as exc:
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"Failed to parse {request_cls.DESCRIPTOR.full_name}: {exc}",
            )
        return method(request, context)

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=response_cls.SerializeToString
    )


def add_services(server: grpc.Server, core: ServingCore) -> None:
    """Registers PredictionService and ModelService for `core` on `server`."""
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        model_management_pb2,
        predict_pb2,
        regression_pb2,
    )

    prediction, model = PredictionService(core), ModelService(core)
    services = {
        "tensorflow.serving.PredictionService": {
            "Predict": (
                prediction.Predict,
                predict_pb2.PredictRequest,
                predict_pb2.PredictResponse,
            ),
            "Classify": (
                prediction.Classify,
                classification_pb2.ClassificationRequest,
                classification_pb2.ClassificationResponse,
            ),
            "Regress": (
                prediction.Regress,
                regression_pb2.RegressionRequest,
                regression_pb2.RegressionResponse,
            ),
            "MultiInference": (
                prediction.MultiInference,
                inference_pb2.MultiInferenceRequest,
                inference_pb2.MultiInferenceResponse,
            ),
            "GetModelMetadata": (
                prediction.GetModelMetadata,
                get_model_metadata_pb2.GetModelMetadataRequest,
                get_model_metadata_pb2.GetModelMetadataResponse,
            ),
        },
        "tensorflow.serving.ModelService": {
            "GetModelStatus": (
                model.GetModelStatus,
                get_model_status_pb2.GetModelStatusRequest,
                get_model_status_pb2.GetModelStatusResponse,
            ),
            "HandleReloadConfigRequest": (
                model.HandleReloadConfigRequest,
                model_management_pb2.ReloadConfigRequest,
                model_management_pb2.ReloadConfigResponse,
            ),
        },
    }
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                service,
                {name: _method_handler(*spec) for name, spec in methods.items()},
            )
            for service, methods in services.items()
        ]
    )
