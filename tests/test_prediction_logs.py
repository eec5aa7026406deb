"""Reading prediction logs (`perucast/prediction_logs.py`) into one row per predicted instance.

The logs are real ``PredictionLog`` TFRecords: most are built here with ``tensorflow_serving.apis``
and written with ``tf.io.TFRecordWriter`` (so each case is known exactly), and one set is written
by a real ``perucast-model-server`` serving the toy model with a ``logging_config``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from factories import predict_log_record
from serving_harness import ServerProcess, model_config_text
from serving_models import export_toy, toy_request_inputs
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from perucast.prediction_logs import log_files, read_predictions

T0 = 1_780_000_000  # 2026-05-28T20:26:40Z
H = 4


_predict = predict_log_record


def _crop(secs: int, regions: list[str], version: int = 1) -> prediction_log_pb2.PredictionLog:
    n = len(regions)
    base = np.arange(n * H, dtype=np.float32).reshape(n, H)
    return _predict(
        "crop_demand",
        version,
        secs,
        {
            "region": np.array([r.encode() for r in regions], dtype=object),
            "crop": np.array([b"papa"] * n, dtype=object),
            "fut_holiday_h1": np.arange(n, dtype=np.int64),
            "demand_tonnes": np.linspace(1.5, 2.5, n, dtype=np.float32),
        },
        {"p10": base, "p50": base + 100, "p90": base + 200},
    )


def _write(path: Path, records: list) -> Path:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prediction-logs")
    classify = prediction_log_pb2.PredictionLog()
    classify.log_metadata.model_spec.name = "crop_demand"
    classify.log_metadata.timestamp_secs = T0 + 10
    classify.classify_log.request.model_spec.name = "crop_demand"
    unbatched = _predict(
        "crop_demand", 1, T0 + 20, {"pair": np.ones((2, 2), np.float32)}, {"sum": np.ones(2)}
    )
    fish = _predict(
        "fish_stock", 3, T0 + 3600, {"zone": np.array([b"norte"])}, {"p50": np.ones((1, H))}
    )
    _write(
        root / "crop-20260528T202640Z-41-00001.tfrecord",
        [_crop(T0, ["lima", "cusco", "piura"]), classify, unbatched, fish],
    )
    # The second file is still being written: its last record is cut short.
    second = _write(
        root / "crop-20260528T202640Z-41-00002.tfrecord",
        [_crop(T0 + 7200, ["puno"], version=2), _crop(T0 + 7300, ["ica", "tacna"], version=2)],
    )
    data = second.read_bytes()
    second.write_bytes(data[:-7])
    # Another prefix that starts the same way, and a file that is not a TFRecord at all.
    _write(root / "crop_v2-20260528T202640Z-41-00001.tfrecord", [_crop(T0, ["lima"])])
    (root / "junk-20260528T202640Z-41-00001.tfrecord").write_bytes(b"not a tfrecord\x00" * 5)
    return root


def test_log_files_of_a_prefix_or_a_directory(logs: Path) -> None:
    assert [p.name for p in log_files(logs / "crop")] == [
        "crop-20260528T202640Z-41-00001.tfrecord",
        "crop-20260528T202640Z-41-00002.tfrecord",
    ]
    assert [p.name for p in log_files(logs / "crop_v2")] == [
        "crop_v2-20260528T202640Z-41-00001.tfrecord"
    ]
    assert len(log_files(logs)) == 4
    assert log_files(logs / "nothing") == []
    assert log_files(logs / "missing-dir" / "crop") == []


def test_batches_become_rows_with_decoded_inputs_and_per_row_outputs(logs: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="perucast.prediction_logs"):
        frame = read_predictions(logs / "crop", show_progress=False)
    # 3 rows (lima, cusco, piura) + 1 fish_stock row + 1 row (puno) before the cut record.
    assert len(frame) == 5
    assert list(frame.columns[:6]) == [
        "timestamp",
        "model_name",
        "model_version",
        "signature",
        "record",
        "row",
    ]
    assert frame["model_name"].tolist() == ["crop_demand"] * 3 + ["fish_stock", "crop_demand"]
    assert frame["model_version"].tolist() == [1, 1, 1, 3, 2]
    assert frame["record"].tolist() == [0, 0, 0, 3, 4]  # classify (1) and unbatched (2) skipped
    assert frame["row"].tolist() == [0, 1, 2, 0, 0]
    assert frame["signature"].eq("serving_default").all()
    assert str(frame["timestamp"].dtype).startswith("datetime64") and frame["timestamp"].dt.tz
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2026-05-28T20:26:40Z")
    assert frame["timestamp"].iloc[4] == pd.Timestamp(T0 + 7200, unit="s", tz="UTC")
    assert frame["region"].tolist()[:3] == ["lima", "cusco", "piura"]
    assert frame["region"].iloc[4] == "puno" and pd.isna(frame["region"].iloc[3])  # fish: none
    assert frame["zone"].isna().tolist() == [True, True, True, False, True]
    assert frame["zone"].iloc[3] == "norte"
    assert frame["demand_tonnes"].dtype == np.float64
    assert frame["demand_tonnes"].tolist()[:3] == [1.5, 2.0, 2.5]
    assert np.isnan(frame["demand_tonnes"].iloc[3])
    assert frame["fut_holiday_h1"].dtype == "Int64"
    assert frame["fut_holiday_h1"].tolist() == [0, 1, 2, pd.NA, 0]
    p50 = frame["p50"].iloc[1]
    assert isinstance(p50, np.ndarray) and p50.dtype == np.float64
    np.testing.assert_array_equal(p50, [104.0, 105.0, 106.0, 107.0])  # row 1 of base + 100
    np.testing.assert_array_equal(frame["p90"].iloc[4], [200.0, 201.0, 202.0, 203.0])
    assert frame.attrs["skipped"] == {"classify_log": 1, "unbatched_predict": 1}
    assert frame.attrs["records"] == 5 and frame.attrs["filtered"] == 0
    assert frame.attrs["unreadable_files"] == [
        str(logs / "crop-20260528T202640Z-41-00002.tfrecord")
    ]
    assert (
        "00002.tfrecord: unreadable after record 1 of the file" in caplog.text
        and "truncated record" in caplog.text
    )


def test_model_and_time_window_filters(logs: Path) -> None:
    crop = read_predictions(logs / "crop", model_name="crop_demand", show_progress=False)
    assert crop["model_name"].unique().tolist() == ["crop_demand"]
    assert len(crop) == 4 and "zone" not in crop.columns
    assert crop.attrs["filtered"] == 1  # the fish_stock record
    # [start, end): T0 itself is in, T0 + 7200 is the end and out; naive times are UTC.
    window = read_predictions(
        logs / "crop",
        start=pd.Timestamp(T0, unit="s", tz="UTC"),
        end=pd.Timestamp(T0 + 7200, unit="s").to_pydatetime(),
        show_progress=False,
    )
    assert window["record"].tolist() == [0, 0, 0, 3]
    later = read_predictions(logs / "crop", start="2026-05-28T21:00:00Z", show_progress=False)
    assert later["record"].tolist() == [3, 4]
    assert later.attrs["skipped"] == {}  # the classify and unbatched records are outside
    none = read_predictions(logs / "crop", model_name="other", show_progress=False)
    assert len(none) == 0 and list(none.columns) == [
        "timestamp",
        "model_name",
        "model_version",
        "signature",
        "record",
        "row",
    ]


def test_a_file_that_is_not_a_tfrecord_is_reported_not_raised(logs: Path, caplog) -> None:
    junk = logs / "junk-20260528T202640Z-41-00001.tfrecord"
    crop = logs / "crop-20260528T202640Z-41-00001.tfrecord"
    with caplog.at_level(logging.WARNING, logger="perucast.prediction_logs"):
        frame = read_predictions([junk, crop], show_progress=False)
    assert len(frame) == 4  # all of the good file
    assert frame.attrs["unreadable_files"] == [str(junk)]
    assert str(junk) in caplog.text


@pytest.mark.slow  # a server process: about 6 s on 2 cores
def test_records_written_by_the_model_server(tmp_path: Path) -> None:
    """The real server's records: a gRPC Predict batch and one on a [batch, 2] signature."""
    export_toy(tmp_path / "toy", 1, offset=2.0, warmup=False)
    prefix = tmp_path / "logs" / "toy"
    config = tmp_path / "models.config"
    logging_config = (
        f'logging_config {{ log_collector_config {{ filename_prefix: "{prefix}" }} '
        "sampling_config { sampling_rate: 1.0 } }"
    )
    config.write_text(model_config_text({"toy": tmp_path / "toy"}, {"toy": logging_config}))
    process = ServerProcess([f"--model_config_file={config}"], tmp_path / "server.log", rest=False)
    process.ready_models = ("toy",)
    process.start()
    try:
        with grpc.insecure_channel(process.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "toy"
            for key, value in toy_request_inputs(3).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            answer = stub.Predict(request, timeout=30)
            pair = predict_pb2.PredictRequest()
            pair.model_spec.name = "toy"
            pair.model_spec.signature_name = "total"
            pair.inputs["pair"].CopyFrom(tf.make_tensor_proto(np.ones((2, 2), np.float32)))
            stub.Predict(pair, timeout=30)
    finally:
        assert process.stop() == 0  # SIGTERM flushes and closes the log file
    frame = read_predictions(prefix, show_progress=False)
    assert len(frame) == 3
    assert frame["model_name"].eq("toy").all() and frame["model_version"].eq(1).all()
    assert frame["signature"].eq("serving_default").all()
    assert frame["key"].tolist() == ["k0", "k1", "k2"]
    assert frame["x"].tolist() == [0.0, 1.0, 2.0] and frame["count"].tolist() == [0, 1, 2]
    assert frame["y"].tolist() == tf.make_ndarray(answer.outputs["y"]).tolist()
    assert frame["tagged"].tolist() == ["k0!", "k1!", "k2!"]
    assert frame.attrs["skipped"] == {"unbatched_predict": 1}
    assert frame.attrs["unreadable_files"] == []
    age = pd.Timestamp.now(tz="UTC") - frame["timestamp"].iloc[0]
    assert pd.Timedelta(0) <= age < pd.Timedelta(minutes=5)
