"""Tests of serving/codec.py: TensorProto <-> numpy against TF, and TF Serving's REST JSON."""

from __future__ import annotations

import base64
import json

import grpc
import hypothesis.extra.numpy as hnp
import ml_dtypes
import numpy as np
import orjson
import pytest
import tensorflow as tf
from google.protobuf import any_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2 as T
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    regression_pb2,
)

from serving import codec
from serving.errors import ServingError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def info(dtype: int, dims: list[int] | None = None, name: str = "x:0") -> meta_graph_pb2.TensorInfo:
    """A signature TensorInfo; dims None means unknown rank."""
    tensor_info = meta_graph_pb2.TensorInfo(dtype=dtype, name=name)
    if dims is None:
        tensor_info.tensor_shape.unknown_rank = True
    else:
        for d in dims:
            tensor_info.tensor_shape.dim.add(size=d)
    return tensor_info


def raises(fragment: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
    """Context manager: a ServingError with `code` whose message contains `fragment`."""

    class _Check:
        def __enter__(self):
            return self

        def __exit__(self, exc_type, exc, tb):
            assert exc_type is ServingError, f"expected ServingError, got {exc_type}: {exc}"
            assert exc.code == code, exc
            assert fragment in exc.message, f"{fragment!r} not in {exc.message!r}"
            return True

    return _Check()


def same(a: np.ndarray, b: np.ndarray) -> None:
    """Bitwise equality of dtype, shape and contents (NaN payloads included)."""
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.dtype == object:
        assert a.tolist() == b.tolist()
    else:
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


# ------------------------------------------------------------------------------------------------
# TensorProto <-> numpy
# ------------------------------------------------------------------------------------------------

NUMERIC_DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
]
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def numeric_arrays(draw) -> np.ndarray:
    if draw(st.booleans()) and draw(st.integers(0, 7)) == 0:
        bits = draw(hnp.arrays(np.uint16, shapes))
        return bits.view(ml_dtypes.bfloat16)
    return draw(hnp.arrays(st.sampled_from(NUMERIC_DTYPES), shapes))


@SETTINGS
@given(numeric_arrays())
def test_tensor_content_matches_make_ndarray(arr):
    proto = tf.make_tensor_proto(arr)
    same(codec.tensor_proto_to_ndarray(proto, "x"), tf.make_ndarray(proto))


@SETTINGS
@given(numeric_arrays())
def test_ndarray_to_tensor_proto_round_trips_through_tf(arr):
    proto = codec.ndarray_to_tensor_proto(arr)
    assert proto.dtype == tf.as_dtype(arr.dtype).as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == list(arr.shape)
    assert len(proto.tensor_content) == arr.nbytes
    same(tf.make_ndarray(proto), arr)
    same(codec.tensor_proto_to_ndarray(proto, "x"), arr)


@SETTINGS
@given(hnp.arrays(np.float32, shapes).map(lambda a: a.T))
def test_non_contiguous_arrays_are_written_in_c_order(arr):
    same(tf.make_ndarray(codec.ndarray_to_tensor_proto(arr)), np.array(arr, order="C"))


# (dtype enum, *_val field, element strategy) for protos written with repeated value fields.
_i32 = st.integers(-(2**31), 2**31 - 1)
VAL_CASES = [
    (T.DT_FLOAT, "float_val", st.floats(width=32)),
    (T.DT_DOUBLE, "double_val", st.floats()),
    (T.DT_INT32, "int_val", _i32),
    (T.DT_INT16, "int_val", st.integers(-(2**15), 2**15 - 1)),
    (T.DT_INT8, "int_val", st.integers(-128, 127)),
    (T.DT_UINT8, "int_val", st.integers(0, 255)),
    (T.DT_UINT16, "int_val", st.integers(0, 2**16 - 1)),
    (T.DT_INT64, "int64_val", st.integers(-(2**63), 2**63 - 1)),
    (T.DT_UINT32, "uint32_val", st.integers(0, 2**32 - 1)),
    (T.DT_UINT64, "uint64_val", st.integers(0, 2**64 - 1)),
    (T.DT_BOOL, "bool_val", st.booleans()),
    (T.DT_HALF, "half_val", st.integers(0, 2**16 - 1)),
    (T.DT_BFLOAT16, "half_val", st.integers(0, 2**16 - 1)),
]


@st.composite
def val_protos(draw) -> tensor_pb2.TensorProto:
    dtype, field, elements = draw(st.sampled_from(VAL_CASES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    n = int(np.prod(shape))
    # Fewer values than elements exercise TF's fill-with-the-last-value rule.
    count = draw(st.integers(0, n))
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for s in shape:
        proto.tensor_shape.dim.add(size=s)
    getattr(proto, field).extend(draw(st.lists(elements, min_size=count, max_size=count)))
    return proto


@SETTINGS
@given(val_protos())
def test_repeated_value_fields_match_make_ndarray(proto):
    same(codec.tensor_proto_to_ndarray(proto, "x"), tf.make_ndarray(proto))


@SETTINGS
@given(st.lists(st.floats(width=32), min_size=17, max_size=200))
def test_long_float_val_is_read_from_the_wire(values):
    proto = tensor_pb2.TensorProto(dtype=T.DT_FLOAT)
    proto.tensor_shape.dim.add(size=len(values))
    proto.version_number = 3
    proto.float_val.extend(values)
    proto.string_val.append(b"ignored")
    same(codec.tensor_proto_to_ndarray(proto, "x"), np.array(values, dtype=np.float32))


def test_single_value_broadcasts_like_make_ndarray():
    proto = tensor_pb2.TensorProto(dtype=T.DT_FLOAT)
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=3)
    proto.float_val.append(7.5)
    out = codec.tensor_proto_to_ndarray(proto, "x")
    np.testing.assert_array_equal(out, np.full((2, 3), 7.5, np.float32))
    same(out, tf.make_ndarray(proto))


def test_extra_values_are_ignored_like_tensor_from_proto():
    proto = tensor_pb2.TensorProto(dtype=T.DT_INT32)
    proto.tensor_shape.dim.add(size=2)
    proto.int_val.extend([1, 2, 3])
    np.testing.assert_array_equal(codec.tensor_proto_to_ndarray(proto, "x"), [1, 2])


def test_complex_val_pairs():
    proto = tensor_pb2.TensorProto(dtype=T.DT_COMPLEX64)
    proto.tensor_shape.dim.add(size=2)
    proto.scomplex_val.extend([1, 2, 3, 4])
    out = codec.tensor_proto_to_ndarray(proto, "x")
    same(out, np.array([1 + 2j, 3 + 4j], np.complex64))
    same(out, tf.make_ndarray(proto))


def test_tensor_content_is_not_copied():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    proto = tf.make_tensor_proto(arr)
    out = codec.tensor_proto_to_ndarray(proto, "x")
    assert not out.flags.owndata
    np.testing.assert_array_equal(out, arr)


@SETTINGS
@given(
    st.lists(st.binary(max_size=8), min_size=1, max_size=12).flatmap(
        lambda vals: st.tuples(st.just(vals), st.integers(len(vals), len(vals) + 3))
    )
)
def test_string_val_matches_make_ndarray(case):
    values, n = case
    proto = tensor_pb2.TensorProto(dtype=T.DT_STRING)
    proto.tensor_shape.dim.add(size=n)
    proto.string_val.extend(values)
    same(codec.tensor_proto_to_ndarray(proto, "x"), tf.make_ndarray(proto))


@SETTINGS
@given(hnp.arrays(object, shapes, elements=st.binary(max_size=6) | st.text(max_size=4)))
def test_string_arrays_round_trip(arr):
    proto = codec.ndarray_to_tensor_proto(arr)
    assert proto.dtype == T.DT_STRING
    expected = np.empty(arr.shape, dtype=object)
    expected.ravel()[:] = [v if isinstance(v, bytes) else v.encode() for v in arr.ravel()]
    same(tf.make_ndarray(proto), expected)
    same(codec.tensor_proto_to_ndarray(proto, "s"), expected)
    if arr.size:  # and what TensorFlow writes for the same strings
        same(codec.tensor_proto_to_ndarray(tf.make_tensor_proto(expected), "s"), expected)


def test_string_tensor_without_values_is_empty_bytes():
    # (tf.make_ndarray fills with the str "" here; TensorFlow's C++ Tensor::FromProto with b"".)
    proto = tensor_pb2.TensorProto(dtype=T.DT_STRING, tensor_shape={"dim": [{"size": 2}]})
    assert codec.tensor_proto_to_ndarray(proto, "s").tolist() == [b"", b""]


def test_numpy_str_and_bytes_arrays_become_string_tensors():
    proto = codec.ndarray_to_tensor_proto(np.array([["ab", "ñ"]]))
    assert proto.dtype == T.DT_STRING
    assert list(proto.string_val) == [b"ab", "ñ".encode()]
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2]
    proto = codec.ndarray_to_tensor_proto(np.array([b"x", b"yz"]))
    assert list(proto.string_val) == [b"x", b"yz"]


def test_string_tensor_content_encoding():
    # TF's own encoding of string tensors in tensor_content: varint lengths, then the bytes.
    values = [b"a", b"", b"x" * 200]
    content = bytes([1, 0, 0xC8, 0x01]) + b"".join(values)
    proto = tensor_pb2.TensorProto(dtype=T.DT_STRING, tensor_content=content)
    proto.tensor_shape.dim.add(size=3)
    assert codec.tensor_proto_to_ndarray(proto, "s").tolist() == values
    proto.tensor_content = content + b"!"
    with raises("tensor parsing error: s"):
        codec.tensor_proto_to_ndarray(proto, "s")


def test_big_endian_arrays_are_written_little_endian():
    arr = np.arange(5, dtype=">i4")
    proto = codec.ndarray_to_tensor_proto(arr)
    assert proto.dtype == T.DT_INT32
    np.testing.assert_array_equal(tf.make_ndarray(proto), np.arange(5))


@pytest.mark.parametrize(
    "proto",
    [
        tensor_pb2.TensorProto(dtype=T.DT_INVALID),
        tensor_pb2.TensorProto(dtype=T.DT_RESOURCE),
        tensor_pb2.TensorProto(dtype=T.DT_FLOAT, tensor_content=b"\x00" * 7),
        tensor_pb2.TensorProto(
            dtype=T.DT_FLOAT, tensor_shape={"dim": [{"size": 2}]}, tensor_content=b"\x00" * 4
        ),
        tensor_pb2.TensorProto(dtype=T.DT_FLOAT, tensor_shape={"dim": [{"size": -1}]}),
        tensor_pb2.TensorProto(dtype=T.DT_FLOAT, tensor_shape={"unknown_rank": True}),
    ],
    ids=["invalid", "resource", "content-not-a-multiple", "content-short", "negative", "no-rank"],
)
def test_bad_protos_are_invalid_argument_naming_the_input(proto):
    with raises("tensor parsing error: images"):
        codec.tensor_proto_to_ndarray(proto, "images")


def test_unsupported_numpy_dtype():
    with raises("Unsupported numpy dtype"):
        codec.ndarray_to_tensor_proto(np.array(["2020-01-01"], dtype="datetime64[D]"))
    with raises("to a string tensor"):
        codec.ndarray_to_tensor_proto(np.array([1, "a"], dtype=object))


# ------------------------------------------------------------------------------------------------
# check_inputs
# ------------------------------------------------------------------------------------------------

SIG = {"a": info(T.DT_FLOAT, [-1, 3], "a:0"), "b": info(T.DT_STRING, [-1], "b:0")}


def good_inputs(batch: int = 2) -> dict[str, np.ndarray]:
    return {
        "a": np.zeros((batch, 3), np.float32),
        "b": np.array([b"x"] * batch, dtype=object),
    }


def test_check_inputs_accepts_matching_inputs():
    codec.check_inputs(good_inputs(), SIG, "serving_default")
    codec.check_inputs({"x": np.zeros((4, 2), np.int64)}, {"x": info(T.DT_INT64)}, "s")


def test_check_inputs_missing_input():
    with raises(
        "input size does not match signature: 1!=2 len({a}) != len({a,b}). "
        "Sent extra: {}. Missing but required: {b}."
    ):
        codec.check_inputs({"a": good_inputs()["a"]}, SIG, "serving_default")


def test_check_inputs_extra_input():
    inputs = {**good_inputs(), "c": np.zeros(2, np.float32)}
    with raises(
        "input size does not match signature: 3!=2 len({a,b,c}) != len({a,b}). "
        "Sent extra: {c}. Missing but required: {}."
    ):
        codec.check_inputs(inputs, SIG, "serving_default")


def test_check_inputs_wrong_name_same_count():
    inputs = {"a": good_inputs()["a"], "z": good_inputs()["b"]}
    with raises(
        "Signature input alias: b(feed name: b:0) not found in request and no default value "
        "provided. Inputs expected to be in the request {a,z}"
    ):
        codec.check_inputs(inputs, SIG, "serving_default")


def test_check_inputs_wrong_dtype():
    inputs = good_inputs()
    inputs["a"] = np.array([["1", "2", "3"]] * 2, dtype=object)
    with raises("Expects arg[0] to be float but string is provided"):
        codec.check_inputs(inputs, SIG, "serving_default")
    inputs = good_inputs()
    inputs["a"] = inputs["a"].astype(np.float64)  # no coercion for gRPC tensors
    with raises("Expects arg[0] to be float but double is provided"):
        codec.check_inputs(inputs, SIG, "serving_default")


@pytest.mark.parametrize("shape", [(2, 4), (2,), (2, 3, 1)])
def test_check_inputs_wrong_shape(shape):
    inputs = good_inputs()
    inputs["a"] = np.zeros(shape, np.float32)
    expected = "[" + ",".join(map(str, shape)) + "]"
    with raises(f"Input 'a' has shape {expected}, which is not compatible with shape [?,3]"):
        codec.check_inputs(inputs, SIG, "serving_default")


def test_check_inputs_batch_sizes_must_agree():
    inputs = good_inputs()
    inputs["b"] = np.array([b"x"] * 3, dtype=object)
    with raises("Batching Run() input tensors must have equal 0th-dimension size"):
        codec.check_inputs(inputs, SIG, "serving_default")
    # A fixed leading dim is not a batch dim.
    sig = {"a": SIG["a"], "vocab": info(T.DT_STRING, [5])}
    inputs = {"a": np.zeros((2, 3), np.float32), "vocab": np.array([b"v"] * 5, dtype=object)}
    codec.check_inputs(inputs, sig, "serving_default")


# ------------------------------------------------------------------------------------------------
# REST: predict requests
# ------------------------------------------------------------------------------------------------

ONE = {"x": info(T.DT_FLOAT, [-1, 3])}
MULTI = {
    "age": info(T.DT_INT64, [-1]),
    "name": info(T.DT_STRING, [-1]),
    "emb": info(T.DT_FLOAT, [-1, 2]),
}


def decode(body, sig=ONE):
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    return codec.decode_predict_request(body, sig)


def test_row_format_single_input_plain_list():
    name, inputs, fmt = decode({"instances": [[1, 2.5, 3], [4, 5, 6]]})
    assert (name, fmt) == (None, "row")
    same(inputs["x"], np.array([[1, 2.5, 3], [4, 5, 6]], np.float32))


def test_row_format_named_objects():
    body = {
        "signature_name": "sig",
        "instances": [
            {"age": 3, "name": "ana", "emb": [0.5, 1]},
            {"age": -4, "name": {"b64": base64.b64encode(b"\x00\xff").decode()}, "emb": [2, 3]},
        ],
    }
    name, inputs, fmt = decode(body, MULTI)
    assert (name, fmt) == ("sig", "row")
    same(inputs["age"], np.array([3, -4], np.int64))
    same(inputs["name"], np.array([b"ana", b"\x00\xff"], object))
    same(inputs["emb"], np.array([[0.5, 1], [2, 3]], np.float32))


def test_row_format_b64_bare_values_for_one_string_input():
    sig = {"img_bytes": info(T.DT_STRING, [-1])}
    _, inputs, _ = decode({"instances": [{"b64": "aGk="}, {"b64": "eQ"}]}, sig)
    assert inputs["img_bytes"].tolist() == [b"hi", b"y"]


def test_row_format_object_for_a_single_input():
    _, inputs, _ = decode({"instances": [{"x": [1, 2, 3]}]})
    same(inputs["x"], np.array([[1, 2, 3]], np.float32))


def test_columnar_named_and_bare():
    _, inputs, fmt = decode(
        {"inputs": {"age": [1, 2], "name": ["a", "b"], "emb": [[1, 2], [3, 4]], "extra": 1}}, MULTI
    )
    assert fmt == "columnar"
    same(inputs["age"], np.array([1, 2], np.int64))
    assert inputs["name"].tolist() == [b"a", b"b"]
    assert set(inputs) == {"age", "name", "emb"}  # TF Serving ignores unknown columnar keys
    _, inputs, _ = decode({"inputs": [[1, 2, 3]]})
    same(inputs["x"], np.array([[1, 2, 3]], np.float32))
    _, inputs, _ = decode({"inputs": 7}, {"x": info(T.DT_INT32)})
    same(inputs["x"], np.array(7, np.int32))
    _, inputs, _ = decode({"inputs": {"b64": "YWI="}}, {"s": info(T.DT_STRING)})
    assert inputs["s"].shape == () and inputs["s"][()] == b"ab"


@pytest.mark.parametrize(
    ("dtype", "values", "expected"),
    [
        (T.DT_DOUBLE, [1, 0.1, 2**53 - 1], np.array([1, 0.1, 2**53 - 1], np.float64)),
        (T.DT_INT32, [1, -(2**31)], np.array([1, -(2**31)], np.int32)),
        (T.DT_INT16, [1, 40000], np.array([1, 40000], np.int64).astype(np.int16)),  # wraps
        (T.DT_INT8, [-1, 5], np.array([-1, 5], np.int8)),
        (T.DT_UINT8, [255, 256], np.array([255, 0], np.uint8)),
        (T.DT_INT64, [2**63 - 1], np.array([2**63 - 1], np.int64)),
        (T.DT_UINT32, [2**32 - 1], np.array([2**32 - 1], np.uint32)),
        (T.DT_UINT64, [2**64 - 1], np.array([2**64 - 1], np.uint64)),
        (T.DT_BOOL, [True, False], np.array([True, False])),
        (T.DT_STRING, ["ñ", {"b64": "AA=="}], np.array(["ñ".encode(), b"\x00"], object)),
        (T.DT_FLOAT, [], np.zeros((0,), np.float32)),
        (T.DT_HALF, [], np.zeros((0,), np.float16)),
    ],
)
def test_json_values_per_dtype(dtype, values, expected):
    _, inputs, _ = decode({"inputs": values}, {"v": info(dtype)})
    same(inputs["v"], expected)


def test_nan_and_infinity_tokens_are_accepted():
    _, inputs, _ = decode(b'{"instances": [NaN, Infinity, -Infinity, 1]}', {"v": info(1)})
    same(inputs["v"], np.array([np.nan, np.inf, -np.inf, 1], np.float32))


def test_signature_callable_gets_resolved_name():
    seen = []

    def lookup(name):
        seen.append(name)
        return ONE

    codec.decode_predict_request(b'{"instances": [[1,2,3]]}', lookup)
    codec.decode_predict_request(b'{"signature_name": "s", "instances": [[1,2,3]]}', lookup)
    assert seen == ["serving_default", "s"]


PREDICT_ERRORS = [
    (b"", ONE, "JSON Parse error: The document is empty"),
    (b"  ", ONE, "JSON Parse error: The document is empty."),
    (b'{"instances": [1,}', ONE, "JSON Parse error: Invalid value. at offset: 17"),
    (b'{"a": 1 "b": 2}', ONE, "JSON Parse error: Missing a comma or '}' after an object member."),
    (b"[1 2]", ONE, "JSON Parse error: Missing a comma or ']' after an array element."),
    (b'{"a": 1} x', ONE, "The document root must not be followed by other values."),
    (b"[1]", ONE, "JSON Value: [\n    1\n] Is not object"),
    (
        {"signature_name": 1, "instances": [1]},
        ONE,
        "not formatted correctly. 'signature_name' key must be a string value.",
    ),
    ({"x": 1}, ONE, "Missing 'inputs' or 'instances' key"),
    (
        {"inputs": [1], "instances": [1]},
        ONE,
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
    ),
    ({"instances": 5}, ONE, "Excepting 'instances' to be an list/array"),
    ({"instances": []}, ONE, "No values in 'instances' array"),
    ({"instances": [1]}, {}, "Failed to get input map for signature: DEFAULT"),
    (
        {"instances": [1, 2]},
        MULTI,
        "instances is a plain list, but expecting list of objects as multiple input tensors",
    ),
    (
        {"instances": [[1, "a", 3]]},
        ONE,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "a" Type: String is not of expected type: float',
    ),
    (
        {"instances": [[1, 2, 3], [4, 5]]},
        ONE,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting tensor size: 3 but got: 2",
    ),
    (
        {"instances": [[1, 2], [[3], [4]]]},
        ONE,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting shape [2] but got: [2,1]",
    ),
    (
        {"instances": [[1, 2, 3], {"x": 1}]},
        ONE,
        "Expecting value/list but got object at item 1 of input list",
    ),
    (
        {"instances": [{"age": 1, "name": "a", "emb": [1, 2]}, [1]]},
        MULTI,
        "Expecting object but got list at item 1 of input list",
    ),
    (
        {"instances": [{"age": 1, "name": "a", "emb": [1, 2], "zzz": 1}]},
        MULTI,
        "Failed to process element: 0 key: zzz of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: zzz",
    ),
    (
        {"instances": [{"age": 1, "name": "a"}]},
        MULTI,
        "Failed to process element: 0 of 'instances' list. JSON object: "
        '{\n    "age": 1,\n    "name": "a"\n} must only have keys: age,emb,name',
    ),
    (
        {"instances": [{"age": 1.5, "name": "a", "emb": [1, 2]}]},
        MULTI,
        "Failed to process element: 0 key: age of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: 1.5 Type: Number is not of expected type: int64",
    ),
    (
        {"instances": [{"age": 1, "name": {"b64": "!!"}, "emb": [1, 2]}]},
        MULTI,
        "Error: INVALID_ARGUMENT: Unable to base64 decode",
    ),
    (
        {"instances": [{"age": 1, "name": {"x": "a"}, "emb": [1, 2]}]},
        MULTI,
        'Error: INVALID_ARGUMENT: JSON Value: {\n    "x": "a"\n} not formatted correctly for '
        "base64 data",
    ),
    ({"inputs": [1, 2]}, MULTI, "inputs is a plain value/list, but expecting an object as"),
    (
        {"inputs": {"age": [1], "emb": [[1, 2]]}},
        MULTI,
        "Missing named input: name in 'inputs' object.",
    ),
    (
        {"inputs": [[1, 2, 3], [4, 5]]},
        ONE,
        "Encountered list at unexpected size: 2 at level: 1 expected size: 3",
    ),
    ({"inputs": [[1, [2], 3]]}, ONE, "Encountered list at unexpected level: 2 expected < 2"),
    (
        {"inputs": [[1, 2], 3]},
        ONE,
        "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
    ),
    ({"inputs": [[True]]}, ONE, "JSON Value: true Type: True is not of expected type: float"),
    ({"inputs": [None]}, ONE, "JSON Value: null Type: Null is not of expected type: float"),
    (
        {"inputs": [{"b64": "AA=="}]},
        ONE,
        'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of expected type: float',
    ),
    (
        {"inputs": [1e39]},
        ONE,
        "Cannot convert JSON value: 1e+39 to float without loss of precision",
    ),
    ({"inputs": [16777216]}, ONE, "Cannot convert JSON value: 16777216 to float without loss"),
    (
        {"inputs": [2**53]},
        {"d": info(T.DT_DOUBLE)},
        "Cannot convert JSON value: 9007199254740992 to double without loss of precision.",
    ),
    ({"inputs": [1.0]}, {"i": info(T.DT_INT32)}, "JSON Value: 1.0 Type: Number"),
    ({"inputs": [2**31]}, {"i": info(T.DT_INT32)}, "is not of expected type: int32"),
    ({"inputs": [2**63]}, {"i": info(T.DT_INT64)}, "is not of expected type: int64"),
    ({"inputs": [-1]}, {"u": info(T.DT_UINT32)}, "JSON Value: -1 Type: Number is not of expected"),
    ({"inputs": [-1]}, {"u": info(T.DT_UINT64)}, "is not of expected type: uint64"),
    ({"inputs": [1]}, {"b": info(T.DT_BOOL)}, "JSON Value: 1 Type: Number is not of expected"),
    ({"inputs": [1]}, {"s": info(T.DT_STRING)}, "is not of expected type: string"),
]


@pytest.mark.parametrize(("body", "sig", "fragment"), PREDICT_ERRORS)
def test_predict_request_errors(body, sig, fragment):
    with raises(fragment):
        decode(body, sig)


def test_json_has_no_half_conversion():
    with raises("Conversion of JSON Value: 1.5 to type: half", grpc.StatusCode.UNIMPLEMENTED):
        decode({"inputs": [1.5]}, {"h": info(T.DT_HALF)})


def test_values_in_error_messages_use_tf_decimal_format():
    with raises("JSON Value: 0.333333343 Type: Number is not of expected type: int32"):
        decode(b'{"inputs": [0.3333333333]}', {"i": info(T.DT_INT32)})
    with raises("JSON Value: 1e+300 Type: Number"):
        decode(b'{"inputs": [1e300]}', {"i": info(T.DT_INT32)})


# ------------------------------------------------------------------------------------------------
# REST: predict responses
# ------------------------------------------------------------------------------------------------


def test_row_response_one_output_is_bare():
    out = codec.encode_predict_response({"y": np.array([[0.1, 2], [3, 4]], np.float32)}, "row")
    assert orjson.loads(out) == {"predictions": [[0.1, 2.0], [3.0, 4.0]]}
    assert b"0.1," in out  # float32 0.1 is written as 0.1, not 0.10000000149011612


def test_row_response_several_outputs_are_objects():
    outputs = {
        "scores": np.array([[0.5, 0.25], [1, 0]], np.float32),
        "label": np.array([b"cat", "ñ".encode()], object),
        "ids_bytes": np.array([b"\x00\x01", b"\xff"], object),
        "n": np.array([3, 4], np.int64),
    }
    assert orjson.loads(codec.encode_predict_response(outputs, "row")) == {
        "predictions": [
            {"scores": [0.5, 0.25], "label": "cat", "ids_bytes": {"b64": "AAE="}, "n": 3},
            {"scores": [1.0, 0.0], "label": "ñ", "ids_bytes": {"b64": "/w=="}, "n": 4},
        ]
    }


def test_columnar_response():
    outputs = {"a": np.array([1, 2], np.int32), "flag": np.array(True)}
    assert orjson.loads(codec.encode_predict_response(outputs, "columnar")) == {
        "outputs": {"a": [1, 2], "flag": True}
    }
    one = codec.encode_predict_response({"s_bytes": np.array([b"ab"], object)}, "columnar")
    assert orjson.loads(one) == {"outputs": [{"b64": "YWI="}]}
    scalar = codec.encode_predict_response({"y": np.float64(2.5)}, "columnar")
    assert orjson.loads(scalar) == {"outputs": 2.5}


def test_response_nan_and_infinity_as_tf_serving_writes_them():
    outputs = {"y": np.array([[np.nan, np.inf], [-np.inf, 0.1]], np.float32)}
    out = codec.encode_predict_response(outputs, "row")
    assert out == b'{"predictions":[[NaN,Infinity],[-Infinity,0.1]]}'
    decoded = json.loads(out)["predictions"]
    assert np.isnan(decoded[0][0]) and decoded[0][1] == float("inf")


@pytest.mark.parametrize(
    ("outputs", "fmt", "fragment"),
    [
        ({}, "row", "Cannot convert empty tensor map to JSON"),
        ({"y": np.zeros(2)}, "bogus", "Invalid request format"),
        ({"y": np.float32(1)}, "row", "Tensor name: y has no shape information "),
        ({"y": np.zeros((0, 2))}, "row", "Tensor name: y has invalid batch size: 0"),
        (
            {"a": np.zeros(2), "b": np.zeros(3)},
            "row",
            "Tensor name: b has inconsistent batch size: 3 expecting: 2",
        ),
        (
            {"h": np.zeros(2, np.float16)},
            "columnar",
            "Failed to write JSON value for tensor type: half",
        ),
        ({"c": np.zeros(1, np.complex64)}, "row", "tensor type: complex64"),
    ],
)
def test_predict_response_errors(outputs, fmt, fragment):
    with raises(fragment):
        codec.encode_predict_response(outputs, fmt)


def test_response_round_trips_through_request_decoding():
    arr = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    body = codec.encode_predict_response({"x": arr}, "row")
    _, inputs, _ = decode(body.replace(b"predictions", b"instances"))
    same(inputs["x"], arr)


# ------------------------------------------------------------------------------------------------
# REST: classify / regress
# ------------------------------------------------------------------------------------------------


def features(example: example_pb2.Example) -> dict:
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value) if kind else [])
    return out


def test_examples_without_context():
    body = {
        "signature_name": "classify_x",
        "examples": [
            {"n": 3, "flags": [True, False], "x": [1.5, 2.25], "s": "ab", "b": {"b64": "AAE="}},
            {"empty": []},
        ],
    }
    name, request_input = codec.decode_examples_request(json.dumps(body).encode())
    assert name == "classify_x"
    assert request_input.WhichOneof("kind") == "example_list"
    first, second = request_input.example_list.examples
    assert features(first) == {
        "n": ("int64_list", [3]),
        "flags": ("int64_list", [1, 0]),
        "x": ("float_list", [1.5, 2.25]),
        "s": ("bytes_list", [b"ab"]),
        "b": ("bytes_list", [b"\x00\x01"]),
    }
    assert features(second) == {"empty": (None, [])}
    serialized = codec.examples_from_input(request_input)
    assert [example_pb2.Example.FromString(s) for s in serialized] == [first, second]


def test_examples_with_context_are_merged():
    body = {"context": {"region": "lima", "n": 1}, "examples": [{"x": 0.5}, {"x": 2.5, "n": 7}]}
    name, request_input = codec.decode_examples_request(json.dumps(body))
    assert name is None
    assert request_input.WhichOneof("kind") == "example_list_with_context"
    lst = request_input.example_list_with_context
    assert features(lst.context) == {"region": ("bytes_list", [b"lima"]), "n": ("int64_list", [1])}
    merged = [example_pb2.Example.FromString(s) for s in codec.examples_from_input(request_input)]
    assert features(merged[0]) == {
        "region": ("bytes_list", [b"lima"]),
        "n": ("int64_list", [1]),
        "x": ("float_list", [0.5]),
    }
    assert features(merged[1])["n"] == ("int64_list", [7])  # the example wins over the context
    parsed = tf.io.parse_example(
        codec.examples_from_input(request_input),
        {
            "x": tf.io.FixedLenFeature([], tf.float32),
            "region": tf.io.FixedLenFeature([], tf.string),
        },
    )
    np.testing.assert_array_equal(parsed["x"].numpy(), [0.5, 2.5])
    assert parsed["region"].numpy().tolist() == [b"lima", b"lima"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"instances": []},
            "When method is classify, key 'examples' is expected and was not found",
        ),
        ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
        ({"context": [], "examples": [{}]}, "Example must be JSON object but got JSON Array"),
        ({"examples": [{"f": None}]}, "Feature: f has element with unexpected JSON type: Null"),
        ({"examples": [{"f": [[1]]}]}, "Feature: f has element with unexpected JSON type: Array"),
        (
            {"examples": [{"f": {"a": 1}}]},
            "Feature: f has element with unexpected JSON type: Object",
        ),
        (
            {"examples": [{"f": [1, 2.5]}]},
            "Unexpected element type in feature: f expecting type: int64",
        ),
        (
            {"examples": [{"f": [2.5, 1]}]},
            "Unexpected element type in feature: f expecting type: float",
        ),
        (
            {"examples": [{"f": ["a", 1]}]},
            "Unexpected element type in feature: f expecting type: bytes",
        ),
        ({"examples": [{"f": [2**63]}]}, "Feature: f has uint64 element. Only int64 is supported."),
        ({"examples": [{"f": 1e39}]}, "Cannot convert JSON value: 1e+39 to float without loss"),
        ({"examples": [{"f": {"b64": "!"}}]}, "Unable to base64 decode"),
        ({"signature_name": [], "examples": [{}]}, "'signature_name' key must be a string value."),
    ],
)
def test_examples_request_errors(body, fragment):
    with raises(fragment):
        codec.decode_examples_request(json.dumps(body))


def test_examples_from_input_empty():
    with raises("Input is empty."):
        codec.examples_from_input(input_pb2.Input())
    empty = input_pb2.Input()
    empty.example_list_with_context.context.features.feature["a"].int64_list.value.append(1)
    with raises("Input is empty."):
        codec.examples_from_input(empty)


def test_classify_and_regress_responses():
    result = classification_pb2.ClassificationResult()
    row = result.classifications.add()
    row.classes.add(label="cat", score=0.1)
    row.classes.add(label="dog", score=0.9)
    result.classifications.add().classes.add(label="cat", score=1.0)
    out = codec.encode_classify_response(result)
    assert orjson.loads(out) == {"results": [[["cat", 0.1], ["dog", 0.9]], [["cat", 1.0]]]}
    assert b"0.1]" in out

    regression = regression_pb2.RegressionResult()
    for value in (1.5, 0.1, float("nan")):
        regression.regressions.add(value=value)
    assert codec.encode_regress_response(regression) == b'{"results":[1.5,0.1,NaN]}'

    with raises("Cannot convert empty ClassificationResults to JSON"):
        codec.encode_classify_response(classification_pb2.ClassificationResult())
    with raises("Cannot convert empty RegressionResults to JSON"):
        codec.encode_regress_response(regression_pb2.RegressionResult())


# ------------------------------------------------------------------------------------------------
# REST: status, metadata, errors
# ------------------------------------------------------------------------------------------------


def test_status_json():
    response = get_model_status_pb2.GetModelStatusResponse()
    status = response.model_version_status.add(version=3, state=30)
    status.status.error_code = 0
    loaded = orjson.loads(codec.encode_status_json(response))
    assert loaded == {
        "model_version_status": [
            {
                "version": "3",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def test_metadata_json():
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    signature.inputs["x"].CopyFrom(info(T.DT_FLOAT, [-1, 3], "serving_default_x:0"))
    signature.outputs["y"].CopyFrom(info(T.DT_STRING, None, "y:0"))
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig_map.signature_def["serving_default"].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = "crop"
    response.model_spec.version.value = 7
    packed = any_pb2.Any()
    packed.Pack(sig_map)
    response.metadata["signature_def"].CopyFrom(packed)

    raw = codec.encode_metadata_json(response)
    loaded = orjson.loads(raw)
    assert loaded["model_spec"] == {"name": "crop", "signature_name": "", "version": "7"}
    sig = loaded["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["x"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "3", "name": ""}],
            "unknown_rank": False,
        },
        "name": "serving_default_x:0",
    }
    assert sig["outputs"]["y"]["tensor_shape"] == {"dim": [], "unknown_rank": True}
    # Key order of the C++ JSON printer: plain fields first, oneof members (name, version) last.
    assert list(sig["inputs"]["x"]) == ["dtype", "tensor_shape", "name"]
    assert list(loaded["model_spec"]) == ["name", "signature_name", "version"]


def test_metadata_json_errors():
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    with raises("Failed to find 'signature_def' key", grpc.StatusCode.INTERNAL):
        codec.encode_metadata_json(response)
    packed = any_pb2.Any()
    packed.Pack(get_model_status_pb2.GetModelStatusResponse())
    response.metadata["signature_def"].CopyFrom(packed)
    with raises("Failed to unpack 'Any' object to 'SignatureDefMap'.", grpc.StatusCode.INTERNAL):
        codec.encode_metadata_json(response)


def test_error_json():
    assert orjson.loads(codec.error_json('bad "input"\n')) == {"error": 'bad "input"\n'}


# ------------------------------------------------------------------------------------------------
# Fuzzing: the fast JSON path agrees with the exact (json_tensor.cc-shaped) slow path
# ------------------------------------------------------------------------------------------------

json_leaves = (
    st.integers(-(2**63), 2**64 - 1)  # what JSON parsing yields (others become floats)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.text(max_size=3)
    | st.none()
    | st.builds(lambda b: {"b64": base64.b64encode(b).decode()}, st.binary(max_size=4))
)
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3), max_leaves=12)
JSON_DTYPES = [
    T.DT_FLOAT,
    T.DT_DOUBLE,
    T.DT_INT32,
    T.DT_INT8,
    T.DT_UINT8,
    T.DT_INT64,
    T.DT_UINT32,
    T.DT_UINT64,
    T.DT_BOOL,
    T.DT_STRING,
]


@SETTINGS
@given(json_values, st.sampled_from(JSON_DTYPES))
def test_fast_json_path_agrees_with_exact_path(value, dtype):
    shape = codec._dense_shape(value)
    flat: list = []
    try:
        codec._fill(value, 0, shape, dtype, flat)
        exact = codec._flat_to_array(flat, shape, dtype)
    except ServingError:
        exact = None
    fast = codec._fast_tensor(value, dtype)
    if fast is not None:
        assert exact is not None, value
        same(fast, exact)
    # Through the public entry point: either a typed array or an INVALID_ARGUMENT.
    try:
        _, inputs, _ = codec.decode_predict_request(
            json.dumps({"inputs": value}), {"v": info(dtype)}
        )
    except ServingError as err:
        assert exact is None and err.code == grpc.StatusCode.INVALID_ARGUMENT
    else:
        assert exact is not None
        same(inputs["v"], exact)


@SETTINGS
@given(st.lists(json_values, min_size=1, max_size=4), st.sampled_from(JSON_DTYPES))
def test_row_fast_path_agrees_with_row_exact_path(instances, dtype):
    sig = {"v": info(dtype)}
    try:
        exact = codec._rows_slow(instances, sig, False, ["v"])
    except ServingError:
        exact = None
    fast = codec._rows_fast(instances, sig, False, ["v"])
    if fast is not None:
        assert exact is not None, instances
        same(fast["v"], exact["v"])


def test_parsed_body_entry_points():
    doc = codec.parse_json(b'{"signature_name": "s", "inputs": {"x": [[1, 2, 3]]}}')
    assert codec.signature_name_of(doc) == "s"
    inputs, fmt = codec.decode_predict_json(doc, ONE)
    assert fmt == "columnar"
    same(inputs["x"], np.array([[1, 2, 3]], np.float32))
    assert codec.signature_name_of({}) is None
    with raises("Is not object"):
        codec.parse_json(b'"x"')
