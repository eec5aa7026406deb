"""Prediction logging (`serving/prediction_log.py`): each model's ``logging_config``.

One real server process for the module serves the toy model under several names, each with its
own ``logging_config`` (rates 1.0, 0.0 and 0.3, and one with tiny files to rotate); requests go
through TF Serving's official gRPC stubs (and REST once) and the TFRecord files are read back as
``PredictionLog``. The writer's never-blocking queue is tested on the class itself, and a
malformed config on a server process of its own.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from serving_harness import ROOT, ServerProcess, free_port, model_config_text, wait_for
from serving_models import export_toy, toy_request_inputs
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import logging_config_pb2

from serving.prediction_log import PredictionLogSink

ROTATE_BYTES = 2048  # the server's PERUCAST_PREDICTION_LOG_MAX_FILE_BYTES
METRICS_PATH = "/monitoring/prometheus/metrics"
RATES = {"full": 1.0, "never": 0.0, "some": 0.3, "rotating": 1.0}


def _logging(prefix, rate: float, kind: str = "file") -> str:
    return (
        f'logging_config {{ log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }} '
        f"sampling_config {{ sampling_rate: {rate} }} }}"
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("prediction-log")
    export_toy(root / "toy", 1, offset=2.0, warmup=False)
    logs = root / "logs"
    config = root / "models.config"
    config.write_text(
        model_config_text(
            {name: root / "toy" for name in RATES},
            {name: _logging(logs / name / "log", rate) for name, rate in RATES.items()},
        )
    )
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    process = ServerProcess(
        [f"--model_config_file={config}", f"--monitoring_config_file={monitoring}"],
        root / "server.log",
    )
    process.env["PERUCAST_PREDICTION_LOG_MAX_FILE_BYTES"] = str(ROTATE_BYTES)
    process.ready_models = tuple(RATES)
    process.start()
    channel = grpc.insecure_channel(process.target)
    try:
        yield process, channel, logs, root
    finally:
        channel.close()
        process.stop()


def _request(name: str, n: int = 3, shift: float = 0.0) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in toy_request_inputs(n).items():
        if key == "x":
            value = value + np.float32(shift)
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _read(directory) -> list[prediction_log_pb2.PredictionLog] | None:
    """Every record under `directory`, in file order; None while a file is mid-write."""
    records = []
    try:
        for path in sorted(directory.glob("*.tfrecord")):
            for raw in tf.data.TFRecordDataset(str(path)):
                records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    except tf.errors.DataLossError:
        return None
    return records


def _records(directory, count: int) -> list[prediction_log_pb2.PredictionLog]:
    def ready():
        records = _read(directory)
        return records if records is not None and len(records) >= count else None

    return wait_for(ready, timeout=20, what=f"{count} records in {directory}")


def test_rate_one_logs_every_request_as_sent_and_received(served):
    process, channel, logs, _ = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    sent, received = [], []
    for i in range(5):
        request = _request("full", n=i + 1, shift=i)
        sent.append(request)
        received.append(stub.Predict(request, timeout=10))
    records = _records(logs / "full", 5)
    assert len(records) == 5
    for record, request, response in zip(records, sent, received, strict=True):
        assert record.WhichOneof("log_type") == "predict_log"
        assert record.predict_log.request == request
        assert record.predict_log.response == response
        meta = record.log_metadata
        assert (meta.model_spec.name, meta.model_spec.version.value) == ("full", 1)
        assert meta.model_spec.signature_name == "serving_default"
        assert meta.sampling_config.sampling_rate == 1.0
        assert list(meta.saved_model_tags) == ["serve"]
        assert abs(meta.timestamp_secs - time.time()) < 120
    # REST predict is logged too, as the PredictRequest TF Serving's REST handler would build.
    body = {"inputs": {"x": [1.5], "key": ["r"], "count": [4]}}
    answer = requests.post(f"{process.rest_url}/v1/models/full:predict", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    rest = _records(logs / "full", 6)[5].predict_log
    assert tf.make_ndarray(rest.request.inputs["x"]).tolist() == [1.5]
    assert tf.make_ndarray(rest.request.inputs["key"]).tolist() == [b"r"]
    assert tf.make_ndarray(rest.response.outputs["y"]).tolist() == answer.json()["outputs"]["y"]


def test_rate_zero_logs_nothing(served):
    _, channel, logs, _ = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(50):
        stub.Predict(_request("never"), timeout=10)
    stub.Predict(_request("full"), timeout=10)  # a later record of another model ...
    time.sleep(0.3)  # ... and time for this one to have been written, if it were
    assert not list((logs / "never").glob("*"))


def test_rate_is_binomial_within_four_and_a_half_sigma(served):
    # The server's draws cannot be seeded: 4.5 sigma fails by chance about once in 150,000 runs,
    # and still tells 0.3 from 0.1 or 0.5 (30 or 150 of 300 fall outside 54..126).
    _, channel, logs, _ = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    n, rate = 300, RATES["some"]
    for _ in range(n):
        stub.Predict(_request("some", n=1), timeout=10)
    mean, sigma = n * rate, math.sqrt(n * rate * (1 - rate))

    def settled():
        records = _read(logs / "some")
        if records is None:
            return None
        time.sleep(0.3)
        again = _read(logs / "some")
        return again if again is not None and len(again) == len(records) else None

    count = len(wait_for(settled, timeout=20, what="the sampled records"))
    assert abs(count - mean) <= 4.5 * sigma, (count, mean, sigma)


def test_files_rotate_by_size_and_each_parses(served):
    _, channel, logs, _ = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for i in range(40):
        stub.Predict(_request("rotating", n=4, shift=i), timeout=10)
    records = _records(logs / "rotating", 40)
    assert [tf.make_ndarray(r.predict_log.request.inputs["x"])[0] for r in records] == list(
        range(40)
    )
    files = sorted((logs / "rotating").glob("log-*.tfrecord"))
    assert len(files) >= 3, files
    record_size = len(records[0].SerializeToString()) + 16
    for path in files:
        assert path.stat().st_size < ROTATE_BYTES + record_size
        assert list(tf.data.TFRecordDataset(str(path)))  # each file is complete on its own
    assert len({p.name.rsplit("-", 1)[0] for p in files}) == 1  # one start time and pid
    assert [int(p.stem.rsplit("-", 1)[1]) for p in files] == list(range(1, len(files) + 1))


def test_reload_with_bad_logging_config_is_refused_naming_the_model(served):
    _, channel, logs, root = served
    request = model_management_pb2.ReloadConfigRequest()
    model = request.config.model_config_list.config.add(
        name="full", base_path=str(root / "toy"), model_platform="tensorflow"
    )
    model.logging_config.log_collector_config.filename_prefix = str(logs / "full" / "log")
    model.logging_config.sampling_config.sampling_rate = 1.5
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    response = stub.HandleReloadConfigRequest(request, timeout=30)
    assert response.status.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "model full" in response.status.error_message
    assert "sampling_rate" in response.status.error_message


def test_metrics_count_written_records_and_bytes(served):
    process, _, logs, _ = served
    written = _read(logs / "full")
    text = requests.get(f"{process.rest_url}{METRICS_PATH}", timeout=10).text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("perucast_serving_prediction_log")
    }
    assert samples['perucast_serving_prediction_log_records_total{model="full"}'] == len(written)
    size = sum(path.stat().st_size for path in (logs / "full").glob("*.tfrecord"))
    assert samples['perucast_serving_prediction_log_bytes_total{model="full"}'] == size
    assert samples.get('perucast_serving_prediction_log_dropped_total{model="full"}', 0) == 0


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    release = threading.Event()
    dropped: list[str] = []

    class SlowSink(PredictionLogSink):
        def _write_record(self, data: bytes) -> None:
            release.wait(30)  # a disk that has stopped
            super()._write_record(data)

    config = logging_config_pb2.LoggingConfig()
    config.log_collector_config.filename_prefix = str(tmp_path / "slow" / "log")
    config.sampling_config.sampling_rate = 1.0
    written: list[int] = []
    sink = SlowSink(
        "slow",
        config,
        queue_size=2,
        on_dropped=dropped.append,
        on_written=lambda model, size: written.append(size),
    )
    record = prediction_log_pb2.PredictionLog()
    record.log_metadata.model_spec.name = "slow"
    started = time.perf_counter()
    accepted = [sink.submit(lambda: record) for _ in range(1000)]
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, elapsed  # 1000 submits while the writer is stuck
    # The writer holds one record, the queue two more: everything else is dropped and counted.
    assert 2 <= sum(accepted) <= 3
    assert len(dropped) == sink.dropped == 1000 - sum(accepted)
    assert set(dropped) == {"slow"}
    release.set()
    sink.close()
    assert len(written) == sum(accepted)
    files = sorted((tmp_path / "slow").glob("log-*.tfrecord"))
    assert len(files) == 1
    assert len(list(tf.data.TFRecordDataset(str(files[0])))) == sum(accepted)
    assert not sink.submit(lambda: record)  # closed: dropped, not queued


def test_sigterm_writes_every_queued_record_and_exits_zero(served):
    """Last test on the module's server: it stops it."""
    process, channel, logs, _ = served
    before = len(_records(logs / "rotating", 40))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    futures = [stub.Predict.future(_request("rotating", n=64), timeout=10) for _ in range(30)]
    for future in futures:
        future.result()
    assert process.stop() == 0  # at once: the queue may still hold records
    records = _read(logs / "rotating")
    assert records is not None and len(records) == before + 30


@pytest.mark.parametrize(
    ("logging", "message"),
    [
        (
            _logging("PREFIX", 0.5, kind="kafka"),
            "model badlog: logging_config.log_collector_config.type 'kafka' is not supported",
        ),
        (
            _logging("PREFIX", 1.5),
            "model badlog: logging_config.sampling_config.sampling_rate must be in [0, 1]; was 1.5",
        ),
        (
            _logging("", 0.5),
            "model badlog: logging_config.log_collector_config.filename_prefix is empty",
        ),
    ],
    ids=["collector-type", "sampling-rate", "empty-prefix"],
)
def test_malformed_logging_config_stops_the_server_naming_it(tmp_path, logging, message):
    config = tmp_path / "models.config"
    config.write_text(
        model_config_text(
            {"good": tmp_path / "m", "badlog": tmp_path / "m"},
            {"badlog": logging.replace("PREFIX", str(tmp_path / "l"))},
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "serving", f"--model_config_file={config}", f"--port={free_port()}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert f"--model_config_file={config}: {message}" in result.stderr
    assert not (tmp_path / "l").exists()


def test_config_change_closes_removed_and_changed_sinks_and_flushes(tmp_path):
    from tensorflow_serving.config import model_server_config_pb2

    from serving.prediction_log import PredictionLogger

    def model(name: str, rate: float):
        config = model_server_config_pb2.ModelConfig(name=name, base_path="/m")
        config.logging_config.log_collector_config.filename_prefix = str(tmp_path / name / "log")
        config.logging_config.sampling_config.sampling_rate = rate
        return config

    logger = PredictionLogger()
    logger.update({"a": model("a", 1.0), "b": model("b", 1.0)})
    sinks = dict(logger._sinks)
    record = prediction_log_pb2.PredictionLog()
    for sink in sinks.values():
        for _ in range(3):
            assert sink.submit(lambda: record)
    logger.update({"a": model("a", 1.0), "c": model("c", 0.5)})
    assert logger._sinks["a"] is sinks["a"]  # unchanged config: same sink, same file
    assert not sinks["b"].submit(lambda: record)  # removed: closed, its records written
    assert len(list(tf.data.TFRecordDataset(str(sinks["b"].files[0])))) == 3
    logger.update({"a": model("a", 0.5)})  # a changed config gets a new sink
    assert logger._sinks["a"] is not sinks["a"]
    assert len(list(tf.data.TFRecordDataset(str(sinks["a"].files[0])))) == 3
    logger.close()
    assert logger._sinks == {}
