"""Request payloads for the serving benchmark, built from a SavedModel's warm-up records.

``assets.extra/tf_serving_warmup_requests`` is a TFRecord of ``PredictionLog``s holding real
PredictRequests. Their rows (all inputs are batched along axis 0) are pooled and tiled to the
wanted number of instances; each size is written as

- ``grpc_<n>.bin``: a unary gRPC request body for ``/tensorflow.serving.PredictionService/Predict``
  (1 byte compressed-flag 0, 4 bytes big-endian length, the serialized PredictRequest), the file
  h2load sends with ``-d``;
- ``rest_<n>.json``: ``{"instances": [{input: value, ...}, ...]}`` (TF Serving's row format,
  also KServe's v1 protocol): floats as numbers, strings as strings.

Run as ``python -m bench.loadgen.payloads --model-dir VERSION_DIR --out DIR [--sizes 1,256]``;
prints one JSON line: ``{"model_name", "signature_name", "inputs": {name: dtype}, "payloads":
{n: {"grpc": path, "rest": path, "grpc_bytes": int, "rest_bytes": int}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: flag 0 (uncompressed), 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_unframe(body: bytes) -> bytes:
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        raise ValueError("not a single uncompressed gRPC message")
    return body[5:]


def warmup_rows(model_dir: Path) -> tuple[dict[str, Any], str]:
    """The warm-up requests' inputs concatenated along the batch axis, and their signature."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = model_dir / WARMUP
    if not path.exists():
        raise FileNotFoundError(f"{path}: no warm-up records to build the bench requests from")
    columns: dict[str, list[Any]] = {}
    signature = ""
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = log.predict_log.request
        signature = signature or request.model_spec.signature_name or "serving_default"
        for name, proto in request.inputs.items():
            columns.setdefault(name, []).append(tf.make_ndarray(proto))
    if not columns:
        raise ValueError(f"{path}: no PredictRequest among the warm-up records")
    rows = {name: np.concatenate(parts, axis=0) for name, parts in columns.items()}
    counts = {len(v) for v in rows.values()}
    if len(counts) != 1:
        raise ValueError(f"{path}: inputs disagree on the batch size: {sorted(counts)}")
    return rows, signature


def tile(rows: dict[str, Any], n: int) -> dict[str, Any]:
    """``n`` instances: the pooled rows repeated in order."""
    import numpy as np

    pool = len(next(iter(rows.values())))
    index = np.arange(n) % pool
    return {name: values[index] for name, values in rows.items()}


def _json_value(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.floating):
        # The shortest decimal that round-trips the float32 (2.36, not 2.359999895095825).
        return float(str(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def predict_request(inputs: dict[str, Any], model_name: str, signature: str) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for name in sorted(inputs):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(inputs[name]))
    return request.SerializeToString()


def rest_body(inputs: dict[str, Any]) -> bytes:
    n = len(next(iter(inputs.values())))
    names = sorted(inputs)
    instances = [{name: _json_value(inputs[name][i]) for name in names} for i in range(n)]
    return json.dumps({"instances": instances}, separators=(",", ":")).encode()


def build(model_dir: Path, out: Path, model_name: str, sizes: list[int]) -> dict[str, Any]:
    rows, signature = warmup_rows(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "model_name": model_name,
        "signature_name": signature,
        "inputs": {name: str(values.dtype) for name, values in sorted(rows.items())},
        "warmup_rows": len(next(iter(rows.values()))),
        "payloads": {},
    }
    for n in sizes:
        inputs = tile(rows, n)
        grpc_path, rest_path = out / f"grpc_{n}.bin", out / f"rest_{n}.json"
        grpc_path.write_bytes(grpc_frame(predict_request(inputs, model_name, signature)))
        rest_path.write_bytes(rest_body(inputs))
        result["payloads"][str(n)] = {
            "grpc": str(grpc_path),
            "rest": str(rest_path),
            "grpc_bytes": grpc_path.stat().st_size,
            "rest_bytes": rest_path.stat().st_size,
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a SavedModel version dir")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-name", default="crop_demand")
    parser.add_argument("--sizes", default="1,256", help="instances per request, comma-separated")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    result = build(args.model_dir, args.out, args.model_name, sizes)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
