"""The serving core behind both transports, and TF Serving's gRPC services over it.

`ServingCore` turns requests into model runs (through the dynamic batcher when batching is on,
else on a worker thread so the event loop keeps accepting) and records metrics; the gRPC
servicers and the REST handlers are thin adapters over it, so both transports answer the same
request with the same result and the same status code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
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
    """

    def __init__(
        self,
        manager: ModelManager,
        batching: Any | None,
        metrics: ServerMetrics,
        executor: ThreadPoolExecutor,
        reload_allowed: bool = True,
    ):
        self.manager = manager
        self.batching = batching
        self.metrics = metrics
        self.executor = executor
        self.reload_allowed = reload_allowed
        self.active_requests = 0  # requests between decode and encode, on this process

    # --- running the model ---------------------------------------------------------------

    async def run(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        if self.batching is not None:

            def on_batch(size: int, padded: int, delay: float) -> None:
                self.metrics.observe_batch(servable.name, servable.version, size, padded, delay)

            batcher = servable.batcher(signature.name, self.batching, on_batch)
            return await batcher.submit(inputs)
        if self.active_requests <= 1:
            # Nothing else is in flight: run on the loop and skip two thread hand-offs (the
            # loop would only wait). Under concurrency, runs go to threads so that decoding
            # and encoding overlap TensorFlow, which releases the GIL.
            return signature.run(inputs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, signature.run, inputs)

    async def observed(
        self, api: str, protocol: str, model: str, call: Callable[[dict], Awaitable[T]]
    ) -> T:
        """Runs `call(seen)` and records its count, status code and latency.

        `call` puts the version it resolved in `seen["version"]`, so that a request failing
        after resolution (a bad input, say) is still counted under its version.
        """
        started = time.perf_counter()
        seen = {"version": ""}
        code = "OK"
        self.active_requests += 1
        try:
            return await call(seen)
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
            self.active_requests -= 1
            self.metrics.observe_request(
                model, seen["version"], api, protocol, code, time.perf_counter() - started
            )

    # --- APIs ----------------------------------------------------------------------------

    async def predict(self, request, protocol: str = "grpc"):
        async def call(seen):
            with self.manager.handle(request.model_spec) as servable:
                seen["version"] = str(servable.version)
                signature, inputs, keys = inference.prepare_predict(servable, request)
                outputs = await self.run(servable, signature, inputs)
                response = inference.predict_response(servable, signature, outputs, keys)
                return response

        return await self.observed("predict", protocol, request.model_spec.name, call)

    async def predict_json(self, model_spec, body: bytes) -> bytes:
        """REST predict: TF Serving's JSON body in, its JSON answer out (all of it observed)."""
        from serving import codec

        async def call(seen):
            parsed = codec.parse_json(body)
            signature_name = codec.signature_name_of(parsed) or DEFAULT_SIGNATURE
            with self.manager.handle(model_spec) as servable:
                seen["version"] = str(servable.version)
                signature = servable.signatures.get(signature_name)
                if signature is None:  # TF Serving's REST handler words it so (GetInfoMap)
                    raise invalid_argument(
                        f'Serving signature name: "{signature_name}" not found in signature def'
                    )
                inputs, fmt = codec.decode_predict_json(parsed, signature.inputs)
                if not signature.inputs_match(inputs):
                    codec.check_inputs(inputs, signature.inputs, signature.name)
                outputs = await self.run(servable, signature, inputs)
                answer = codec.encode_predict_response(outputs, fmt, signature.outputs)
                return answer

        return await self.observed("predict", "rest", model_spec.name, call)

    async def classify(self, request, protocol: str = "grpc"):
        async def call(seen):
            with self.manager.handle(request.model_spec) as servable:
                seen["version"] = str(servable.version)
                signature, inputs = inference.prepare_examples(
                    servable,
                    request.model_spec.signature_name,
                    inference.CLASSIFY_METHOD,
                    request.input,
                )
                outputs = await self.run(servable, signature, inputs)
                response = inference.classify_response(servable, signature, outputs, inputs)
                return response

        return await self.observed("classify", protocol, request.model_spec.name, call)

    async def regress(self, request, protocol: str = "grpc"):
        async def call(seen):
            with self.manager.handle(request.model_spec) as servable:
                seen["version"] = str(servable.version)
                signature, inputs = inference.prepare_examples(
                    servable,
                    request.model_spec.signature_name,
                    inference.REGRESS_METHOD,
                    request.input,
                )
                outputs = await self.run(servable, signature, inputs)
                response = inference.regress_response(servable, signature, outputs, inputs)
                return response

        return await self.observed("regress", protocol, request.model_spec.name, call)

    async def multi_inference(self, request, protocol: str = "grpc"):
        from tensorflow_serving.apis import inference_pb2

        async def call(seen):
            inference.check_multi_inference(request)
            spec = request.tasks[0].model_spec
            with self.manager.handle(spec) as servable:
                seen["version"] = str(servable.version)
                response = inference_pb2.MultiInferenceResponse()
                for task in request.tasks:
                    signature, inputs = inference.prepare_examples(
                        servable, task.model_spec.signature_name, task.method_name, request.input
                    )
                    outputs = await self.run(servable, signature, inputs)
                    response.results.append(
                        inference.multi_inference_result(servable, signature, task, outputs, inputs)
                    )
                return response

        model = request.tasks[0].model_spec.name if request.tasks else ""
        return await self.observed("multi_inference", protocol, model, call)

    async def metadata(
        self, request, protocol: str = "grpc"
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """GetModelMetadata: the version's SignatureDefMap, as TF Serving returns it."""

        async def call(seen):
            if not request.metadata_field:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {field} is not supported")
            with self.manager.handle(request.model_spec) as servable:
                seen["version"] = str(servable.version)
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for key, definition in servable.signature_defs.items():
                    signature_map.signature_def[key].CopyFrom(definition)
                response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
                return response

        return await self.observed("get_model_metadata", protocol, request.model_spec.name, call)

    async def status(
        self, request, protocol: str = "grpc"
    ) -> get_model_status_pb2.GetModelStatusResponse:
        async def call(seen):
            response = get_model_status_pb2.GetModelStatusResponse()
            response.model_version_status.extend(self.manager.model_status(request.model_spec))
            return response

        return await self.observed("get_model_status", protocol, request.model_spec.name, call)

    async def reload_config(
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
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.manager.reload_config, request.config)
        except ServingError as exc:
            response.status.error_code = exc.code.value[0]
            response.status.error_message = exc.message
        log.info("config reload: %s", response.status.error_message or "OK")
        return response


# --- gRPC ------------------------------------------------------------------------------------


async def _answer(context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[T]]) -> T:
    try:
        return await work()
    except ServingError as exc:
        await context.abort(exc.code, exc.message)
    except asyncio.CancelledError:
        raise
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        log.exception("request failed")
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over the serving core."""

    def __init__(self, core: ServingCore):
        self.core = core

    async def Predict(self, request, context):
        return await _answer(context, lambda: self.core.predict(request))

    async def Classify(self, request, context):
        return await _answer(context, lambda: self.core.classify(request))

    async def Regress(self, request, context):
        return await _answer(context, lambda: self.core.regress(request))

    async def MultiInference(self, request, context):
        return await _answer(context, lambda: self.core.multi_inference(request))

    async def GetModelMetadata(self, request, context):
        return await _answer(context, lambda: self.core.metadata(request))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: status and config reload."""

    def __init__(self, core: ServingCore):
        self.core = core

    async def GetModelStatus(self, request, context):
        return await _answer(context, lambda: self.core.status(request))

    async def HandleReloadConfigRequest(self, request, context):
        return await _answer(context, lambda: self.core.reload_config(request))


def _method_handler(method, request_cls, response_cls) -> grpc.RpcMethodHandler:
    """A unary handler that parses the request itself.

    Bytes that are no valid request get INTERNAL, as from TF Serving's C++ gRPC
    (grpc.aio's own deserializer would answer UNKNOWN).
    """
    from google.protobuf.message import DecodeError

    async def handle(raw: bytes, context: grpc.aio.ServicerContext):
        try:
            request = request_cls.FromString(raw)
        except DecodeError as exc:
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"Failed to parse {request_cls.DESCRIPTOR.full_name}: {exc}",
            )
        return await method(request, context)

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=response_cls.SerializeToString
    )


def add_services(server: grpc.aio.Server, core: ServingCore) -> None:
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
