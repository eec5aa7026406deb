"""perucast-model-server as a process: flags, SIGTERM drain, batching, several processes,
health, JSON logs and metrics, all over the wire against real server subprocesses.

Servers are shared where the tests do not interfere: `pair` starts a batching server (health
service on, JSON logs) and a plain one (no health service) side by side; the drain test and the
multi-process test own their servers because they stop them.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import ROOT, ServerProcess, free_port, model_config_text, wait_for
from serving_models import export_toy, toy_expected
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
METRICS_PATH = "/monitoring/prometheus/metrics"
MONITORING = f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
OFFSET = 2.0
FAST_LIFECYCLE = [
    "--file_system_poll_wait_seconds=1",
    "--load_retry_interval_micros=100000",
    "--max_num_load_retries=1",
]


# --- helpers ------------------------------------------------------------------------------------


def server_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


def toy_inputs(rows: int, rng: random.Random | None = None) -> dict[str, np.ndarray]:
    rng = rng or random.Random(0)
    return {
        "x": np.array([rng.uniform(-100, 100) for _ in range(rows)], np.float32),
        "key": np.array([f"r{rng.randrange(10**6)}".encode() for _ in range(rows)], dtype=object),
        "count": np.array([rng.randrange(-50, 50) for _ in range(rows)], np.int64),
    }


def toy_request(inputs, name: str = "toy") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def outputs(response) -> dict[str, np.ndarray]:
    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def assert_toy_answer(response, inputs) -> None:
    expected = toy_expected(inputs, OFFSET)
    got = outputs(response)
    np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-6)
    assert list(got["tagged"]) == list(expected["tagged"])


def scrape(server: ServerProcess) -> dict[str, list]:
    """The Prometheus samples of the server's metrics endpoint, by sample name."""
    with urllib.request.urlopen(server.rest_url + METRICS_PATH, timeout=30) as response:
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def total(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(key) == value for key, value in labels.items())
    )


def model_states(target: str, name: str) -> dict[int, int]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    with grpc.insecure_channel(target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        response = stub.GetModelStatus(request, timeout=10)
    return {s.version: s.state for s in response.model_version_status}


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def start_together(*servers: ServerProcess) -> None:
    """Starts the servers concurrently (TensorFlow's import dominates a start-up)."""
    with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
        futures = [pool.submit(server.start) for server in servers]
        errors = [f.exception() for f in futures]
    if any(errors):
        for server in servers:
            if server.process is not None:
                server.process.kill()
        raise next(e for e in errors if e)


@pytest.fixture(scope="module")
def toy_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("server") / "toy"
    export_toy(base, 1, OFFSET)
    return base


# --- flags and config files ---------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stderr: str


BAD_FILES = {
    "model_config_file": (
        "tensorflow.serving.ModelServerConfig",
        'model_config_list {\n  config { name: "toy" base_path: }\n}\n',
    ),
    "batching_parameters_file": (
        "tensorflow.serving.BatchingParameters",
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: lots }\n",
    ),
    "monitoring_config_file": (
        "tensorflow.serving.MonitoringConfig",
        "prometheus_config {\n  enable: maybe\n}\n",
    ),
}


@pytest.fixture(scope="module")
def refused_runs(tmp_path_factory, toy_base) -> dict[str, Run]:
    """The server started with an unknown flag and with each malformed file, all at once."""
    root = tmp_path_factory.mktemp("refused")
    model = [f"--model_base_path={toy_base}", "--model_name=toy"]
    argvs = {"unknown_flag": [*model, "--no_such_flag=3"]}
    for flag, (_, text) in BAD_FILES.items():
        path = root / f"{flag}.txt"
        path.write_text(text)
        extra = ["--enable_batching"] if flag == "batching_parameters_file" else []
        argvs[flag] = [*model, *extra, f"--{flag}={path}"]
    broken = root / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "saved_model.pb").write_bytes(b"\x00not a SavedModel\xff")
    argvs["model_fails"] = [
        f"--model_base_path={broken}",
        "--model_name=broken",
        "--max_num_load_retries=0",
    ]
    processes = {
        key: subprocess.Popen(
            [sys.executable, "-m", "serving", f"--port={free_port()}", *argv],
            cwd=ROOT,
            env=server_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, argv in argvs.items()
    }
    runs = {}
    for key, process in processes.items():
        _, stderr = process.communicate(timeout=120)
        runs[key] = Run(process.returncode, stderr)
    return runs


def test_an_unknown_flag_stops_the_server_naming_it(refused_runs):
    run = refused_runs["unknown_flag"]
    assert run.returncode != 0
    assert "no_such_flag" in run.stderr


@pytest.mark.parametrize("flag", sorted(BAD_FILES))
def test_a_malformed_config_file_stops_the_server_with_the_parse_error(refused_runs, flag):
    run = refused_runs[flag]
    assert run.returncode != 0
    full_name = BAD_FILES[flag][0]
    assert re.search(rf"Error parsing text-format {re.escape(full_name)}: \d+:\d+: ", run.stderr), (
        run.stderr[-2000:]
    )
    assert f"--{flag}=" in run.stderr  # the message names the flag and file


def test_a_model_that_cannot_load_stops_the_start_up(refused_runs):
    # TF Serving: "Failed to start server. Error: ..." when a model does not become available.
    run = refused_runs["model_fails"]
    assert run.returncode != 0
    assert "Failed to start server. Error: UNKNOWN: 1 model(s) did not become available: " in (
        run.stderr
    )
    assert "{name: broken version: 1} due to error: " in run.stderr


# --- the shared pair: batching vs not -----------------------------------------------------------


@dataclass
class Pair:
    batching: ServerProcess
    plain: ServerProcess
    loads_base: Path
    scratch: Path


@pytest.fixture(scope="module")
def pair(tmp_path_factory, toy_base):
    root = tmp_path_factory.mktemp("pair")
    monitoring = root / "monitoring.config"
    monitoring.write_text(MONITORING)
    batching_file = root / "batching.config"
    batching_file.write_text(
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 20000 }\n"
        "max_enqueued_batches { value: 1000 }\n"
        "num_batch_threads { value: 2 }\n"
    )
    loads_base = root / "loads"
    export_toy(loads_base, 1, OFFSET)
    plain_config = root / "plain.config"
    plain_config.write_text(model_config_text({"toy": toy_base, "loads": loads_base}))
    batching = ServerProcess(
        [
            f"--model_base_path={toy_base}",
            "--model_name=toy",
            "--enable_batching",
            f"--batching_parameters_file={batching_file}",
            f"--monitoring_config_file={monitoring}",
            "--enable_grpc_healthcheck_service",
            "--log_format=json",
        ],
        root / "batching.log",
        ready_models=("toy",),
    )
    plain = ServerProcess(
        [
            f"--model_config_file={plain_config}",
            f"--monitoring_config_file={monitoring}",
            *FAST_LIFECYCLE,
        ],
        root / "plain.log",
        ready_models=("toy", "loads"),
    )
    start_together(batching, plain)
    try:
        yield Pair(batching, plain, loads_base, root / "scratch")
    finally:
        assert batching.stop() == 0
        assert plain.stop() == 0


def run_concurrently(target: str, requests: list, threads: int = 16) -> list:
    """Sends `requests` from `threads` threads (each with its own channel); responses in order."""
    results: list = [None] * len(requests)
    chunks = [list(range(i, len(requests), threads)) for i in range(threads)]
    barrier = threading.Barrier(threads)

    def work(indexes):
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            barrier.wait(timeout=60)
            for index in indexes:
                results[index] = stub.Predict(requests[index], timeout=60)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, chunk) for chunk in chunks]:
            future.result()
    return results


def test_batched_results_equal_unbatched_results(pair):
    rng = random.Random(5)
    inputs = [toy_inputs(rng.randint(1, 20), rng) for _ in range(160)]
    requests = [toy_request(i) for i in inputs]
    before = scrape(pair.batching)
    batched = run_concurrently(pair.batching.target, requests)
    unbatched = run_concurrently(pair.plain.target, requests)
    for request_inputs, left, right in zip(inputs, batched, unbatched, strict=True):
        got_batched, got_unbatched = outputs(left), outputs(right)
        assert got_batched.keys() == got_unbatched.keys() == {"y", "tagged"}
        np.testing.assert_array_equal(got_batched["y"], got_unbatched["y"])
        np.testing.assert_array_equal(got_batched["tagged"], got_unbatched["tagged"])
        assert_toy_answer(left, request_inputs)

    after = scrape(pair.batching)
    rows = sum(len(i["x"]) for i in inputs)
    batches = total(after, "perucast_serving_batch_size_count") - total(
        before, "perucast_serving_batch_size_count"
    )
    batched_rows = total(after, "perucast_serving_batch_size_sum") - total(
        before, "perucast_serving_batch_size_sum"
    )
    assert batched_rows == rows
    assert 0 < batches < len(requests)  # requests were merged: some batch held several
    single_row = total(after, "perucast_serving_batch_size_bucket", le="1.0") - total(
        before, "perucast_serving_batch_size_bucket", le="1.0"
    )
    assert single_row < batches  # some batch had more than one row
    # The non-batching server never batches.
    assert total(scrape(pair.plain), "perucast_serving_batch_size_count") == 0


def test_health_service_only_when_enabled(pair):
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(pair.batching.target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=30)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    with (
        grpc.insecure_channel(pair.plain.target) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        health_pb2_grpc.HealthStub(channel).Check(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_json_logs_are_one_object_per_line(pair):
    lines = pair.batching.log_path.read_text(errors="replace").splitlines()
    objects = [json.loads(line) for line in lines if line.startswith("{")]
    assert objects
    for entry in objects:
        assert isinstance(entry["level"], str) and entry["level"]
        assert isinstance(entry["message"], str)
    messages = [entry["message"] for entry in objects]
    assert any(m.startswith("Running gRPC ModelServer at 0.0.0.0:") for m in messages)
    assert any("Successfully loaded servable version {name: toy version: 1}" in m for m in messages)
    # No text-format Python log line slipped through.
    text_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ +(DEBUG|INFO|WARNING|ERROR)")
    assert not [line for line in lines if text_line.match(line)]


def test_model_loads_and_load_failures_are_counted(pair):
    loads = "perucast_serving_model_loads_total"
    samples = scrape(pair.plain)
    assert total(samples, loads, model="loads", version="1", outcome="success") == 1
    assert total(samples, loads, model="loads", outcome="failure") == 0
    assert total(samples, "perucast_serving_model_available", model="loads", version="1") == 1

    broken = pair.scratch / "broken-2"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 8)
    broken.rename(pair.loads_base / "2")
    wait_for(lambda: model_states(pair.plain.target, "loads").get(2) == END, timeout=60)
    samples = scrape(pair.plain)
    assert total(samples, loads, model="loads", version="2", outcome="failure") == 1
    assert total(samples, loads, model="loads", version="2", outcome="success") == 0
    assert model_states(pair.plain.target, "loads")[1] == AVAILABLE


# --- SIGTERM drains -----------------------------------------------------------------------------


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(tmp_path, toy_base):
    batching_file = tmp_path / "batching.config"
    # A lone request waits the whole 2 s timeout in the batch queue for the batch to fill.
    batching_file.write_text(
        "max_batch_size { value: 1000 }\n"
        "batch_timeout_micros { value: 2000000 }\n"
        "num_batch_threads { value: 1 }\n"
    )
    server = ServerProcess(
        [
            f"--model_base_path={toy_base}",
            "--model_name=toy",
            "--enable_batching",
            f"--batching_parameters_file={batching_file}",
        ],
        tmp_path / "drain.log",
        ready_models=("toy",),
    )
    server.start()
    try:
        inputs = toy_inputs(3)
        with grpc.insecure_channel(server.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            in_flight = stub.Predict.future(toy_request(inputs), timeout=60)
            time.sleep(0.5)  # let it reach the batch queue (it stays there ~1.5 s more)
            assert not in_flight.done()
            server.process.send_signal(signal.SIGTERM)
            # New connections are refused while the old request is still being served.
            for port in (server.grpc_port, server.rest_port):
                wait_for(lambda p=port: refuses_connections(p), timeout=10, what="refusal")
            assert not in_flight.done()
            response = in_flight.result(timeout=60)
        assert_toy_answer(response, inputs)
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


# --- several server processes -------------------------------------------------------------------


def listening_ports(pid: int) -> set[int]:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


@pytest.mark.slow
def test_two_server_processes_share_the_ports(tmp_path, toy_base):
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(MONITORING)
    server = ServerProcess(
        [
            f"--model_base_path={toy_base}",
            "--model_name=toy",
            f"--monitoring_config_file={monitoring}",
            "--num_server_processes=2",
        ],
        tmp_path / "multi.log",
        ready_models=("toy",),
    )
    server.start()
    try:
        supervisor = psutil.Process(server.process.pid)
        ports = {server.grpc_port, server.rest_port}

        def workers_listening():
            children = supervisor.children()
            listening = [c for c in children if ports <= listening_ports(c.pid)]
            return len(children) == 2 and len(listening) == 2 and children

        workers = wait_for(workers_listening, timeout=120, what="both workers listening")
        assert ports.isdisjoint(listening_ports(supervisor.pid))  # the supervisor only waits

        sent = 60
        rng = random.Random(3)
        for _ in range(sent):  # a fresh connection per request: the kernel spreads them
            inputs = toy_inputs(rng.randint(1, 5), rng)
            with grpc.insecure_channel(server.target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                assert_toy_answer(stub.Predict(toy_request(inputs), timeout=30), inputs)
        for _ in range(4):  # whichever process answers the scrape reports both
            samples = scrape(server)
            predicts = total(samples, "perucast_serving_requests_total", api="predict")
            assert predicts == sent
            assert (
                total(samples, "perucast_serving_requests_total", api="predict", code="OK") == sent
            )

        with grpc.insecure_channel(server.target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            response = stub.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(), timeout=30
            )
        assert response.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "--num_server_processes" in response.status.error_message

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=90) == 0
        for worker in workers:
            assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    finally:
        server.stop()
