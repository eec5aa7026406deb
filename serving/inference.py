"""Request processing shared by gRPC, REST and warm-up: protos in, protos out.

Each API is split into `prepare_*` (decode and validate; cheap, runs on the event loop),
a model run (through the dynamic batcher or a worker thread), and `*_response` (encode). The
`*_sync` variants chain the three in the caller's thread (warm-up, tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import codec
from serving.errors import invalid_argument
from serving.servable import CLASSIFY_METHOD, REGRESS_METHOD, Servable, Signature

# runner(signature, inputs) -> outputs: how the model actually runs (batcher, thread, inline).
Runner = Callable[[Signature, dict[str, np.ndarray]], dict[str, np.ndarray]]


def inline_runner(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return signature.run(inputs)


def fill_model_spec(spec: model_pb2.ModelSpec, servable: Servable, signature_name: str) -> None:
    """Echo the model spec actually used: name, resolved version and signature."""
    spec.name = servable.name
    spec.version.value = servable.version
    spec.signature_name = signature_name


# --- Predict --------------------------------------------------------------------------------


def output_keys(signature: Signature, output_filter) -> list[str]:
    """The outputs to return: all, or `output_filter` checked the way TF Serving checks it."""
    if not output_filter:
        return list(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


def prepare_predict(
    servable: Servable, request: predict_pb2.PredictRequest
) -> tuple[Signature, dict[str, np.ndarray], list[str]]:
    signature = servable.signature(request.model_spec.signature_name)
    inputs = {
        key: codec.tensor_proto_to_ndarray(proto, key) for key, proto in request.inputs.items()
    }
    if not signature.inputs_match(inputs):
        codec.check_inputs(inputs, signature.inputs, signature.name)
    return signature, inputs, output_keys(signature, request.output_filter)


def predict_response(
    servable: Servable, signature: Signature, outputs: Mapping[str, np.ndarray], keys: list[str]
) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    fill_model_spec(response.model_spec, servable, signature.name)
    for key in keys:
        response.outputs[key].CopyFrom(codec.ndarray_to_tensor_proto(outputs[key]))
    return response


def predict_sync(
    servable: Servable, request: predict_pb2.PredictRequest, runner: Runner = inline_runner
) -> predict_pb2.PredictResponse:
    signature, inputs, keys = prepare_predict(servable, request)
    return predict_response(servable, signature, runner(signature, inputs), keys)


# --- Classify / Regress ---------------------------------------------------------------------


def prepare_examples(
    servable: Servable, signature_name: str, method: str, request_input
) -> tuple[Signature, dict[str, np.ndarray]]:
    """Signature check and the serialized tf.Examples as its one string input."""
    signature = servable.signature(signature_name, method)
    if len(signature.inputs) != 1:
        raise invalid_argument(
            f"Expected one input Tensor in the {method.rsplit('/', 1)[-1]} signature, "
            f"found {len(signature.inputs)}"
        )
    examples = codec.examples_from_input(request_input)
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return signature, {next(iter(signature.inputs)): array}


def classification_result(
    signature: Signature, outputs: Mapping[str, np.ndarray], batch: int
) -> classification_pb2.ClassificationResult:
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is None and scores is None:
        raise invalid_argument(
            f"Expected classification signature outputs to contain classes or scores; "
            f"found {sorted(outputs)}"
        )
    for name, tensor in (("classes", classes), ("scores", scores)):
        if tensor is not None and (tensor.ndim != 2 or tensor.shape[0] != batch):
            raise invalid_argument(
                f"Expected Tensor shape: [{batch} num_classes] but got {list(tensor.shape)} "
                f"for output {name}"
            )
    result = classification_pb2.ClassificationResult()
    width = (classes if classes is not None else scores).shape[1]
    for row in range(batch):
        classifications = result.classifications.add()
        for column in range(width):
            cls = classifications.classes.add()
            if classes is not None:
                cls.label = _text(classes[row, column])
            if scores is not None:
                cls.score = float(scores[row, column])
    return result


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def regression_result(
    outputs: Mapping[str, np.ndarray], batch: int
) -> regression_pb2.RegressionResult:
    values = outputs.get("outputs")
    if values is None:
        raise invalid_argument(
            f"Expected regression signature outputs to contain outputs; found {sorted(outputs)}"
        )
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != batch:
        raise invalid_argument(
            f"Expected output Tensor shape to be either [{batch}] or [{batch}, 1] but got "
            f"{list(values.shape)}"
        )
    result = regression_pb2.RegressionResult()
    for value in values:
        result.regressions.add().value = float(value)
    return result


def examples_response(servable, signature, method: str, outputs, inputs):
    """The Classify or Regress response (by `method`) for a run on serialized examples."""
    batch = len(next(iter(inputs.values())))
    if method == CLASSIFY_METHOD:
        response = classification_pb2.ClassificationResponse()
        response.result.CopyFrom(classification_result(signature, outputs, batch))
    else:
        response = regression_pb2.RegressionResponse()
        response.result.CopyFrom(regression_result(outputs, batch))
    fill_model_spec(response.model_spec, servable, signature.name)
    return response


def examples_sync(servable, request, method: str, runner: Runner = inline_runner):
    """Classify or Regress (by `method`) in the caller's thread."""
    signature, inputs = prepare_examples(
        servable, request.model_spec.signature_name, method, request.input
    )
    return examples_response(servable, signature, method, runner(signature, inputs), inputs)


# --- MultiInference -------------------------------------------------------------------------


def check_multi_inference(request: inference_pb2.MultiInferenceRequest) -> str:
    """TF Serving's rules for a MultiInferenceRequest; returns the one model name it targets."""
    if not request.tasks:
        raise invalid_argument("Tasks is empty")
    names = {task.model_spec.name for task in request.tasks}
    if len(names) != 1:
        raise invalid_argument(
            "All ModelSpecs in a MultiInferenceRequest must access the same model name."
        )
    seen: set[str] = set()
    for task in request.tasks:
        signature_name = task.model_spec.signature_name or "serving_default"
        if signature_name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {signature_name}")
        seen.add(signature_name)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
    return names.pop()


def multi_inference_sync(servable, request, runner: Runner = inline_runner):
    check_multi_inference(request)
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        signature, inputs = prepare_examples(
            servable, task.model_spec.signature_name, task.method_name, request.input
        )
        outputs = runner(signature, inputs)
        response.results.append(multi_inference_result(servable, signature, task, outputs, inputs))
    return response


def multi_inference_result(servable, signature, task, outputs, inputs):
    result = inference_pb2.InferenceResult()
    response = examples_response(servable, signature, task.method_name, outputs, inputs)
    result.model_spec.CopyFrom(response.model_spec)
    if task.method_name == CLASSIFY_METHOD:
        result.classification_result.CopyFrom(response.result)
    else:
        result.regression_result.CopyFrom(response.result)
    return result
