"""Property-based fuzzing of perucast-model-server over the wire (hypothesis, reproducible).

One real server process for the module (toy model v1+v2 with labels, the classify/regress model).
Random and half-valid requests go to both APIs; the properties are TF Serving's contract for bad
input: a request is answered OK or refused with a client-side status code and a message, never
with a server failure (gRPC UNKNOWN/INTERNAL/UNAVAILABLE/DEADLINE_EXCEEDED, HTTP 500), and the
server keeps serving correct answers afterwards.

Seeds are fixed (`derandomize=True`, no example database), so CI replays the same cases.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.parse

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from serving_harness import ServerProcess, model_config_text
from serving_models import (
    export_examples_model,
    export_toy,
    toy_expected,
    toy_request_inputs,
)
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
CLIENT_HTTP = {400, 404, 413, 429, 501}
# Bytes that are no PredictRequest: INTERNAL, as TF Serving's C++ gRPC answers them.
UNDESERIALIZABLE = {grpc.StatusCode.INTERNAL}
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


def fuzz_settings(max_examples: int):
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# --- the server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
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
        [f"--model_config_file={config}"],
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


def toy_request(version: int = 1) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.model_spec.version.value = version
    for key, value in toy_request_inputs().items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def assert_still_serving(server, predict_stub) -> None:
    """The process is alive and answers a valid request correctly on both ports."""
    assert server.process.poll() is None, server.log_tail()
    response = predict_stub.Predict(toy_request(1), timeout=30)
    expected = toy_expected(toy_request_inputs(), offset=2.0)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), expected["y"])
    status, body = http_call(server, "POST", "/v1/models/toy/labels/canary:predict", TOY_JSON)
    assert status == 200, body
    expected = toy_expected(toy_request_inputs(), offset=10.0)
    assert json.loads(body)["outputs"]["y"] == expected["y"].tolist()


def check_rpc(call, request, timeout: float = 30):
    """Runs one call; OK, or a client-side code with a message. Returns the code."""
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as err:
        assert err.code() in CLIENT_CODES, (err.code(), err.details(), request)
        assert err.details(), (err.code(), request)
        event(err.code().name)  # --hypothesis-show-statistics shows how deep the cases got
        return err.code()
    event("OK")
    return grpc.StatusCode.OK


# --- gRPC strategies -----------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
# The real models come up often enough for cases to get past the name check.
names = st.one_of(
    st.just("toy"),
    st.just("examples"),
    st.sampled_from(["", "nope", "TOY", "toy ", "t\u00f6y", "\u6a21\u578b"]),
    st.text(max_size=12),
)
versions = st.one_of(
    st.sampled_from([1, 2]), st.sampled_from([0, 3, -1, 2**63 - 1, -(2**63)]), INT64
)
labels = st.one_of(st.sampled_from(["stable", "canary", "", "nope", "STABLE"]), st.text(max_size=8))
signatures = st.one_of(
    st.sampled_from(["", "serving_default", "total", "classify_x", "regress_x", "nope"]),
    st.text(max_size=8),
)


@st.composite
def model_specs(draw, signature: bool = True):
    spec = model_pb2.ModelSpec(name=draw(names))
    choice = draw(st.sampled_from(["latest", "version", "label"]))
    if choice == "version":
        spec.version.value = draw(versions)
    elif choice == "label":
        spec.version_label = draw(labels)
    if signature:
        spec.signature_name = draw(signatures)
    return spec


# Every DataType enum value (incl. DT_INVALID, the _REF twins, resource/variant), and unknown ones.
DTYPES = st.one_of(
    st.sampled_from(sorted(types_pb2.DataType.values())),
    st.integers(-5, 300),
)
# Small dims, zero, negative, and sizes no machine can allocate (and whose products overflow).
DIMS = st.one_of(st.integers(0, 4), st.sampled_from([-1, -(2**63), 2**50, 2**62, 2**63 - 1]))
VALUE_FIELDS = {
    "float_val": st.floats(width=32),
    "double_val": st.floats(),
    "half_val": st.integers(-(2**31), 2**31 - 1),
    "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": INT64,
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
    "bool_val": st.booleans(),
    "string_val": st.binary(max_size=8),
    "scomplex_val": st.floats(width=32),
    "dcomplex_val": st.floats(),
}


@st.composite
def tensor_protos(draw):
    proto = tensor_pb2.TensorProto(dtype=draw(DTYPES))
    if draw(st.integers(0, 15)) == 0:
        proto.tensor_shape.unknown_rank = True
    shape = draw(st.lists(DIMS, max_size=4))
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    how = draw(st.sampled_from(["content", "sized_content", "values", "empty"]))
    if how == "content":
        proto.tensor_content = draw(st.binary(max_size=64))
    elif how == "sized_content":  # the right byte size for the dtype, give or take one
        n = math.prod(max(size, 0) for size in shape) if all(s < 64 for s in shape) else 1
        width = draw(st.sampled_from([1, 2, 4, 8, 16]))
        proto.tensor_content = draw(st.binary(min_size=n * width, max_size=n * width + 1))
    elif how == "values":
        for field in draw(st.lists(st.sampled_from(sorted(VALUE_FIELDS)), max_size=2)):
            getattr(proto, field).extend(draw(st.lists(VALUE_FIELDS[field], max_size=6)))
    return proto


@st.composite
def toy_like_inputs(draw):
    """The toy's inputs with the right dtypes but random (also zero and mismatched) batch sizes."""
    inputs = {}
    chosen = draw(
        st.one_of(
            st.just({"x", "key", "count"}),
            st.sets(st.sampled_from(["x", "key", "count", "pair"]), min_size=1),
        )
    )
    same_batch = draw(st.booleans())
    batch = draw(st.integers(0, 3))
    for name in sorted(chosen):
        n = batch if same_batch else draw(st.integers(0, 3))
        if name == "x":
            value = np.array(draw(st.lists(st.floats(width=32), min_size=n, max_size=n)), "f4")
        elif name == "count":
            value = np.array(draw(st.lists(INT64, min_size=n, max_size=n)), np.int64)
        elif name == "pair":
            value = np.zeros((n, draw(st.integers(0, 3))), np.float32)
        else:
            value = np.array(draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n)), object)
            if value.ndim != 1:
                value = value.reshape(-1)
        dtype = {"x": tf.float32, "count": tf.int64, "pair": tf.float32}.get(name, tf.string)
        inputs[name] = tf.make_tensor_proto(value, dtype=dtype)
    return inputs


# Specs that resolve (for cases that go deeper than the model lookup).
TOY_SPECS = st.sampled_from(
    [
        model_pb2.ModelSpec(name="toy"),
        model_pb2.ModelSpec(name="toy", signature_name="serving_default"),
        model_pb2.ModelSpec(name="toy", signature_name="total", version_label="stable"),
        model_pb2.ModelSpec(name="toy", version={"value": 1}),
    ]
)


@st.composite
def predict_requests(draw):
    request = predict_pb2.PredictRequest()
    request.model_spec.CopyFrom(draw(st.one_of(model_specs(), TOY_SPECS)))
    if draw(st.booleans()):
        inputs = draw(toy_like_inputs())
    else:
        inputs = draw(
            st.dictionaries(
                st.one_of(st.sampled_from(["x", "key", "count", "pair"]), st.text(max_size=6)),
                tensor_protos(),
                max_size=3,
            )
        )
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    outputs = st.one_of(st.sampled_from(["y", "tagged", "sum", "nope", ""]), st.text(max_size=4))
    if draw(st.booleans()):
        request.output_filter.extend(draw(st.lists(outputs, max_size=3)))
    return request


features = st.dictionaries(
    st.one_of(st.just("x"), st.text(max_size=4)),
    st.one_of(
        st.lists(st.floats(width=32), max_size=3).map(lambda v: ("float_list", v)),
        st.lists(INT64, max_size=3).map(lambda v: ("int64_list", v)),
        st.lists(st.binary(max_size=4), max_size=3).map(lambda v: ("bytes_list", v)),
    ),
    max_size=3,
)


def fill_example(example, feature_map) -> None:
    for name, (kind, values) in feature_map.items():
        getattr(example.features.feature[name], kind).value.extend(values)


@st.composite
def example_inputs(draw):
    request_input = input_pb2.Input()
    kind = draw(st.sampled_from(["example_list", "example_list_with_context", "empty"]))
    if kind == "empty":
        return request_input
    if kind == "example_list":
        target = request_input.example_list.examples
        request_input.example_list.SetInParent()
    else:
        target = request_input.example_list_with_context.examples
        fill_example(request_input.example_list_with_context.context, draw(features))
        request_input.example_list_with_context.SetInParent()
    for feature_map in draw(st.lists(features, max_size=3)):
        fill_example(target.add(), feature_map)
    return request_input


# --- gRPC properties -----------------------------------------------------------------------------


@fuzz_settings(500)
@given(predict_request=predict_requests())
@example(  # a shape whose element count overflows int64
    predict_request=predict_pb2.PredictRequest(
        model_spec={"name": "toy"},
        inputs={
            "x": tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape={"dim": [{"size": 2**62}, {"size": 2**62}]},
            )
        },
    )
)
@example(  # a shape no machine can allocate, filled from one value
    predict_request=predict_pb2.PredictRequest(
        model_spec={"name": "toy"},
        inputs={
            "key": tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING,
                tensor_shape={"dim": [{"size": 2**50}]},
                string_val=[b"a"],
            ),
            "x": tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, tensor_shape={"dim": [{"size": 2**50}]}, float_val=[1]
            ),
        },
    )
)
def test_fuzz_grpc_predict(predict_stub, predict_request):
    check_rpc(predict_stub.Predict, predict_request)


@st.composite
def toy_values(draw):
    """Valid toy inputs with arbitrary values (NaN, infinities, extreme int64 counts, any text)."""
    n = draw(st.integers(1, 4))
    return {
        "x": np.array(draw(st.lists(st.floats(width=32), min_size=n, max_size=n)), np.float32),
        "key": np.array(
            [t.encode() for t in draw(st.lists(st.text(max_size=5), min_size=n, max_size=n))],
            dtype=object,
        ),
        "count": np.array(draw(st.lists(INT64, min_size=n, max_size=n)), np.int64),
    }


def assert_toy_outputs(y, tagged, inputs, offset: float) -> None:
    expected = toy_expected(inputs, offset)
    np.testing.assert_array_equal(np.asarray(y, np.float32), expected["y"])
    assert list(tagged) == list(expected["tagged"])


@fuzz_settings(100)
@given(inputs=toy_values(), version=st.sampled_from([1, 2]))
def test_fuzz_grpc_predict_values_are_right(predict_stub, inputs, version):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    response = predict_stub.Predict(request, timeout=30)
    tagged = tf.make_ndarray(response.outputs["tagged"])
    assert_toy_outputs(
        tf.make_ndarray(response.outputs["y"]), tagged, inputs, {1: 2.0, 2: 10.0}[version]
    )


def mutations(data: bytes):
    """Random edits of a valid serialized request: flipped, dropped, inserted, cut bytes."""
    edits = st.lists(
        st.tuples(
            st.sampled_from(["flip", "drop", "insert", "cut"]),
            st.integers(0, max(len(data) - 1, 0)),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    )

    def apply(changes) -> bytes:
        out = bytearray(data)
        for kind, pos, byte in changes:
            pos = min(pos, max(len(out) - 1, 0))
            if not out:
                break
            if kind == "flip":
                out[pos] ^= byte or 1
            elif kind == "drop":
                del out[pos]
            elif kind == "insert":
                out.insert(pos, byte)
            else:
                del out[pos:]
        return bytes(out)

    return edits.map(apply)


@fuzz_settings(200)
@given(
    data=st.one_of(
        st.binary(max_size=256),
        mutations(toy_request(2).SerializeToString()),
        predict_requests().map(lambda r: r.SerializeToString()).flatmap(mutations),
    )
)
@example(data=b"")
@example(data=b"\x0a\x05\x0a\x03toy\x12")  # truncated
def test_fuzz_grpc_predict_raw_bytes(channel, data):
    call = channel.unary_unary(
        PREDICT_METHOD,
        request_serializer=lambda b: b,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    try:
        parsed = predict_pb2.PredictRequest.FromString(data)
    except DecodeError:
        parsed = None
    try:
        call(data, timeout=30)
    except grpc.RpcError as err:
        if parsed is None:
            assert err.code() in UNDESERIALIZABLE, (err.code(), err.details())
        else:
            assert err.code() in CLIENT_CODES, (err.code(), err.details(), data)
            assert err.details()
    else:
        assert parsed is not None


def test_an_undeserializable_request_is_internal_like_tf_serving(channel):
    call = channel.unary_unary(
        PREDICT_METHOD,
        request_serializer=lambda b: b,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as info:
        call(b"\x0a\x05\x0a\x03toy\x12", timeout=30)  # a truncated PredictRequest
    assert info.value.code() == grpc.StatusCode.INTERNAL


@fuzz_settings(100)
@given(
    spec=model_specs(),
    fields=st.lists(st.one_of(st.just("signature_def"), st.text(max_size=6)), max_size=3),
)
def test_fuzz_grpc_metadata(predict_stub, spec, fields):
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=fields)
    check_rpc(predict_stub.GetModelMetadata, request)


@fuzz_settings(100)
@given(spec=model_specs())
def test_fuzz_grpc_model_status(model_stub, spec):
    check_rpc(
        model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
    )


@fuzz_settings(150)
@given(spec=model_specs(), request_input=example_inputs(), regress=st.booleans())
@example(  # the happy path is in the space too
    spec=model_pb2.ModelSpec(name="examples", signature_name="classify_x"),
    request_input=input_pb2.Input(
        example_list={
            "examples": [{"features": {"feature": {"x": {"float_list": {"value": [1]}}}}}]
        }
    ),
    regress=False,
)
def test_fuzz_grpc_classify_and_regress(predict_stub, spec, request_input, regress):
    if regress:
        request = regression_pb2.RegressionRequest(model_spec=spec, input=request_input)
        check_rpc(predict_stub.Regress, request)
    else:
        request = classification_pb2.ClassificationRequest(model_spec=spec, input=request_input)
        check_rpc(predict_stub.Classify, request)


def test_grpc_server_survives_the_fuzzing(server, predict_stub):
    assert_still_serving(server, predict_stub)


# --- REST ----------------------------------------------------------------------------------------

TOY_JSON = json.dumps(
    {
        "inputs": {
            "x": toy_request_inputs()["x"].tolist(),
            "key": [k.decode() for k in toy_request_inputs()["key"]],
            "count": toy_request_inputs()["count"].tolist(),
        }
    }
).encode()


def http_call(server, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def check_http(status: int, body: bytes) -> None:
    """200 with JSON, or a client-side status with TF Serving's {"error": "..."} body."""
    assert status != 500, body
    event(f"HTTP {status}")
    doc = json.loads(body)  # NaN/Infinity are accepted, as TF Serving writes them
    if status == 200:
        return
    assert status in CLIENT_HTTP, (status, body)
    assert isinstance(doc, dict) and set(doc) == {"error"}, body
    assert isinstance(doc["error"], str) and doc["error"], body


PREDICTION_PATHS = st.sampled_from(
    [
        "/v1/models/toy:predict",
        "/v1/models/toy/versions/1:predict",
        "/v1/models/toy/labels/canary:predict",
        "/v1/models/examples:predict",
        "/v1/models/examples:classify",
        "/v1/models/examples:regress",
        "/v1/models/toy:classify",
        "/v1/models/nope:regress",
    ]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
json_keys = st.sampled_from(
    ["instances", "inputs", "signature_name", "examples", "context", "b64", "x", "key", "count"]
)
# Documents shaped like requests (known keys, random values), to get past the first checks.
json_floats = st.one_of(st.floats(), st.integers(-(2**64), 2**64))


@st.composite
def toy_json_requests(draw):
    """Toy predict bodies of the right structure with random values (row or columnar)."""
    n = draw(st.integers(1, 3))
    columns = {
        "x": draw(st.lists(json_floats, min_size=n, max_size=n)),
        "key": draw(st.lists(st.one_of(st.text(max_size=4), json_floats), min_size=n, max_size=n)),
        "count": draw(st.lists(json_floats, min_size=n, max_size=n)),
    }
    if draw(st.booleans()):
        return {"inputs": columns}
    return {"instances": [{k: v[i] for k, v in columns.items()} for i in range(n)]}


request_like = st.dictionaries(
    json_keys,
    st.one_of(
        json_values,
        st.sampled_from(["total", "classify_x", "regress_x", "serving_default", "nope"]),
        st.lists(st.dictionaries(json_keys, json_values, max_size=3), max_size=3),
        st.dictionaries(st.sampled_from(["x", "key", "count", "pair", "b64"]), json_values),
    ),
    max_size=4,
)


def dumps(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


@fuzz_settings(500)
@given(
    path=PREDICTION_PATHS,
    body=st.one_of(
        st.binary(max_size=128),
        json_values.map(dumps),
        request_like.map(dumps),
        request_like.map(dumps).flatmap(mutations),
        toy_json_requests().map(dumps),
    ),
)
# Regressions: raw non-UTF-8 bytes quoted in the error message made the error body unwritable
# (aiohttp's plain-text 500); in a feature name or signature name, unstorable in the protobuf.
@example(path="/v1/models/examples:classify", body=b'{"\x80":""}')
@example(path="/v1/models/examples:regress", body=b'{"examples": [{"\xff": 1.0}]}')
@example(path="/v1/models/examples:classify", body=b'{"signature_name": "\xff", "examples": [{}]}')
@example(path="/v1/models/toy:predict", body=b'{"signature_name": "\\ud800", "instances": [1]}')
@example(path="/v1/models/toy:predict", body=b'{"instances": [{"b64": 7}]}')
@example(path="/v1/models/toy:predict", body=b'{"inputs": {"x": [1e400], "key": [], "count": []}}')
@example(path="/v1/models/toy:predict", body=b'{"signature_name": "total", "inputs": [[[1, 2]]]}')
def test_fuzz_rest_request_bodies(server, path, body):
    check_http(*http_call(server, "POST", path, body))


@fuzz_settings(100)
@given(inputs=toy_values(), label=st.sampled_from(["stable", "canary"]), row=st.booleans())
def test_fuzz_rest_predict_values_are_right(server, inputs, label, row):
    columns = {
        "x": [float(v) for v in inputs["x"]],  # float32 -> double is exact
        "key": [k.decode() for k in inputs["key"]],
        "count": inputs["count"].tolist(),
    }
    if row:
        body = {
            "instances": [
                dict(zip(columns, values, strict=True))
                for values in zip(*columns.values(), strict=True)
            ]
        }
    else:
        body = {"inputs": columns}
    status, reply = http_call(server, "POST", f"/v1/models/toy/labels/{label}:predict", dumps(body))
    assert status == 200, reply
    doc = json.loads(reply)
    if row:
        y = [p["y"] for p in doc["predictions"]]
        tagged = [p["tagged"].encode() for p in doc["predictions"]]
    else:
        y, tagged = doc["outputs"]["y"], [t.encode() for t in doc["outputs"]["tagged"]]
    assert_toy_outputs(y, tagged, inputs, 2.0 if label == "stable" else 10.0)


path_segments = st.one_of(
    st.sampled_from(
        ["v1", "models", "toy", "examples", "versions", "labels", "metadata", "1", "2", "stable"]
    ),
    st.sampled_from(["99999999999999999999", "-1", "0", "", "..", ".", "%2F", "%zz", "%ff"]),
    st.text(max_size=6),
)


@st.composite
def request_paths(draw):
    segments = draw(st.lists(path_segments, max_size=6))
    if draw(st.booleans()):
        segments = ["v1", "models", *segments]
    path = "/" + "/".join(segments)
    if draw(st.booleans()):
        path += ":" + draw(st.one_of(st.sampled_from(["predict", "classify", "PREDICT"]), names))
    return urllib.parse.quote(path, safe="/:%@!$&'()*+,;=")


@fuzz_settings(300)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=request_paths(),
    body=st.one_of(st.none(), st.just(TOY_JSON), st.binary(max_size=16)),
)
# Regression: a path with an encoded newline missed the catch-all route (aiohttp's text 404).
@example(method="GET", path="/:%0A", body=None)
@example(method="POST", path="/v1/models/to%0Ay:predict", body=TOY_JSON)
@example(method="GET", path="/v1/models/toy/versions/99999999999999999999", body=None)
@example(method="POST", path="/v1/models/toy/versions/%D9%A1:predict", body=TOY_JSON)
@example(method="GET", path="/v1/models/%ff%fe", body=None)
@example(method="GET", path="/v1/models/toy/labels/%ED%B3%BF", body=None)
def test_fuzz_rest_paths(server, method, path, body):
    check_http(*http_call(server, method, path, body))


def test_rest_server_survives_the_fuzzing(server, predict_stub):
    assert_still_serving(server, predict_stub)
