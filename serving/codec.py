"""Tensor and JSON codecs of TensorFlow Serving's gRPC and REST APIs (the request hot path).

Three groups of functions:

* `TensorProto` <-> `numpy` conversion (`tensor_proto_to_ndarray`, `ndarray_to_tensor_proto`) with
  the semantics of TensorFlow's `Tensor::FromProto` / `Tensor::AsProtoTensorContent`.
* Request validation against a signature (`check_inputs`), worded like TF Serving's
  `predict_util.cc` and `saved_model/util.cc`.
* The REST JSON encoding of `tensorflow_serving/util/json_tensor.cc` (predict in row and columnar
  format, classify/regress examples, their responses) and the JSON rendering of the model status
  and metadata responses (`http_rest_api_util.cc`).

Every malformed input raises `serving.errors.ServingError` (INVALID_ARGUMENT unless TF Serving uses
another code), with TF Serving's message where it has one.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    regression_pb2,
)

from serving.errors import ServingError, invalid_argument

__all__ = [
    "check_inputs",
    "decode_examples_request",
    "decode_predict_json",
    "decode_predict_request",
    "encode_classify_response",
    "encode_metadata_json",
    "encode_predict_response",
    "encode_regress_response",
    "encode_status_json",
    "error_json",
    "examples_from_input",
    "ndarray_to_tensor_proto",
    "parse_json",
    "signature_name_of",
    "tensor_proto_to_ndarray",
]

TensorInfo = meta_graph_pb2.TensorInfo
SignatureInputs = Mapping[str, meta_graph_pb2.TensorInfo]

DEFAULT_SIGNATURE = "serving_default"
ROW = "row"
COLUMNAR = "columnar"

_DT = types_pb2
_STRING = _DT.DT_STRING

# TF dtype -> numpy dtype (little-endian, TensorFlow's wire order for tensor_content).
_DT_TO_NP: dict[int, np.dtype] = {
    _DT.DT_FLOAT: np.dtype("<f4"),
    _DT.DT_DOUBLE: np.dtype("<f8"),
    _DT.DT_HALF: np.dtype("<f2"),
    _DT.DT_BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    _DT.DT_INT8: np.dtype("i1"),
    _DT.DT_INT16: np.dtype("<i2"),
    _DT.DT_INT32: np.dtype("<i4"),
    _DT.DT_INT64: np.dtype("<i8"),
    _DT.DT_UINT8: np.dtype("u1"),
    _DT.DT_UINT16: np.dtype("<u2"),
    _DT.DT_UINT32: np.dtype("<u4"),
    _DT.DT_UINT64: np.dtype("<u8"),
    _DT.DT_BOOL: np.dtype("?"),
    _DT.DT_COMPLEX64: np.dtype("<c8"),
    _DT.DT_COMPLEX128: np.dtype("<c16"),
}
_NP_TO_DT: dict[np.dtype, int] = {v: k for k, v in _DT_TO_NP.items()}

# The repeated `*_val` field Tensor::FromProto reads for each dtype.
_VAL_FIELD: dict[int, str] = {
    _DT.DT_FLOAT: "float_val",
    _DT.DT_DOUBLE: "double_val",
    _DT.DT_HALF: "half_val",
    _DT.DT_BFLOAT16: "half_val",
    _DT.DT_INT8: "int_val",
    _DT.DT_INT16: "int_val",
    _DT.DT_INT32: "int_val",
    _DT.DT_UINT8: "int_val",
    _DT.DT_UINT16: "int_val",
    _DT.DT_INT64: "int64_val",
    _DT.DT_UINT32: "uint32_val",
    _DT.DT_UINT64: "uint64_val",
    _DT.DT_BOOL: "bool_val",
    _DT.DT_COMPLEX64: "scomplex_val",
    _DT.DT_COMPLEX128: "dcomplex_val",
}

# Output dtypes json_tensor.cc can write (AddSingleValueAndAdvance).
_JSON_WRITABLE = frozenset(
    {
        _DT.DT_FLOAT,
        _DT.DT_DOUBLE,
        _DT.DT_INT32,
        _DT.DT_INT16,
        _DT.DT_INT8,
        _DT.DT_UINT8,
        _DT.DT_STRING,
        _DT.DT_INT64,
        _DT.DT_BOOL,
        _DT.DT_UINT32,
        _DT.DT_UINT64,
    }
)

_FLT_MAX = float(np.finfo(np.float32).max)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT32_MAX, _UINT64_MAX = 2**32 - 1, 2**64 - 1
# Largest integers a float/double holds exactly, as json_tensor.cc's IsLosslessDecimal counts them.
_MAX_EXACT_INT = {_DT.DT_FLOAT: 2**24 - 1, _DT.DT_DOUBLE: 2**53 - 1}
_SMALL_INT_TYPES = frozenset({_DT.DT_INT32, _DT.DT_INT16, _DT.DT_INT8, _DT.DT_UINT8})

_NP_OPTS = orjson.OPT_SERIALIZE_NUMPY


# --------------------------------------------------------------------------------------------
# Names and small helpers
# --------------------------------------------------------------------------------------------


def dtype_name(dtype: int) -> str:
    """TensorFlow's `DataTypeString`: `DT_FLOAT` -> "float", `DT_STRING` -> "string"."""
    if dtype == _DT.DT_INVALID:
        return "INVALID"
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"unknown dtype enum ({dtype})"


def numpy_to_dtype(dtype: np.dtype) -> int | None:
    """The TF dtype enum a numpy dtype maps to (object/bytes/str -> DT_STRING), None if none."""
    dt = _NP_TO_DT.get(dtype)
    if dt is not None:
        return dt
    if dtype.kind in "OSU":
        return _STRING
    if dtype.byteorder not in "=|<":  # big-endian twin of a supported dtype
        return _NP_TO_DT.get(dtype.newbyteorder("<"))
    return None


def _shape_str(dims: Iterable[int]) -> str:
    return "[" + ",".join("?" if d < 0 else str(d) for d in dims) + "]"


def _status_str(err: ServingError) -> str:
    # absl::Status::ToString(), as json_tensor.cc embeds nested errors.
    return f"{err.code.name}: {err.message}"


def _parse_error(name: str) -> ServingError:
    return invalid_argument(f"tensor parsing error: {name}")


# --------------------------------------------------------------------------------------------
# TensorProto <-> numpy
# --------------------------------------------------------------------------------------------


def _decode_string_list(content: bytes, n: int, name: str) -> list[bytes]:
    """Decodes TF's DT_STRING tensor_content: n varint32 lengths, then the concatenated bytes."""
    lengths = []
    pos = 0
    size = len(content)
    for _ in range(n):
        value = shift = 0
        while True:
            if pos >= size or shift > 28:
                raise _parse_error(name)
            b = content[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        lengths.append(value)
    out = []
    for length in lengths:
        end = pos + length
        if end > size:
            raise _parse_error(name)
        out.append(content[pos:end])
        pos = end
    if pos != size:
        raise _parse_error(name)
    return out


# Wire numbers of the fixed-width repeated value fields (read straight from the wire, see below).
_FIXED_WIDTH_FIELD = {"float_val": (5, "<f4"), "double_val": (6, "<f8")}


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fixed_width_values(proto: tensor_pb2.TensorProto, field: str) -> np.ndarray:
    """A float_val/double_val field as an array, read from the wire bytes (iterating is slow)."""
    number, np_dtype = _FIXED_WIDTH_FIELD[field]
    data = proto.SerializeToString()
    chunks = []
    pos, size = 0, len(data)
    while pos < size:
        tag, pos = _read_varint(data, pos)
        wire_type = tag & 7
        if wire_type == 0:
            _, pos = _read_varint(data, pos)
            continue
        if wire_type == 2:
            length, pos = _read_varint(data, pos)
        elif wire_type == 1:
            length = 8
        elif wire_type == 5:
            length = 4
        else:  # groups: not in TensorProto; take the slow road
            return np.array(getattr(proto, field), dtype=np_dtype)
        if tag >> 3 == number:
            chunks.append(data[pos : pos + length])
        pos += length
    return np.frombuffer(b"".join(chunks), dtype=np_dtype)


def _fill_to(flat: np.ndarray, n: int) -> np.ndarray:
    """Tensor::FromProto's rule for short value lists: repeat the last value; extra values drop."""
    count = flat.shape[0]
    if count >= n:
        return flat[:n] if count > n else flat
    if count == 1:
        return np.full(n, flat[0], dtype=flat.dtype)
    return np.concatenate([flat, np.full(n - count, flat[-1], dtype=flat.dtype)])


def tensor_proto_to_ndarray(proto: tensor_pb2.TensorProto, name: str) -> np.ndarray:
    """Converts a request `TensorProto` to numpy like TensorFlow's `Tensor::FromProto`.

    `tensor_content` is wrapped with `np.frombuffer` without a copy (the result is then
    read-only). Repeated `*_val` fields are converted to the tensor's dtype; fewer values than the
    shape needs are completed with the last value (one value fills the whole tensor, none gives
    zeros), as `tf.make_ndarray` does. DT_STRING gives an object array of `bytes`.

    Args:
        proto: The tensor.
        name: The input alias, used in error messages.

    Returns:
        The array, with the proto's shape and the numpy twin of its dtype.

    Raises:
        ServingError: INVALID_ARGUMENT "tensor parsing error: <name>" for DT_INVALID or an
            unsupported dtype, a negative or unknown-rank shape, or content whose size does not
            match the shape; also for a shape of more than 2**63 - 1 elements (TensorShape's
            IsValid) or one that cannot be allocated (Tensor::FromProto fails the same way).
    """
    shape_proto = proto.tensor_shape
    if shape_proto.unknown_rank:
        raise _parse_error(name)
    shape = tuple(d.size for d in shape_proto.dim)
    n = 1
    for s in shape:
        n *= s
        if s < 0 or n > _INT64_MAX:  # TensorShape::IsValid (MultiplyWithoutOverflow)
            raise _parse_error(name)
    try:
        return _tensor_from_proto(proto, name, shape, n)
    except (MemoryError, ValueError, OverflowError):  # numpy could not allocate or shape it
        raise _parse_error(name) from None


def _tensor_from_proto(
    proto: tensor_pb2.TensorProto, name: str, shape: tuple[int, ...], n: int
) -> np.ndarray:
    dt = proto.dtype
    content = proto.tensor_content

    if dt == _STRING:
        if content:
            values = _decode_string_list(content, n, name)
        else:
            values = list(proto.string_val)
            count = len(values)
            if count > n:
                del values[n:]
            elif count < n:
                values.extend([values[-1] if values else b""] * (n - count))
        arr = np.empty(n, dtype=object)
        arr[:] = values
        return arr.reshape(shape)

    np_dtype = _DT_TO_NP.get(dt)
    if np_dtype is None:
        raise _parse_error(name)
    if content:
        if len(content) != n * np_dtype.itemsize:
            raise _parse_error(name)
        return np.frombuffer(content, dtype=np_dtype).reshape(shape)

    field = _VAL_FIELD[dt]
    vals = getattr(proto, field)
    count = len(vals)
    if not count or n == 0:
        return np.zeros(shape, dtype=np_dtype)
    if count > 16 and field in _FIXED_WIDTH_FIELD:
        flat = _fixed_width_values(proto, field)
    elif dt == _DT.DT_HALF or dt == _DT.DT_BFLOAT16:
        flat = np.array(vals, dtype=np.int32).astype(np.uint16).view(np_dtype)
    elif dt == _DT.DT_COMPLEX64 or dt == _DT.DT_COMPLEX128:
        parts = np.array(vals, dtype=np.float32 if dt == _DT.DT_COMPLEX64 else np.float64)
        parts = parts[: parts.shape[0] // 2 * 2]
        if not parts.shape[0]:
            return np.zeros(shape, dtype=np_dtype)
        flat = parts.view(np_dtype)
    elif np_dtype.itemsize < 4 and dt != _DT.DT_BOOL:
        # int8/16, uint8/16 travel in int_val; static_cast semantics (wrap around).
        flat = np.array(vals, dtype=np.int32).astype(np_dtype)
    else:
        flat = np.array(vals, dtype=np_dtype)
    return _fill_to(flat, n).reshape(shape)


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise invalid_argument(
        f"Failed to convert a numpy object array element of type {type(value).__name__} "
        "to a string tensor"
    )


def ndarray_to_tensor_proto(array: Any) -> tensor_pb2.TensorProto:
    """Converts a numpy array (or array-like) to a `TensorProto`.

    Numeric and bool arrays are written as dtype + shape + little-endian `tensor_content`
    (`ndarray.tobytes`, the only copy made on our side). Object, bytes and str arrays become
    DT_STRING with `string_val` (str elements are UTF-8 encoded).

    Raises:
        ServingError: INVALID_ARGUMENT for dtypes TensorFlow has no twin of (datetime, void, ...)
            or object arrays holding something other than str/bytes.
    """
    arr = np.asarray(array)
    np_dtype = arr.dtype
    dt = _NP_TO_DT.get(np_dtype)
    proto = tensor_pb2.TensorProto()
    if dt is None:
        dt = numpy_to_dtype(np_dtype)
        if dt is None:
            raise invalid_argument(f"Unsupported numpy dtype for a tensor: {np_dtype}")
        if dt == _STRING:
            proto.dtype = _STRING
            dims = proto.tensor_shape.dim
            for s in arr.shape:
                dims.add(size=s)
            values = arr.ravel().tolist()
            if np_dtype.kind == "S":
                proto.string_val.extend(values)
            else:
                proto.string_val.extend([_to_bytes(v) for v in values])
            return proto
        arr = arr.astype(np_dtype.newbyteorder("<"))
    proto.dtype = dt
    dims = proto.tensor_shape.dim
    for s in arr.shape:
        dims.add(size=s)
    proto.tensor_content = arr.tobytes()
    return proto


# --------------------------------------------------------------------------------------------
# Signature validation
# --------------------------------------------------------------------------------------------


def _batch_dim_declared(info: meta_graph_pb2.TensorInfo) -> bool:
    """Whether the signature leaves dim 0 open (unknown rank, or a leading dim of -1)."""
    if not info.HasField("tensor_shape"):
        return True
    shape = info.tensor_shape
    return shape.unknown_rank or (len(shape.dim) > 0 and shape.dim[0].size < 0)


def check_inputs(
    inputs: Mapping[str, np.ndarray],
    signature_inputs: SignatureInputs,
    signature_name: str,
) -> None:
    """Validates request inputs against a signature the way TF Serving's Predict does.

    Checks, in this order: the set of input aliases (predict_util.cc's `VerifyRequestInputsSize`
    and saved_model's `GetInputValues` wording), each dtype (the session's "Expects arg[i] to be
    float but string is provided"; `i` counts inputs in sorted alias order), each shape against
    the signature's known dims, and that inputs whose signature leaves dim 0 open share one batch
    size (TF Serving's batching wording). No dtype coercion: JSON requests are already typed by
    `decode_predict_request`.

    Raises:
        ServingError: INVALID_ARGUMENT naming what does not match.
    """
    request_names = set(inputs)
    signature_names = sorted(signature_inputs)
    if len(request_names) != len(signature_names):
        sig_set = set(signature_names)
        extra = ",".join(sorted(request_names - sig_set))
        missing = ",".join(sorted(sig_set - request_names))
        raise invalid_argument(
            f"input size does not match signature: {len(request_names)}!={len(signature_names)} "
            f"len({{{','.join(sorted(request_names))}}}) != len({{{','.join(signature_names)}}})."
            f" Sent extra: {{{extra}}}. Missing but required: {{{missing}}}."
        )
    for alias in signature_names:
        if alias not in inputs:
            raise invalid_argument(
                f"Signature input alias: {alias}(feed name: {signature_inputs[alias].name}) not "
                "found in request and no default value provided. Inputs expected to be in the "
                f"request {{{','.join(sorted(request_names))}}}, or default input alias set: "
            )

    batch_size = None
    for index, alias in enumerate(signature_names):
        info = signature_inputs[alias]
        arr = inputs[alias]
        actual = numpy_to_dtype(arr.dtype)
        if actual != info.dtype:
            actual_name = dtype_name(actual) if actual is not None else str(arr.dtype)
            raise invalid_argument(
                f"Expects arg[{index}] to be {dtype_name(info.dtype)} but {actual_name} is provided"
            )
        if info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank:
            expected = [d.size for d in info.tensor_shape.dim]
            shape = arr.shape
            if len(expected) != len(shape) or any(
                e >= 0 and e != a for e, a in zip(expected, shape, strict=True)
            ):
                raise invalid_argument(
                    f"Input '{alias}' has shape {_shape_str(shape)}, which is not compatible "
                    f"with shape {_shape_str(expected)} of signature '{signature_name}'"
                )
        if arr.ndim >= 1 and _batch_dim_declared(info):
            if batch_size is None:
                batch_size = arr.shape[0]
            elif arr.shape[0] != batch_size:
                raise invalid_argument(
                    "Batching Run() input tensors must have equal 0th-dimension size"
                )


# --------------------------------------------------------------------------------------------
# JSON parsing and value formatting (json_tensor.cc)
# --------------------------------------------------------------------------------------------

_JSON_ERRORS = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}


def _innermost_container(text: str, pos: int) -> str:
    """'[' or '{': the innermost container open at `pos` (for rapidjson's comma messages)."""
    stack = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "["


def _parse_int(text: str) -> int | float:
    value = int(text)
    # rapidjson keeps integers beyond (u)int64 as doubles.
    return value if _INT64_MIN <= value <= _UINT64_MAX else float(value)


def _parse_json(body: bytes | str) -> Any:
    """Parses a request body; errors read like TF Serving's rapidjson ones."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # Slow path: rapidjson (kParseNanAndInfFlag) also takes NaN/Infinity, and does not validate
    # UTF-8; the stdlib parser does the former, surrogateescape the latter.
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
    if not text.strip():
        raise invalid_argument(f"JSON Parse error: The document is empty. at offset: {len(text)}")
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as err:
        msg = err.msg
        if msg == "Expecting ',' delimiter":
            if _innermost_container(text, err.pos) == "{":
                msg = "Missing a comma or '}' after an object member."
            else:
                msg = "Missing a comma or ']' after an array element."
        elif msg.startswith("Unterminated string"):
            msg = "Missing a closing quotation mark in string."
        else:
            msg = _JSON_ERRORS.get(msg, msg)
        raise invalid_argument(f"JSON Parse error: {msg} at offset: {err.pos}") from None
    except RecursionError:
        raise invalid_argument(
            "JSON Parse error: Terminate parsing due to Handler error."
        ) from None


def _json_type(value: Any) -> str:
    """json_tensor.cc's JsonTypeString."""
    if value is True:
        return "True"
    if value is False:
        return "False"
    if value is None:
        return "Null"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _format_decimal(value: float, single: bool) -> str:
    """json_tensor.cc's WriteDecimal: 6 significant digits unless that does not round-trip."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    if single:
        f = np.float32(value)
        text = f"{float(f):.6g}"
        if np.float32(float(text)) != f:
            text = f"{float(f):.9g}"
    else:
        text = f"{value:.6g}"
        if float(text) != value:
            text = f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _json_value_to_string(value: Any) -> str:
    """json_tensor.cc's JsonValueToString (rapidjson PrettyWriter, 4-space indent)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        # rapidjson's IsFloat(): a double within float range is printed as a float.
        return _format_decimal(value, single=math.isfinite(value) and abs(value) <= _FLT_MAX)
    if isinstance(value, int):
        return str(value)
    try:
        return json.dumps(value, indent=4, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {_json_value_to_string(value)} Type: {_json_type(value)} is not of "
        f"expected type: {dtype_name(dtype)}"
    )


def _format_error(doc: Any, *parts: str) -> ServingError:
    return invalid_argument(f"JSON Value: {_json_value_to_string(doc)} {''.join(parts)}")


def _lossy_error(value: Any, target: str) -> ServingError:
    return invalid_argument(
        f"Cannot convert JSON value: {_json_value_to_string(value)} to {target} without loss of "
        "precision."
    )


def _is_b64_object(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _b64_decode(text: str) -> bytes:
    """absl::Base64Unescape: standard alphabet, padding optional."""
    rem = len(text) % 4
    if rem == 1:
        raise invalid_argument("Unable to base64 decode")
    if rem:
        text += "=" * (4 - rem)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _decode_b64_object(value: Any) -> bytes:
    if not _is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {_json_value_to_string(value)} not formatted correctly for base64 data"
        )
    return _b64_decode(value["b64"])


def _encode_str(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")  # raw non-UTF-8 bytes of the body
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass")  # \ud800-style escapes


def _is_lossless(value: int | float, dtype: int) -> bool:
    """json_tensor.cc's IsLosslessDecimal<float|double>."""
    if type(value) is int:
        limit = _MAX_EXACT_INT[dtype]
        return -limit <= value <= limit
    if not math.isfinite(value):
        return True
    return dtype == _DT.DT_DOUBLE or -_FLT_MAX <= value <= _FLT_MAX


def _convert_leaf(value: Any, dtype: int) -> Any:
    """json_tensor.cc's AddValueToTensor for one JSON scalar; returns the Python value."""
    t = type(value)
    if dtype == _DT.DT_FLOAT or dtype == _DT.DT_DOUBLE:
        if t is not int and t is not float:
            raise _type_error(value, dtype)
        if not _is_lossless(value, dtype):
            raise _lossy_error(value, "float" if dtype == _DT.DT_FLOAT else "double")
        return value
    if dtype in _SMALL_INT_TYPES:
        if t is not int or not _INT32_MIN <= value <= _INT32_MAX:
            raise _type_error(value, dtype)
        return value
    if dtype == _STRING:
        if t is not str:
            raise _type_error(value, dtype)
        return _encode_str(value)
    if dtype == _DT.DT_INT64:
        if t is not int or not _INT64_MIN <= value <= _INT64_MAX:
            raise _type_error(value, dtype)
        return value
    if dtype == _DT.DT_BOOL:
        if t is not bool:
            raise _type_error(value, dtype)
        return value
    if dtype == _DT.DT_UINT32:
        if t is not int or not 0 <= value <= _UINT32_MAX:
            raise _type_error(value, dtype)
        return value
    if dtype == _DT.DT_UINT64:
        if t is not int or not 0 <= value <= _UINT64_MAX:
            raise _type_error(value, dtype)
        return value
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {_json_value_to_string(value)} to type: {dtype_name(dtype)}",
    )


def _dense_shape(value: Any) -> list[int]:
    """json_tensor.cc's GetDenseTensorShape: follow the first element down."""
    shape = []
    while type(value) is list:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list) -> None:
    """json_tensor.cc's FillTensorProto (exact errors; the slow path)."""
    rank = len(shape)
    if type(value) is not list:
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {_json_value_to_string(value)} found at incorrect level: "
                f"{level + 1} in the JSON DOM. Expected at level: {rank}"
            )
        if type(value) is dict:
            if dtype != _STRING:
                raise _type_error(value, dtype)
            out.append(_decode_b64_object(value))
        else:
            out.append(_convert_leaf(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _flat_to_array(flat: list, shape: list[int], dtype: int) -> np.ndarray:
    if dtype == _STRING:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    elif dtype == _DT.DT_FLOAT:
        arr = np.array(flat, dtype=np.float64).astype(np.float32)
    elif dtype == _DT.DT_DOUBLE:
        arr = np.array(flat, dtype=np.float64)
    elif dtype in _SMALL_INT_TYPES:
        arr = np.array(flat, dtype=np.int64).astype(_DT_TO_NP[dtype])
    elif dtype in _DT_TO_NP:
        arr = np.array(flat, dtype=_DT_TO_NP[dtype])
    else:
        arr = np.empty(len(flat), dtype=object)
    return arr.reshape(shape)


def _fast_tensor(value: Any, dtype: int) -> np.ndarray | None:
    """The common case of `_json_to_tensor` at C speed; None when anything needs a closer look."""
    shape = _dense_shape(value)
    rank = len(shape)
    if rank == 0:
        rows: list = [[value]]
    else:
        rows = [value]
        for level in range(1, rank):
            size = shape[level]
            nxt: list = []
            for row in rows:
                for child in row:
                    if type(child) is not list or len(child) != size:
                        return None
                nxt.extend(row)
            rows = nxt
    types: set = set()
    for row in rows:
        types.update(map(type, row))
    if list in types:
        return None
    if not types:  # no leaves: an empty tensor
        np_dtype = _DT_TO_NP.get(dtype, np.dtype(object))
        return np.zeros(shape, dtype=np_dtype)

    if dtype == _DT.DT_FLOAT or dtype == _DT.DT_DOUBLE:
        if not types <= {int, float}:
            return None
        arr = np.array(value, dtype=np.float64)
        if int in types:
            limit = _MAX_EXACT_INT[dtype]
            if float in types:
                for row in rows:
                    for x in row:
                        if type(x) is int and not -limit <= x <= limit:
                            return None
            elif arr.size and float(np.abs(arr).max()) > limit:
                return None
        if dtype == _DT.DT_DOUBLE:
            return arr
        if float in types:
            big = np.abs(arr) > _FLT_MAX
            if big.any() and np.isfinite(arr[big]).any():
                return None
        return arr.astype(np.float32)
    if dtype in _SMALL_INT_TYPES or dtype == _DT.DT_INT64 or dtype == _DT.DT_UINT32:
        if types != {int}:
            return None
        try:
            arr = np.array(value, dtype=np.int64)
        except OverflowError:
            return None
        if dtype != _DT.DT_INT64:
            lo, hi = (_INT32_MIN, _INT32_MAX) if dtype != _DT.DT_UINT32 else (0, _UINT32_MAX)
            if int(arr.min()) < lo or int(arr.max()) > hi:
                return None
            return arr.astype(_DT_TO_NP[dtype])
        return arr
    if dtype == _DT.DT_UINT64:
        if types != {int}:
            return None
        try:
            return np.array(value, dtype=np.uint64)
        except OverflowError:
            return None
    if dtype == _DT.DT_BOOL:
        return np.array(value, dtype=bool) if types == {bool} else None
    if dtype == _STRING:
        if not types <= {str, dict}:
            return None
        flat: list = []
        try:
            if dict in types:
                for row in rows:
                    for x in row:
                        if type(x) is str:
                            flat.append(x.encode("utf-8"))
                        elif _is_b64_object(x):
                            flat.append(_b64_decode(x["b64"]))
                        else:
                            return None
            else:
                for row in rows:
                    flat.extend([x.encode("utf-8") for x in row])
        except (UnicodeEncodeError, ServingError):
            return None
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    return None


def _json_to_tensor(value: Any, dtype: int) -> tuple[np.ndarray, int]:
    """One JSON value to a tensor of `dtype` (json_tensor.cc rules). Returns (array, leaf count)."""
    arr = _fast_tensor(value, dtype)
    if arr is not None:
        return arr, arr.size
    shape = _dense_shape(value)
    out: list = []
    _fill(value, 0, shape, dtype, out)
    return _flat_to_array(out, shape, dtype), len(out)


def _signature_name(doc: dict) -> str | None:
    if "signature_name" not in doc:
        return None
    name = doc["signature_name"]
    if type(name) is not str:
        raise invalid_argument(
            f"JSON Value: {_json_value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return _proto_text(name)


def _parse_request_object(body: bytes | str) -> dict:
    doc = _parse_json(body)
    if type(doc) is not dict:
        raise _format_error(doc, "Is not object")
    return doc


# --------------------------------------------------------------------------------------------
# Predict request
# --------------------------------------------------------------------------------------------


def _rows_slow(
    instances: list, infos: SignatureInputs, objects: bool, names: list[str]
) -> dict[str, np.ndarray]:
    """json_tensor.cc's FillTensorMapFromInstancesList, element by element (exact errors)."""
    input_names = set(names)
    flats: dict[str, list] = {}
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}

    def add_item(item: Any, name: str) -> None:
        if name not in infos:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        shape = _dense_shape(item)
        out: list = []
        _fill(item, 0, shape, infos[name].dtype, out)
        if name not in sizes:
            sizes[name] = len(out)
            shapes[name] = shape
            flats[name] = out
            return
        if sizes[name] != len(out):
            raise invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {len(out)}")
        if shapes[name] != shape:
            raise invalid_argument(
                f"Expecting shape {_shape_str(shapes[name])} but got: {_shape_str(shape)}"
            )
        flats[name].extend(out)

    for index, elem in enumerate(instances):
        is_object = type(elem) is dict and not _is_b64_object(elem)
        if objects:
            if not is_object:
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, item in elem.items():
                try:
                    add_item(item, name)
                except ServingError as err:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {_status_str(err)}"
                    ) from None
            if set(elem) != input_names:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_json_value_to_string(elem)} must only have keys: {','.join(names)}"
                )
        else:
            if is_object:
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                add_item(elem, names[0])
            except ServingError as err:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {_status_str(err)}"
                ) from None
    count = len(instances)
    return {
        name: _flat_to_array(flats[name], [count, *shapes[name]], infos[name].dtype)
        for name in flats
    }


def _rows_fast(
    instances: list, infos: SignatureInputs, objects: bool, names: list[str]
) -> dict[str, np.ndarray] | None:
    if not objects:
        arr = _fast_tensor(instances, infos[names[0]].dtype)
        return None if arr is None else {names[0]: arr}
    key_set = set(names)
    count = len(names)
    b64_possible = "b64" in key_set
    for elem in instances:
        if (
            type(elem) is not dict
            or len(elem) != count
            or elem.keys() != key_set
            or (b64_possible and _is_b64_object(elem))
        ):
            return None
    result = {}
    for name in names:
        arr = _fast_tensor([elem[name] for elem in instances], infos[name].dtype)
        if arr is None:
            return None
        result[name] = arr
    return result


def _decode_columnar(value: Any, infos: SignatureInputs, names: list[str]) -> dict:
    """json_tensor.cc's FillTensorMapFromInputsMap."""
    if type(value) is not dict or _is_b64_object(value):
        if len(names) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: _json_to_tensor(value, infos[names[0]].dtype)[0]}
    result = {}
    for name in names:
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        result[name] = _json_to_tensor(value[name], infos[name].dtype)[0]
    return result


def parse_json(body: bytes | str) -> dict:
    """Parses a REST request body into its top-level JSON object (json_tensor.cc's ParseJson).

    Raises:
        ServingError: INVALID_ARGUMENT "JSON Parse error: ..." for malformed JSON (rapidjson's
            wording and offset), "JSON Value: ... Is not object" for a non-object document.
    """
    return _parse_request_object(body)


def signature_name_of(doc: dict) -> str | None:
    """The request's `signature_name`, None when absent.

    Raises:
        ServingError: INVALID_ARGUMENT when it is not a string (json_tensor.cc's FillSignature).
    """
    return _signature_name(doc)


def decode_predict_json(
    doc: dict, signature_inputs: SignatureInputs
) -> tuple[dict[str, np.ndarray], str]:
    """`decode_predict_request` for an already parsed body (see `parse_json`).

    Returns:
        (inputs by alias, "row" or "columnar").
    """
    names = sorted(signature_inputs)
    if not names:
        raise invalid_argument(
            f"Failed to get input map for signature: {_signature_name(doc) or 'DEFAULT'}"
        )
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise _format_error(
            doc,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if has_instances:
        instances = doc["instances"]
        if type(instances) is not list:
            raise _format_error(doc, "Excepting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        first = instances[0]
        if type(first) is not dict and len(names) > 1:
            raise invalid_argument(
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map"
            )
        objects = type(first) is dict and not _is_b64_object(first)
        inputs = _rows_fast(instances, signature_inputs, objects, names)
        if inputs is None:
            inputs = _rows_slow(instances, signature_inputs, objects, names)
        return inputs, ROW
    if has_inputs:
        return _decode_columnar(doc["inputs"], signature_inputs, names), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def decode_predict_request(
    body: bytes | str,
    signature_inputs: SignatureInputs | Callable[[str], SignatureInputs],
) -> tuple[str | None, dict[str, np.ndarray], str]:
    """Decodes a REST `:predict` body (json_tensor.cc's FillPredictRequestFromJson).

    Values are typed by the signature: JSON integers fill float tensors (if exactly
    representable), floats never fill integer tensors, strings and `{"b64": ...}` fill DT_STRING
    (as `bytes`), `true`/`false` only DT_BOOL; 8/16-bit integer tensors wrap like TF's casts.

    Args:
        body: The request body.
        signature_inputs: The signature's `inputs` map, or a function from the resolved signature
            name ("serving_default" when the body has none) to it, which may raise its own
            ServingError (e.g. for an unknown signature).

    Returns:
        (the body's `signature_name` or None, inputs by alias, "row" for `instances` or
        "columnar" for `inputs`).

    Raises:
        ServingError: INVALID_ARGUMENT with json_tensor.cc's message (UNIMPLEMENTED for a columnar
            value of a dtype JSON cannot express, such as half).
    """
    doc = _parse_request_object(body)
    signature_name = _signature_name(doc)
    if callable(signature_inputs):
        signature_inputs = signature_inputs(signature_name or DEFAULT_SIGNATURE)
    inputs, fmt = decode_predict_json(doc, signature_inputs)
    return signature_name, inputs, fmt


# --------------------------------------------------------------------------------------------
# JSON writing
# --------------------------------------------------------------------------------------------


class _NonFinite(Exception):
    """A float output holds NaN/Inf, which orjson would write as null."""


def _write_slow(value: Any, single: bool = False) -> str:
    """Writes JSON like TF Serving does when floats are not finite (NaN, Infinity tokens)."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _write_slow(value[()], single)
        return "[" + ",".join(_write_slow(v, single) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                f"{json.dumps(k, ensure_ascii=False)}:{_write_slow(v)}" for k, v in value.items()
            )
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(_write_slow(v, single) for v in value) + "]"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, np.floating | float):
        v = float(value)
        if not math.isfinite(v):
            return _format_decimal(v, False)
        if isinstance(value, np.float32 | np.float16):
            return str(value)  # numpy's shortest round-trip text of the narrow float
        return repr(v)
    if isinstance(value, np.integer | int):
        return str(int(value))
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False)


def _dumps(obj: Any, nonfinite: bool) -> bytes:
    if nonfinite:
        return _write_slow(obj).encode("utf-8", "surrogatepass")
    return orjson.dumps(obj, option=_NP_OPTS)


def _prepare_output(name: str, arr: np.ndarray) -> tuple[Any, bool]:
    """An output tensor as something orjson writes like TF Serving; and whether NaN/Inf occur."""
    dt = numpy_to_dtype(arr.dtype)
    if dt not in _JSON_WRITABLE and arr.size:
        type_name = dtype_name(dt) if dt is not None else str(arr.dtype)
        raise invalid_argument(f"Failed to write JSON value for tensor type: {type_name}")
    if dt == _STRING:
        flat = arr.ravel().tolist()
        if name.endswith("_bytes"):
            conv = [{"b64": base64.b64encode(_to_bytes(v)).decode("ascii")} for v in flat]
        else:
            conv = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
        obj = np.empty(len(conv), dtype=object)
        obj[:] = conv
        return obj.reshape(arr.shape).tolist(), False
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    nonfinite = arr.dtype.kind == "f" and not bool(np.isfinite(arr).all())
    if arr.ndim == 0:  # orjson writes numpy scalars, not 0-d arrays
        return arr[()], nonfinite
    return np.ascontiguousarray(arr), nonfinite


def encode_predict_response(
    outputs: Mapping[str, np.ndarray],
    format: str,
    output_infos: SignatureInputs | None = None,
) -> bytes:
    """Encodes Predict outputs as TF Serving's REST response (json_tensor.cc MakeJsonFromTensors).

    Row format gives `{"predictions": [...]}`: one entry per batch item, an object keyed by output
    name when there are several outputs, the bare value when one. Columnar format gives
    `{"outputs": {...}}`, or `{"outputs": value}` for one output. DT_STRING outputs whose name ends
    in `_bytes` are written as `{"b64": ...}`, others as (UTF-8 decoded) strings; float32 values
    use their shortest round-trip text; NaN/Inf are written as TF Serving does (NaN, Infinity,
    -Infinity).

    Args:
        outputs: Output arrays by alias.
        format: "row" or "columnar" (from `decode_predict_request`).
        output_infos: The signature's outputs; when given, fixes the order of keys to the
            signature's (sorted) order, otherwise `outputs` order is kept.

    Raises:
        ServingError: INVALID_ARGUMENT with json_tensor.cc's messages (empty map, missing or
            inconsistent batch dims in row format, a dtype JSON cannot express).
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    if format not in (ROW, COLUMNAR):
        raise invalid_argument("Invalid request format")
    names = list(outputs)
    if output_infos is not None:
        names.sort(key=lambda n: (n not in output_infos, n))
    arrays = {name: np.asarray(outputs[name]) for name in names}

    if format == ROW:
        batch_size = 0
        for name in names:
            arr = arrays[name]
            if arr.ndim == 0:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            cur = arr.shape[0]
            if cur < 1:
                raise invalid_argument(f"Tensor name: {name} has invalid batch size: {cur}")
            if batch_size and cur != batch_size:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {cur} "
                    f"expecting: {batch_size}"
                )
            batch_size = cur

    prepared = {}
    nonfinite = False
    for name in names:
        value, bad = _prepare_output(name, arrays[name])
        prepared[name] = value
        nonfinite = nonfinite or bad

    if format == COLUMNAR:
        body = prepared if len(names) > 1 else prepared[names[0]]
        return _dumps({"outputs": body}, nonfinite)
    if len(names) == 1:
        return _dumps({"predictions": prepared[names[0]]}, nonfinite)
    rows = [{name: prepared[name][i] for name in names} for i in range(batch_size)]
    return _dumps({"predictions": rows}, nonfinite)


def encode_classify_response(result: classification_pb2.ClassificationResult) -> bytes:
    """`{"results": [[["label", score], ...], ...]}` (json_tensor.cc's classification writer).

    Raises:
        ServingError: INVALID_ARGUMENT "Cannot convert empty ClassificationResults to JSON".
    """
    if not len(result.classifications):
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    nonfinite = False
    rows = []
    for classifications in result.classifications:
        row = []
        for cls in classifications.classes:
            score = cls.score
            if not math.isfinite(score):
                nonfinite = True
            row.append([cls.label, np.float32(score)])
        rows.append(row)
    return _dumps({"results": rows}, nonfinite)


def encode_regress_response(result: regression_pb2.RegressionResult) -> bytes:
    """`{"results": [value, ...]}` (json_tensor.cc's regression writer).

    Raises:
        ServingError: INVALID_ARGUMENT "Cannot convert empty RegressionResults to JSON".
    """
    if not len(result.regressions):
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    return _dumps({"results": values}, not bool(np.isfinite(values).all()))


def error_json(message: str) -> bytes:
    """TF Serving's REST error body: `{"error": "<message>"}`.

    A message quoting raw non-UTF-8 bytes of the request (held as lone surrogates) is written
    with U+FFFD in their place, so the body is always valid JSON.
    """
    return orjson.dumps({"error": _proto_text(message)})


_SURROGATE = re.compile("[\ud800-\udfff]")


def _proto_text(text: str) -> str:
    """`text` as valid UTF-8 text: lone surrogates (raw non-UTF-8 body bytes, or \\udXXX escapes)
    become U+FFFD. Protobuf string fields and orjson refuse them; TF Serving keeps the raw bytes,
    which, like U+FFFD, never name a signature or a feature of a model."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


# --------------------------------------------------------------------------------------------
# Classify / regress: tf.Example input
# --------------------------------------------------------------------------------------------

_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _example_from_json(value: Any, example: example_pb2.Example) -> None:
    """json_tensor.cc's MakeExampleFromJsonObject."""
    if type(value) is not dict:
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
    features = example.features.feature
    for name, content in value.items():
        name = _proto_text(name)
        items = content if type(content) is list else (content,)
        kind = None
        values: list = []
        for item in items:
            t = type(item)
            if t is bool:
                this_kind, item = "int64_list", int(item)
            elif t is int:
                this_kind = "int64_list"
            elif t is float:
                this_kind = "float_list"
            elif t is str or (t is dict and _is_b64_object(item)):
                this_kind = "bytes_list"
            else:
                raise invalid_argument(
                    f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}"
                )
            if kind is not None and kind != this_kind:
                raise invalid_argument(
                    f"Unexpected element type in feature: {name} expecting type: "
                    f"{_KIND_NAMES[kind]}"
                )
            kind = this_kind
            if t is int and item > _INT64_MAX:
                raise invalid_argument(
                    f"Feature: {name} has uint64 element. Only int64 is supported."
                )
            if t is float and not _is_lossless(item, _DT.DT_FLOAT):
                raise _lossy_error(item, "float")
            if t is str:
                item = _encode_str(item)
            elif t is dict:
                item = _decode_b64_object(item)
            values.append(item)
        feature = features[name]
        feature.Clear()
        if kind is not None:
            getattr(feature, kind).value.extend(values)


def decode_examples_request(body: bytes | str) -> tuple[str | None, input_pb2.Input]:
    """Decodes a REST `:classify` / `:regress` body (json_tensor.cc).

    `{"signature_name": ..., "context": {...}, "examples": [{feature: value | [values]}]}`:
    JSON integers and booleans become int64_list, other numbers float_list (if they fit a float),
    strings and `{"b64": ...}` bytes_list.

    Returns:
        (the body's `signature_name` or None, an `Input` holding an `example_list`, or an
        `example_list_with_context` when `context` is present).

    Raises:
        ServingError: INVALID_ARGUMENT with json_tensor.cc's messages.
    """
    doc = _parse_request_object(body)
    signature_name = _signature_name(doc)
    request_input = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _example_from_json(doc["context"], request_input.example_list_with_context.context)
    if "examples" not in doc:
        raise _format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if type(examples) is not list:
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    target = (
        request_input.example_list_with_context.examples
        if has_context
        else request_input.example_list.examples
    )
    for value in examples:
        _example_from_json(value, target.add())
    return signature_name, request_input


def examples_from_input(request_input: input_pb2.Input) -> list[bytes]:
    """Serialized tf.Examples of an `Input` (TF Serving's InputToSerializedExampleTensor).

    With `example_list_with_context`, each example is the serialized context followed by the
    serialized example, so that parsing merges the context features into every example (an
    example's own feature wins over a context feature of the same name).

    Raises:
        ServingError: INVALID_ARGUMENT "Input is empty." when there are no examples.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = request_input.example_list.examples
        if len(examples):
            return [e.SerializeToString() for e in examples]
    elif kind == "example_list_with_context":
        lst = request_input.example_list_with_context
        if len(lst.examples):
            context = lst.context.SerializeToString()
            return [context + e.SerializeToString() for e in lst.examples]
    raise invalid_argument("Input is empty.")


# --------------------------------------------------------------------------------------------
# Model status and metadata (http_rest_api_util.cc ToJsonString)
# --------------------------------------------------------------------------------------------


def _ordered(value: dict, descriptor: Any, preserve: bool) -> dict:
    """Key order of protobuf's C++ JSON printer: plain fields by number, then oneof members.

    Map entries are sorted by key.
    """
    fields = sorted(descriptor.fields, key=lambda f: (f.containing_oneof is not None, f.number))
    out = {}
    for field in fields:
        key = field.name if preserve else field.json_name
        if key not in value:
            continue
        item = value[key]
        mtype = field.message_type
        if mtype is not None:
            if mtype.GetOptions().map_entry:
                vtype = mtype.fields_by_name["value"].message_type
                item = {k: _ordered_message(v, vtype, preserve) for k, v in sorted(item.items())}
            elif field.is_repeated:
                item = [_ordered_message(v, mtype, preserve) for v in item]
            else:
                item = _ordered_message(item, mtype, preserve)
        out[key] = item
    for (
        key,
        item,
    ) in value.items():  # anything not described (extensions) keeps its place at the end
        out.setdefault(key, item)
    return out


def _ordered_message(value: Any, descriptor: Any, preserve: bool) -> Any:
    if (
        descriptor is None
        or not isinstance(value, dict)
        or descriptor.full_name.startswith("google.protobuf.")
    ):
        return value
    return _ordered(value, descriptor, preserve)


def _message_json(message: Any, preserve: bool) -> dict:
    value = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=preserve,
    )
    return _ordered(value, message.DESCRIPTOR, preserve)


def encode_status_json(response: get_model_status_pb2.GetModelStatusResponse) -> bytes:
    """GetModelStatusResponse as TF Serving's REST API returns it.

    Protobuf JSON with default fields printed (`always_print_primitive_fields`); the proto's own
    json_names are snake_case, so keys read `model_version_status`, `error_code`, ...; int64
    versions are strings, as protobuf's JSON mapping prescribes.
    """
    return orjson.dumps(_message_json(response, preserve=False), option=orjson.OPT_INDENT_2)


def encode_metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> bytes:
    """GetModelMetadataResponse as TF Serving's REST API returns it.

    `{"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {...}}}}`: the Any
    under `metadata["signature_def"]` is unpacked to a SignatureDefMap and both parts are printed
    with proto field names and default fields.

    Raises:
        ServingError: INTERNAL when the metadata has no `signature_def` entry or it does not hold
            a SignatureDefMap (TF Serving's messages).
    """
    if "signature_def" not in response.metadata:
        raise ServingError(
            grpc.StatusCode.INTERNAL,
            "Failed to find 'signature_def' key in the GetModelMetadataResponse metadata map.",
        )
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    if not response.metadata["signature_def"].Unpack(signature_def_map):
        raise ServingError(
            grpc.StatusCode.INTERNAL, "Failed to unpack 'Any' object to 'SignatureDefMap'."
        )
    body = {
        "model_spec": _message_json(response.model_spec, preserve=True),
        "metadata": {"signature_def": _message_json(signature_def_map, preserve=True)},
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2)
