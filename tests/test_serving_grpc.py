"""Over-the-wire gRPC tests of perucast-model-server with TF Serving's official stubs.

One real server process for the module (toy model with versions 1 and 2 under the `all` policy
and labels stable=1 / canary=2, plus a classify/regress model); every call goes through
`PredictionServiceStub` / `ModelServiceStub` / the gRPC health stub over loopback TCP.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_harness import ServerProcess, model_config_text
from serving_models import (
    export_examples_model,
    export_toy,
    toy_expected,
    toy_request_inputs,
)
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

MAX_MESSAGE = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc")
    export_toy(root / "toy", 1, offset=2.0)
    export_toy(root / "toy", 2, offset=10.0)
    export_examples_model(root / "examples", 1)
    config = root / "models.config"
    config.write_text(
        model_config_text(
            {"toy": root / "toy", "examples": root / "examples"},
            {
                "toy": "model_version_policy { all {} } "
                'version_labels { key: "stable" value: 1 } '
                'version_labels { key: "canary" value: 2 }'
            },
        )
    )
    process = ServerProcess(
        [
            f"--model_config_file={config}",
            "--enable_grpc_healthcheck_service",
            f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_MESSAGE}",
        ],
        root / "server.log",
        ready_models=("toy", "examples"),
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as channel:
        yield channel


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def toy_request(inputs=None, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "toy")
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    if "label" in spec:
        request.model_spec.version_label = spec.pop("label")
    if "signature" in spec:
        request.model_spec.signature_name = spec.pop("signature")
    for key, value in (toy_request_inputs() if inputs is None else inputs).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=30)
    return info.value


# --- Predict --------------------------------------------------------------------------------


def test_predict_latest_returns_the_newest_version_and_echoes_the_spec(predict_stub):
    response = predict_stub.Predict(toy_request(), timeout=30)
    expected = toy_expected(toy_request_inputs(), offset=10.0)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), expected["y"])
    assert list(tf.make_ndarray(response.outputs["tagged"])) == list(expected["tagged"])
    assert response.model_spec.name == "toy"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize(
    ("selector", "version", "offset"),
    [({"version": 1}, 1, 2.0), ({"label": "stable"}, 1, 2.0), ({"label": "canary"}, 2, 10.0)],
)
def test_predict_by_version_and_by_label(predict_stub, selector, version, offset):
    response = predict_stub.Predict(toy_request(**selector), timeout=30)
    assert response.model_spec.version.value == version
    expected = toy_expected(toy_request_inputs(), offset)["y"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), expected)


def test_predict_output_filter_returns_only_the_named_outputs(predict_stub):
    request = toy_request()
    request.output_filter.append("y")
    response = predict_stub.Predict(request, timeout=30)
    assert set(response.outputs) == {"y"}


def test_predict_another_signature(predict_stub):
    pair = np.array([[1.0, 2.0], [3.0, 4.5]], dtype=np.float32)
    response = predict_stub.Predict(
        toy_request({"pair": pair}, signature="total", version=1), timeout=30
    )
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["sum"]), [3.0, 7.5])
    assert response.model_spec.signature_name == "total"


# --- errors, worded and coded like TF Serving -------------------------------------------------


def test_unknown_model_version_and_label(predict_stub):
    error = rpc_error(predict_stub.Predict, toy_request(name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"
    error = rpc_error(predict_stub.Predict, toy_request(version=7))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(toy, 7)"
    # TF Serving: unknown label -> INVALID_ARGUMENT (ServerCore::GetModelVersionForLabel).
    error = rpc_error(predict_stub.Predict, toy_request(label="nope"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: nope" in error.details()


def test_unknown_signature_is_failed_precondition_like_tf_serving(predict_stub):
    error = rpc_error(predict_stub.Predict, toy_request(signature="nope"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "nope" not found.'


def test_missing_extra_wrong_dtype_and_wrong_shape_inputs(predict_stub):
    inputs = toy_request_inputs()
    missing = {k: v for k, v in inputs.items() if k != "count"}
    error = rpc_error(predict_stub.Predict, toy_request(missing))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "count" in error.details()

    extra = {**inputs, "bogus": np.zeros(3, np.float32)}
    error = rpc_error(predict_stub.Predict, toy_request(extra))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "bogus" in error.details()

    wrong_dtype = {**inputs, "x": inputs["x"].astype(np.float64)}
    error = rpc_error(predict_stub.Predict, toy_request(wrong_dtype))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "x" in error.details()

    wrong_shape = {**inputs, "x": np.zeros((3, 2), np.float32)}
    error = rpc_error(predict_stub.Predict, toy_request(wrong_shape))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "x" in error.details()

    error = rpc_error(predict_stub.Predict, toy_request(name=""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_output_filter_with_an_unknown_output(predict_stub):
    request = toy_request()
    request.output_filter.append("nope")
    error = rpc_error(predict_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in error.details()


def test_a_request_over_the_size_limit_is_resource_exhausted(predict_stub):
    big = np.zeros(MAX_MESSAGE // 4 + 1000, np.float32)
    inputs = {
        "x": big,
        "key": np.array([b"k"] * big.size, dtype=object),
        "count": np.zeros(big.size, np.int64),
    }
    error = rpc_error(predict_stub.Predict, toy_request(inputs))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_server_still_answers_after_errors(predict_stub):
    assert predict_stub.Predict(toy_request(version=1), timeout=30).model_spec.version.value == 1


# --- Classify / Regress / MultiInference ------------------------------------------------------


def example_input(values) -> input_pb2.Input:
    request_input = input_pb2.Input()
    for value in values:
        example = request_input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(value)
    return request_input


def test_classify(predict_stub):
    request = classification_pb2.ClassificationRequest(input=example_input([0.0, 2.0]))
    request.model_spec.name = "examples"
    request.model_spec.signature_name = "classify_x"
    response = predict_stub.Classify(request, timeout=30)
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "classify_x"
    first, second = response.result.classifications
    assert [c.label for c in first.classes] == ["neg", "pos"]
    assert [c.score for c in first.classes] == pytest.approx([0.5, 0.5])
    expected = np.exp([-2.0, 2.0]) / np.exp([-2.0, 2.0]).sum()
    assert [c.score for c in second.classes] == pytest.approx(expected, rel=1e-5)


def test_regress(predict_stub):
    request = regression_pb2.RegressionRequest(input=example_input([1.0, -3.0]))
    request.model_spec.name = "examples"
    request.model_spec.signature_name = "regress_x"
    response = predict_stub.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == pytest.approx([3.0, -5.0])
    assert response.model_spec.signature_name == "regress_x"


def test_classify_on_a_predict_signature_is_invalid(predict_stub):
    request = classification_pb2.ClassificationRequest(input=example_input([1.0]))
    request.model_spec.name = "examples"
    error = rpc_error(predict_stub.Classify, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensorflow/serving/classify" in error.details()


def test_multi_inference(predict_stub):
    request = inference_pb2.MultiInferenceRequest(input=example_input([1.0]))
    for signature, method in (
        ("classify_x", "tensorflow/serving/classify"),
        ("regress_x", "tensorflow/serving/regress"),
    ):
        task = request.tasks.add()
        task.model_spec.name = "examples"
        task.model_spec.signature_name = signature
        task.method_name = method
    response = predict_stub.MultiInference(request, timeout=30)
    classify, regress = response.results
    assert classify.model_spec.signature_name == "classify_x"
    assert len(classify.classification_result.classifications[0].classes) == 2
    assert regress.regression_result.regressions[0].value == pytest.approx(3.0)

    duplicate = inference_pb2.MultiInferenceRequest(input=example_input([1.0]))
    duplicate.tasks.extend([request.tasks[1], request.tasks[1]])
    error = rpc_error(predict_stub.MultiInference, duplicate)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Duplicate evaluation of signature: regress_x" in error.details()


# --- metadata, status, health -------------------------------------------------------------------


def test_get_model_metadata_returns_the_signature_defs(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "toy"
    request.model_spec.version.value = 1
    response = predict_stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    default = signature_map.signature_def["serving_default"]
    assert set(default.inputs) == {"x", "key", "count"}
    assert default.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert default.inputs["key"].dtype == tf.string.as_datatype_enum
    assert set(default.outputs) == {"y", "tagged"}
    assert default.method_name == "tensorflow/serving/predict"
    assert "total" in signature_map.signature_def

    request.metadata_field[:] = ["nope"]
    error = rpc_error(predict_stub.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Metadata field nope is not supported" in error.details()


def test_get_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "toy"
    response = model_stub.GetModelStatus(request, timeout=30)
    states = {s.version: s.state for s in response.model_version_status}
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states == {1: available, 2: available}
    assert all(s.status.error_code == 0 for s in response.model_version_status)

    request.model_spec.version.value = 2
    response = model_stub.GetModelStatus(request, timeout=30)
    assert [s.version for s in response.model_version_status] == [2]

    request.model_spec.version.value = 9
    error = rpc_error(model_stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find version 9 of model toy"

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    error = rpc_error(model_stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model nope"


def test_health_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
