"""Real Predict calls with the official ``PredictionService`` stub.

h2load reads the HTTP status only, and a gRPC error is an HTTP 200 whose ``grpc-status`` (in
the trailers, or the headers of a trailers-only response) is not 0: h2load counts it as a
success. So around every h2load run the bench makes a few calls with the real stub, which sees
the status, and learns the size of a good response (the length-prefixed message), against which
it checks the DATA bytes h2load received.

Runs as a long-lived subprocess (importing TensorFlow once): ``python -m bench.loadgen.grpc_check``
reads JSON commands from stdin, one a line, ``{"port": P, "body": PATH, "calls": N,
"timeout_s": S}``, and answers each with one JSON line: ``{"ok": n, "errors": {code: count},
"first_error": str | null, "response_bytes": [sizes of the framed responses], "outputs":
{name: shape}}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.loadgen.payloads import grpc_unframe


def check(port: int, body: Path, calls: int, timeout_s: float, cache: dict[str, Any]) -> dict:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    target = f"127.0.0.1:{port}"
    if cache.get("target") != target:
        if cache.get("channel") is not None:
            cache["channel"].close()
        options = [("grpc.max_receive_message_length", 64 << 20)]
        cache["channel"] = grpc.insecure_channel(target, options=options)
        cache["stub"] = prediction_service_pb2_grpc.PredictionServiceStub(cache["channel"])
        cache["target"] = target
    request = predict_pb2.PredictRequest.FromString(grpc_unframe(body.read_bytes()))
    result: dict[str, Any] = {
        "ok": 0,
        "errors": {},
        "first_error": None,
        "response_bytes": [],
        "outputs": {},
    }
    for _ in range(calls):
        try:
            response = cache["stub"].Predict(request, timeout=timeout_s)
        except grpc.RpcError as e:
            code = e.code().name
            result["errors"][code] = result["errors"].get(code, 0) + 1
            result["first_error"] = result["first_error"] or f"{code}: {e.details()}"
            continue
        result["ok"] += 1
        size = 5 + response.ByteSize()
        if size not in result["response_bytes"]:
            result["response_bytes"].append(size)
        result["outputs"] = {
            name: [d.size for d in proto.tensor_shape.dim]
            for name, proto in sorted(response.outputs.items())
        }
    return result


def main() -> None:
    cache: dict[str, Any] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            answer = check(
                int(command["port"]),
                Path(command["body"]),
                int(command.get("calls", 3)),
                float(command.get("timeout_s", 30)),
                cache,
            )
        except Exception as e:  # the bench raises with this
            answer = {"fatal": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
