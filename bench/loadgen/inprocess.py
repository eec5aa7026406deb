"""The bench's PredictRequest run in-process on the SavedModel: the floor for a server's latency.

Each timed iteration does what a server does with a request, minus the RPC: parse the serialized
PredictRequest, convert every input TensorProto to a tensor, call the ``serving_default``
signature and fetch the outputs as numpy arrays. ``call_only`` times the signature call alone on
tensors converted once. One thread, sequential, after a warm-up.

    python -m bench.loadgen.inprocess --model-dir VERSION_DIR --body grpc_1.bin --seconds 5

prints one JSON line: ``{"iterations", "latency_ms": {min, mean, p50, p90, p99, max},
"call_only": {"iterations", "latency_ms": {...}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.loadgen.payloads import grpc_unframe
from bench.loadgen.stats import summarize_ms


def _loop(fn, seconds: float, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    end = time.perf_counter() + seconds
    while True:
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e3)
        if time.perf_counter() >= end:
            return samples


def measure(model_dir: Path, body: Path, seconds: float, warmup: int = 50) -> dict[str, Any]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    model = tf.saved_model.load(str(model_dir))
    raw = grpc_unframe(body.read_bytes())
    signature = model.signatures[
        predict_pb2.PredictRequest.FromString(raw).model_spec.signature_name or "serving_default"
    ]

    def full() -> dict[str, Any]:
        request = predict_pb2.PredictRequest.FromString(raw)
        tensors = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        return {k: v.numpy() for k, v in signature(**tensors).items()}

    request = predict_pb2.PredictRequest.FromString(raw)
    tensors = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}

    def call_only() -> Any:
        return signature(**tensors)

    samples = _loop(full, seconds * 0.75, warmup)
    call_samples = _loop(call_only, seconds * 0.25, warmup)
    return {
        "iterations": len(samples),
        "latency_ms": summarize_ms(samples),
        "call_only": {"iterations": len(call_samples), "latency_ms": summarize_ms(call_samples)},
        "tensorflow": tf.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--body", type=Path, required=True, help="a gRPC request body file")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(measure(args.model_dir, args.body, args.seconds)) + "\n")


if __name__ == "__main__":
    main()
