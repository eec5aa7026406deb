"""Over-the-wire REST tests of perucast-model-server, in TF Serving's JSON API.

One real server process for the module (toy model with versions 1 and 2 under the `all` policy
and labels stable=1 / canary=2, the classify/regress model, and a small model with a `_bytes`
output), with Prometheus monitoring at its default path. Every call is plain HTTP over loopback
(`urllib.request`); a few are checked against the same request over gRPC with the official stub.
"""

from __future__ import annotations

import base64
import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import ServerProcess, model_config_text
from serving_models import (
    export_examples_model,
    export_toy,
    toy_expected,
    toy_request_inputs,
)
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default Prometheus path
BINARY_SUFFIX = b"\x00\xff"


def export_bytes_model(base: Path, version: int = 1) -> Path:
    """`serving_default`: raw [None] string -> raw_bytes (raw + 00 ff) and size (int32 length);
    `halves`: x [None] float -> h (half, a dtype the JSON writer cannot express)."""

    class Binary(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="raw")])
        def serve(self, raw):
            suffix = tf.constant(BINARY_SUFFIX)
            return {"raw_bytes": tf.strings.join([raw, suffix]), "size": tf.strings.length(raw)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def halves(self, x):
            return {"h": tf.cast(x, tf.float16)}

    module = Binary()
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}"
    tf.saved_model.save(
        module, str(tmp), signatures={"serving_default": module.serve, "halves": module.halves}
    )
    final = base / str(version)
    tmp.rename(final)
    return final


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("rest")
    export_toy(root / "toy", 1, offset=2.0)
    export_toy(root / "toy", 2, offset=10.0)
    export_examples_model(root / "examples", 1)
    export_bytes_model(root / "binary", 1)
    config = root / "models.config"
    config.write_text(
        model_config_text(
            {"toy": root / "toy", "examples": root / "examples", "binary": root / "binary"},
            {
                "toy": "model_version_policy { all {} } "
                'version_labels { key: "stable" value: 1 } '
                'version_labels { key: "canary" value: 2 }'
            },
        )
    )
    monitoring = root / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    process = ServerProcess(
        [f"--model_config_file={config}", f"--monitoring_config_file={monitoring}"],
        root / "server.log",
        ready_models=("toy", "examples", "binary"),
    )
    with process:
        yield process


class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> str:
        doc = self.json()
        assert set(doc) == {"error"}, doc
        assert isinstance(doc["error"], str) and doc["error"]
        return doc["error"]


def http(server, method: str, path: str, body: bytes | str | dict | None = None) -> Reply:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    request = urllib.request.Request(server.rest_url + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, err.headers, err.read())


def get(server, path: str) -> Reply:
    return http(server, "GET", path)


def post(server, path: str, body) -> Reply:
    return http(server, "POST", path, body)


def ok(reply: Reply) -> dict:
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    return reply.json()


def toy_instances(n: int = 3) -> list[dict]:
    inputs = toy_request_inputs(n)
    return [
        {"x": float(x), "key": key.decode(), "count": int(count)}
        for x, key, count in zip(inputs["x"], inputs["key"], inputs["count"], strict=True)
    ]


def toy_columns(n: int = 3) -> dict:
    inputs = toy_request_inputs(n)
    return {
        "x": inputs["x"].tolist(),
        "key": [k.decode() for k in inputs["key"]],
        "count": inputs["count"].tolist(),
    }


def expected_rows(offset: float, n: int = 3) -> list[dict]:
    expected = toy_expected(toy_request_inputs(n), offset)
    return [
        {"tagged": tagged.decode(), "y": float(y)}
        for tagged, y in zip(expected["tagged"], expected["y"], strict=True)
    ]


# --- model status and metadata ----------------------------------------------------------------


def test_model_status_lists_every_version_like_tf_serving(server):
    doc = ok(get(server, "/v1/models/toy"))
    statuses = sorted(doc["model_version_status"], key=lambda s: s["version"])
    assert [s["version"] for s in statuses] == ["1", "2"]  # int64 -> JSON string
    for status in statuses:
        assert status["state"] == "AVAILABLE"
        assert status["status"] == {"error_code": "OK", "error_message": ""}


@pytest.mark.parametrize(
    ("path", "version"),
    [("/v1/models/toy/versions/1", "1"), ("/v1/models/toy/labels/stable", "1")],
)
def test_model_status_of_one_version_or_label(server, path, version):
    doc = ok(get(server, path))
    assert [s["version"] for s in doc["model_version_status"]] == [version]
    assert doc["model_version_status"][0]["state"] == "AVAILABLE"


def test_model_status_errors(server):
    reply = get(server, "/v1/models/nope")
    assert reply.status == 404
    assert reply.error == "Could not find any versions of model nope"
    reply = get(server, "/v1/models/toy/versions/9")
    assert reply.status == 404
    assert reply.error == "Could not find version 9 of model toy"
    reply = get(server, "/v1/models/toy/labels/nope")
    assert reply.status == 400
    assert "Unrecognized servable version label: nope" in reply.error


def test_model_metadata_has_the_spec_and_the_signature_defs(server):
    doc = ok(get(server, "/v1/models/toy/versions/1/metadata"))
    assert doc["model_spec"] == {"name": "toy", "signature_name": "", "version": "1"}
    signatures = doc["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) >= {"serving_default", "total"}
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    dtypes = {name: info["dtype"] for name, info in default["inputs"].items()}
    assert dtypes == {"x": "DT_FLOAT", "key": "DT_STRING", "count": "DT_INT64"}
    assert {name: info["dtype"] for name, info in default["outputs"].items()} == {
        "y": "DT_FLOAT",
        "tagged": "DT_STRING",
    }
    assert default["inputs"]["x"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    total = signatures["total"]["inputs"]["pair"]["tensor_shape"]["dim"]
    assert [d["size"] for d in total] == ["-1", "2"]
    # latest and label resolve to their versions
    assert ok(get(server, "/v1/models/toy/metadata"))["model_spec"]["version"] == "2"
    assert ok(get(server, "/v1/models/toy/labels/stable/metadata"))["model_spec"]["version"] == "1"


# --- predict ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "offset"),
    [
        ("/v1/models/toy:predict", 10.0),
        ("/v1/models/toy/versions/1:predict", 2.0),
        ("/v1/models/toy/labels/stable:predict", 2.0),
        ("/v1/models/toy/labels/canary:predict", 10.0),
    ],
)
def test_predict_row_format_by_version_and_label(server, path, offset):
    doc = ok(post(server, path, {"instances": toy_instances()}))
    assert list(doc) == ["predictions"]
    predictions = doc["predictions"]
    expected = expected_rows(offset)
    assert [p["tagged"] for p in predictions] == [e["tagged"] for e in expected]
    # float32 outputs are written with their shortest round-trip text: exact equality
    assert [np.float32(p["y"]) for p in predictions] == [np.float32(e["y"]) for e in expected]


def test_predict_columnar_format(server):
    doc = ok(post(server, "/v1/models/toy/versions/2:predict", {"inputs": toy_columns(4)}))
    expected = toy_expected(toy_request_inputs(4), offset=10.0)
    assert list(doc) == ["outputs"]
    assert doc["outputs"]["tagged"] == [t.decode() for t in expected["tagged"]]
    np.testing.assert_array_equal(np.array(doc["outputs"]["y"], np.float32), expected["y"])


def test_predict_a_one_input_signature_takes_and_returns_bare_values(server):
    pair = [[1.0, 2.0], [3.0, 4.5]]
    doc = ok(post(server, "/v1/models/toy:predict", {"signature_name": "total", "instances": pair}))
    assert doc == {"predictions": [3.0, 7.5]}
    doc = ok(post(server, "/v1/models/toy:predict", {"signature_name": "total", "inputs": pair}))
    assert doc == {"outputs": [3.0, 7.5]}
    # one input given by name in the instance objects is fine too
    body = {"signature_name": "total", "instances": [{"pair": [1, 2]}]}
    assert ok(post(server, "/v1/models/toy:predict", body)) == {"predictions": [3.0]}


def test_predict_b64_string_input(server):
    instance = {"x": 1.0, "key": {"b64": base64.b64encode(b"k\xc3\xa9").decode()}, "count": 1}
    doc = ok(post(server, "/v1/models/toy/versions/1:predict", {"instances": [instance]}))
    assert doc["predictions"] == [{"tagged": "k\u00e9!", "y": 1.0 * 0.5 + 2.0 + 1.0}]


def test_predict_bytes_outputs_are_base64(server):
    raw = [b"ab", b"\x01\x02\x03"]
    body = {"instances": [{"b64": base64.b64encode(r).decode()} for r in raw]}
    doc = ok(post(server, "/v1/models/binary:predict", body))
    assert doc["predictions"] == [
        {"raw_bytes": {"b64": base64.b64encode(r + BINARY_SUFFIX).decode()}, "size": len(r)}
        for r in raw
    ]
    doc = ok(post(server, "/v1/models/binary:predict", {"inputs": ["xyz"]}))
    assert doc["outputs"] == {
        "raw_bytes": [{"b64": base64.b64encode(b"xyz" + BINARY_SUFFIX).decode()}],
        "size": [3],
    }


def test_an_output_dtype_json_cannot_express_is_a_400(server):
    reply = post(server, "/v1/models/binary:predict", {"signature_name": "halves", "inputs": [1]})
    assert reply.status == 400
    assert reply.error == "Failed to write JSON value for tensor type: half"


def test_predict_nan_and_infinity_travel_like_tf_serving(server):
    body = b'{"signature_name": "total", "instances": [[NaN, 1], [Infinity, 1], [-Infinity, 0]]}'
    reply = post(server, "/v1/models/toy:predict", body)
    assert reply.status == 200
    assert reply.body.replace(b" ", b"") == b'{"predictions":[NaN,Infinity,-Infinity]}'
    values = json.loads(reply.body)["predictions"]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf


# --- classify / regress -------------------------------------------------------------------------


def test_classify(server):
    body = {"signature_name": "classify_x", "examples": [{"x": 0.0}, {"x": 2.0}]}
    doc = ok(post(server, "/v1/models/examples:classify", body))
    first, second = doc["results"]
    assert [label for label, _ in first] == ["neg", "pos"]
    assert [score for _, score in first] == pytest.approx([0.5, 0.5])
    expected = np.exp([-2.0, 2.0]) / np.exp([-2.0, 2.0]).sum()
    assert [label for label, _ in second] == ["neg", "pos"]
    assert [score for _, score in second] == pytest.approx(expected, rel=1e-5)


def test_regress_with_and_without_context(server):
    body = {"signature_name": "regress_x", "examples": [{"x": 1.0}, {"x": [-3.0]}]}
    doc = ok(post(server, "/v1/models/examples/versions/1:regress", body))
    assert doc == {"results": [3.0, -5.0]}
    # context features reach every example; an example's own feature wins
    body = {"signature_name": "regress_x", "context": {"x": 1.5}, "examples": [{}, {"x": 3.0}]}
    assert ok(post(server, "/v1/models/examples:regress", body)) == {"results": [4.0, 7.0]}


def test_classify_and_regress_errors(server):
    reply = post(server, "/v1/models/examples:classify", {"examples": [{"x": 1.0}]})
    assert reply.status == 400  # serving_default is a predict signature
    assert "tensorflow/serving/classify" in reply.error
    reply = post(server, "/v1/models/examples:regress", {"signature_name": "regress_x"})
    assert reply.status == 400
    assert "'examples' is expected" in reply.error
    reply = post(
        server, "/v1/models/examples:regress", {"signature_name": "regress_x", "examples": []}
    )
    assert reply.status == 400
    assert "'examples' value is an empty array" in reply.error
    reply = post(server, "/v1/models/examples:regress", {"examples": [[1.0]]})
    assert reply.status == 400
    assert reply.error == "Example must be JSON object but got JSON Array"
    reply = post(server, "/v1/models/nope:classify", {"examples": [{"x": 1.0}]})
    assert reply.status == 404
    assert reply.error == "Servable not found for request: Latest(nope)"


# --- errors: TF Serving's HTTP mapping and {"error": ...} bodies -------------------------------


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"instances": [', 400, "JSON Parse error"),
        (b"", 400, "JSON Parse error: The document is empty"),
        (b"[1, 2]", 400, "Is not object"),
        ({}, 400, "Missing 'inputs' or 'instances' key"),
        ({"instances": []}, 400, "No values in 'instances' array"),
        ({"instances": {"x": 1}}, 400, "Excepting 'instances' to be an list/array"),
        ({"instances": [1], "inputs": [1]}, 400, "expecting only one of 'inputs' or 'instances'"),
        (
            {"instances": [{"x": "a", "key": "k", "count": 1}]},
            400,
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        ({"instances": [{"x": 1.0, "key": "k"}]}, 400, "must only have keys: count,key,x"),
        ({"inputs": {"x": [1.0], "key": ["k"]}}, 400, "Missing named input: count"),
        ({"instances": [{"x": 1.5, "key": "k", "count": 1.5}]}, 400, "expected type: int64"),
        ({"signature_name": 7, "instances": [1]}, 400, "'signature_name' key must be a string"),
        ({"signature_name": "nope", "instances": [1]}, 400, '"nope" not found'),
        (
            {"inputs": {"x": [1.0, 2.0], "key": ["k"], "count": [1]}},
            400,
            "must have equal 0th-dimension size",
        ),
        ({"instances": [{"x": 1.0, "key": {"b64": "!!"}, "count": 1}]}, 400, "base64 decode"),
    ],
)
def test_predict_request_errors(server, body, status, message):
    reply = post(server, "/v1/models/toy:predict", body)
    assert reply.status == status
    assert reply.headers["Content-Type"].startswith("application/json")
    assert message in reply.error


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", "/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
        (
            "POST",
            "/v1/models/toy/versions/9:predict",
            404,
            "Servable not found for request: Specific(toy, 9)",
        ),
        (
            "POST",
            "/v1/models/toy/labels/nope:predict",
            400,
            "Unrecognized servable version label: nope",
        ),
        ("GET", "/v1/models/toy:predict", 400, "Malformed request: GET /v1/models/toy:predict"),
        ("POST", "/v1/models/toy", 400, "Malformed request: POST /v1/models/toy"),
        ("POST", "/v1/models/toy:explain", 400, "Malformed request"),
        ("GET", "/v1/foo", 400, "Malformed request: GET /v1/foo"),
        ("GET", "/", 400, "Malformed request: GET /"),
        ("PUT", "/v1/models/toy:predict", 400, "Malformed request: PUT"),
        ("DELETE", "/v1/models/toy", 400, "Malformed request: DELETE"),
        # TF Serving's routes take `\d+` versions only: anything else is no route at all
        ("POST", "/v1/models/toy/versions/abc:predict", 400, "Malformed request"),
        ("GET", "/v1/models/toy/versions/-1", 400, "Malformed request"),
        ("GET", "/v1/models/toy/versions/1.5/metadata", 400, "Malformed request"),
        # all digits, but not an int64
        (
            "POST",
            "/v1/models/toy/versions/99999999999999999999:predict",
            400,
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
        (
            "GET",
            "/v1/models/toy/versions/99999999999999999999",
            400,
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
    ],
)
def test_route_errors(server, method, path, status, message):
    body = {"instances": toy_instances()} if method in ("POST", "PUT") else None
    reply = http(server, method, path, body)
    assert reply.status == status
    assert message in reply.error


def test_routes_match_like_tf_serving(server):
    # the route regexes are case-insensitive...
    doc = ok(post(server, "/V1/Models/toy/Versions/1:predict", {"instances": toy_instances()}))
    assert [p["tagged"] for p in doc["predictions"]] == ["k0!", "k1!", "k2!"]
    assert (
        ok(get(server, "/V1/MODELS/toy/LABELS/canary"))["model_version_status"][0]["version"] == "2"
    )
    # ...but the method and the `metadata` subresource are then compared case-sensitively
    reply = post(server, "/v1/models/toy:PREDICT", {"instances": toy_instances()})
    assert reply.status == 400
    assert reply.error == "Malformed request: POST /v1/models/toy:PREDICT"
    assert "model_version_status" in ok(get(server, "/v1/models/toy/METADATA"))
    # a status request needs a model name
    for path in ("/v1/models", "/v1/models/versions/1"):
        reply = get(server, path)
        assert reply.status == 400
        assert reply.error == "Missing model name in request."


def test_percent_encoded_model_names_and_labels_are_decoded(server):
    # TF Serving matches the raw path and then URL-decodes the name and label (DecodeArg)
    reply = post(server, "/v1/models/no%2Fpe:predict", {"instances": [1]})
    assert reply.status == 404
    assert reply.error == "Servable not found for request: Latest(no/pe)"
    doc = ok(post(server, "/v1/models/t%6Fy/labels/st%61ble:predict", {"inputs": toy_columns(1)}))
    assert doc["outputs"]["y"] == [2.0]


# --- REST and gRPC agree ----------------------------------------------------------------------


def test_rest_and_grpc_answer_the_same_numbers(server):
    rng = np.random.default_rng(5)
    n = 16
    inputs = {
        "x": rng.normal(size=n).astype(np.float32),
        "key": np.array([f"r{i}".encode() for i in range(n)], dtype=object),
        "count": rng.integers(-1000, 1000, size=n).astype(np.int64),
    }
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.model_spec.version_label = "stable"
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=30)
    grpc_y = tf.make_ndarray(response.outputs["y"])
    grpc_tagged = [t.decode() for t in tf.make_ndarray(response.outputs["tagged"])]

    columns = {
        "x": [float(v) for v in inputs["x"]],  # float32 -> double is exact
        "key": [k.decode() for k in inputs["key"]],
        "count": inputs["count"].tolist(),
    }
    doc = ok(post(server, "/v1/models/toy/labels/stable:predict", {"inputs": columns}))
    np.testing.assert_array_equal(np.array(doc["outputs"]["y"], np.float32), grpc_y)
    assert doc["outputs"]["tagged"] == grpc_tagged
    np.testing.assert_array_equal(grpc_y, toy_expected(inputs, offset=2.0)["y"])


# --- metrics --------------------------------------------------------------------------------------


def scrape(server) -> dict[tuple[str, tuple], float]:
    reply = get(server, METRICS_PATH)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_rest_requests_by_code_with_latency(server):
    ok_labels = {"model": "toy", "version": "1", "api": "predict", "protocol": "rest"}
    before = scrape(server)
    for _ in range(3):
        ok(post(server, "/v1/models/toy/versions/1:predict", {"instances": toy_instances()}))
    bad = {"instances": [{"x": "a", "key": "k", "count": 1}]}
    assert post(server, "/v1/models/toy/versions/1:predict", bad).status == 400
    after = scrape(server)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("perucast_serving_requests_total", **ok_labels, code="OK") == 3
    # a request failing after its version was resolved is counted under that version and code
    assert delta("perucast_serving_requests_total", **ok_labels, code="INVALID_ARGUMENT") == 1
    # the latency histogram has no code label: 3 OK + 1 failed
    assert delta("perucast_serving_request_latency_seconds_count", **ok_labels) == 4
    assert delta("perucast_serving_request_latency_seconds_sum", **ok_labels) > 0
    bucket = {**ok_labels, "le": "+Inf"}
    assert delta("perucast_serving_request_latency_seconds_bucket", **bucket) == 4
    # the metrics path answers GET only; other methods fall through to the API's 400
    reply = post(server, METRICS_PATH, b"")
    assert reply.status == 400
    assert reply.error == f"Malformed request: POST {METRICS_PATH}"


def test_raw_non_utf8_request_bytes_still_give_a_json_error(server):
    # regressions found by tests/test_serving_fuzz.py: these answered aiohttp's text/plain 500
    body = b'{"signature_name": "\xff", "examples": [{"x": 1.0}]}'
    reply = post(server, "/v1/models/examples:classify", body)
    assert reply.status == 400
    assert reply.error == 'Serving signature key "\ufffd" not found.'
    reply = post(server, "/v1/models/examples:classify", b'{"\x80": ""}')
    assert reply.status == 400
    assert "'examples' is expected" in reply.error
    body = b'{"signature_name": "regress_x", "examples": [{"\xff": 1.0, "x": 1.0}]}'
    assert ok(post(server, "/v1/models/examples:regress", body)) == {"results": [3.0]}
    reply = get(server, "/v1/mod%0Aels")
    assert reply.status == 400
    assert reply.error == "Malformed request: GET /v1/mod%0Aels"
