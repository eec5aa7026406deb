"""`serving.client.ForecastClient` and the `perucast serve` / `perucast predict` commands, over
the wire against real ``perucast-model-server`` processes.

One server for the module serves three models exported here in a few seconds:

* ``crop_demand`` and ``fish_stock``: real (untrained) perucast networks built with
  ``models.network.build_network`` from made-up preprocessing statistics and exported with
  ``perucast.export.export_model``; the client's forecasts must equal the in-process
  ``perucast.export.load_serving`` outputs;
* ``toy_forecast``: a tiny p10/p50/p90 model with string, int64 and float32 inputs whose output
  depends on the version (1 and 2, labels stable=1 and canary=2), to tell versions apart.

UNAVAILABLE retries go through `DroppingProxy`, a TCP forwarder to the server that closes its
first N connections (as a server that is not up yet would refuse them), so the number of
failed attempts is fixed and the test does not depend on timing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from serving_harness import ROOT, ServerProcess, free_port, model_config_text, wait_for
from typer.testing import CliRunner

from serving.client import (
    ForecastClient,
    ModelSpec,
    ServingClientError,
    VersionStatus,
    column_to_proto,
    tensor_to_array,
)

TOY = "toy_forecast"
TOY_HORIZON = 3
TOY_OFFSETS = {1: 0.0, 2: 10.0}
CROP_ROWS = 40
FISH_ROWS = 7


# --- models -----------------------------------------------------------------------------------


def export_forecast_toy(base: Path, version: int, offset: float) -> Path:
    """A p10/p50/p90 model, written atomically like perucast.export.

    ``p50[:, h] = value (NaN: 0) + code + offset + h + 100 * (zone == "north")`` for h = 0..2,
    ``p10 = p50 - 1``, ``p90 = p50 + 1``.
    """
    import tensorflow as tf

    class Toy(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="zone"),
                tf.TensorSpec([None], tf.int64, name="code"),
                tf.TensorSpec([None], tf.float32, name="value"),
            ]
        )
        def serve(self, zone, code, value):
            value = tf.where(tf.math.is_nan(value), tf.zeros_like(value), value)
            base = value + tf.cast(code, tf.float32) + offset
            base += tf.where(tf.equal(zone, "north"), 100.0, 0.0)
            p50 = base[:, None] + tf.range(TOY_HORIZON, dtype=tf.float32)[None, :]
            return {"p10": p50 - 1.0, "p50": p50, "p90": p50 + 1.0}

    module = Toy()
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}"
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    return tmp.rename(base / str(version))


def toy_features(n: int = 4) -> dict[str, np.ndarray]:
    value = np.arange(n, dtype=np.float32) * 1.5
    value[1 % n] = np.nan
    zones = np.array(["north", "south", "centre", "north"] * n, dtype=object)[:n]
    return {"zone": zones, "code": np.arange(n, dtype=np.int64) * 2, "value": value}


def toy_p50(features: dict[str, np.ndarray], offset: float) -> np.ndarray:
    value = np.nan_to_num(np.asarray(features["value"], dtype=np.float32), nan=0.0)
    base = value + np.asarray(features["code"], np.float32) + offset
    base = base + np.where(np.asarray(features["zone"]) == "north", 100.0, 0.0)
    return (base[:, None] + np.arange(TOY_HORIZON)[None, :]).astype(np.float32)


def fake_statistics(use_case: str):
    """A feature spec and made-up ``statistics.json`` content a network can be built from."""
    from models import get_use_case
    from models.crop_demand.schema import CROPS, REGIONS
    from models.fish_stock.schema import SEASONS, ZONES

    uc = get_use_case(use_case)
    spec = uc.feature_spec(uc.default_horizon)
    numeric = {
        name: {"mean": 100.0, "std": 20.0, "quantiles": {"0.1": 60.0, "0.5": 100.0, "0.9": 140.0}}
        for name in spec.numeric
    }
    if use_case == "crop_demand":
        vocab = {"region": list(REGIONS[:5]), "crop": list(CROPS[:3])}
        vocab |= {c: [0, 1] for c in spec.categorical if c.startswith("fut_holiday")}
        keys = [{"region": r, "crop": c} for r in vocab["region"] for c in vocab["crop"]]
    else:
        vocab = {"zone": list(ZONES), "season": list(SEASONS)}
        keys = [{"zone": z} for z in ZONES]
    series = [
        {**key, "target_mean": 80.0 + 10 * i, "target_std": 15.0 + i} for i, key in enumerate(keys)
    ]
    categorical = {name: {"vocabulary": values} for name, values in vocab.items()}
    return spec, {"numeric": numeric, "categorical": categorical, "series": series}


def export_untrained(use_case: str, repository: Path, seed: int = 1):
    """Exports an untrained network of `use_case`; its version dir, spec, stats and dtypes."""
    from models import get_use_case
    from models.network import build_network, input_dtypes
    from perucast.export import export_model

    spec, stats = fake_statistics(use_case)
    model = build_network(spec, get_use_case(use_case).network_spec(), stats, seed=seed)
    dtypes = input_dtypes(spec, stats)
    version_dir = export_model(model, spec, dtypes, repository, use_case, {"seed": seed})
    return version_dir, spec, stats, dtypes


def random_features(spec, stats, dtypes, rows: int, seed: int) -> pd.DataFrame:
    """Raw feature rows (10% of numeric values missing, one unseen key) with the origin time."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {
        spec.time_column: pd.date_range("2024-01-01", periods=rows, freq=spec.period).to_numpy()
    }
    for name, dtype in dtypes.items():
        if dtype == "string":
            vocab = [str(v) for v in stats["categorical"][name]["vocabulary"]]
            values = rng.choice(
                [*vocab, "atlantis"], rows, p=[0.9 / len(vocab)] * len(vocab) + [0.1]
            )
            columns[name] = values.astype(object)
        elif dtype == "int64":
            columns[name] = rng.integers(0, 2, rows).astype(np.int64)
        else:
            values = rng.normal(100.0, 25.0, rows)
            values[rng.random(rows) < 0.1] = np.nan
            columns[name] = values
    return pd.DataFrame(columns)


def in_process(version_dir: Path, frame: pd.DataFrame, dtypes) -> dict[str, np.ndarray]:
    """The exported signature run in this process (the reference for the server's answers)."""
    import tensorflow as tf

    from perucast.export import load_serving

    serve = load_serving(version_dir)
    inputs = {
        name: tf.constant(
            frame[name].astype(str).to_numpy() if dtype == "string" else frame[name].to_numpy(),
            dtype=tf.as_dtype(dtype),
        )
        for name, dtype in dtypes.items()
    }
    return {name: tensor.numpy() for name, tensor in serve(**inputs).items()}


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    """The module's model repository, with the toy model first (it is the quickest to export)."""
    root = tmp_path_factory.mktemp("client-repo")
    for version, offset in TOY_OFFSETS.items():
        export_forecast_toy(root / "models" / TOY, version, offset)
    return root


@pytest.fixture(scope="module")
def cli_serve(toy_repo):
    """``perucast serve --model toy_forecast`` on the repository, started before the other
    models are exported so that it loads meanwhile; `test_cli_serve_runs_a_repository_until_
    sigterm` checks it and stops it."""
    port, rest_port = free_port(), free_port()
    log_path = toy_repo / "perucast-serve.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "perucast.cli", "serve", "--model-repository"]
    args += [str(toy_repo / "models"), "--port", str(port), "--rest-port", str(rest_port)]
    args += ["--model", TOY, "--poll-seconds", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, port, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def repo(toy_repo, cli_serve):
    root = toy_repo
    models = root / "models"
    crop_dir, crop_spec, crop_stats, crop_dtypes = export_untrained("crop_demand", models)
    fish_dir, fish_spec, fish_stats, fish_dtypes = export_untrained("fish_stock", models)
    crop_frame = random_features(crop_spec, crop_stats, crop_dtypes, CROP_ROWS, seed=5)
    fish_frame = random_features(fish_spec, fish_stats, fish_dtypes, FISH_ROWS, seed=6)
    return {
        "root": root,
        "models": models,
        "crop": (crop_dir, crop_spec, crop_dtypes, crop_frame),
        "fish": (fish_dir, fish_spec, fish_dtypes, fish_frame),
    }


@pytest.fixture(scope="module")
def server(repo):
    models = repo["models"]
    config = repo["root"] / "models.config"
    config.write_text(
        model_config_text(
            {name: models / name for name in ("crop_demand", "fish_stock", TOY)},
            {
                TOY: "model_version_policy { all {} } "
                'version_labels { key: "stable" value: 1 } '
                'version_labels { key: "canary" value: 2 }'
            },
        )
    )
    process = ServerProcess(
        [f"--model_config_file={config}", "--file_system_poll_wait_seconds=0"],
        repo["root"] / "server.log",
        rest=False,
        ready_models=("crop_demand", "fish_stock", TOY),
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with ForecastClient(server.target, timeout_s=60) as client:
        yield client


@pytest.fixture(scope="module")
def crop_expected(repo):
    version_dir, _, dtypes, frame = repo["crop"]
    return in_process(version_dir, frame, dtypes)


# --- predict: values, inputs, outputs -------------------------------------------------------


def test_predict_crop_demand_from_a_dataframe_equals_the_in_process_model(
    client, repo, crop_expected
):
    _, spec, _, frame = repo["crop"]
    forecast = client.predict_crop_demand(frame)
    assert forecast.model_spec == ModelSpec("crop_demand", 1, "serving_default")
    assert (len(forecast), forecast.horizon) == (CROP_ROWS, spec.horizon)
    for name in ("p10", "p50", "p90"):
        got = getattr(forecast, name)
        assert got.dtype == np.float32 and got.shape == (CROP_ROWS, spec.horizon)
        np.testing.assert_allclose(got, crop_expected[name], rtol=1e-5, atol=1e-3)

    long = forecast.to_frame()
    assert list(long.columns) == [
        "origin", "region", "crop", "horizon", "target_time", "p10", "p50", "p90"
    ]  # fmt: skip
    assert len(long) == CROP_ROWS * spec.horizon
    np.testing.assert_allclose(
        long["p50"].to_numpy(), crop_expected["p50"].reshape(-1), rtol=1e-5, atol=1e-3
    )
    first = long.iloc[: spec.horizon]
    assert first["horizon"].tolist() == list(range(1, spec.horizon + 1))
    assert (first["region"] == frame["region"].iloc[0]).all()
    assert (first["origin"] == frame["week_start"].iloc[0]).all()
    assert first["target_time"].iloc[2] == frame["week_start"].iloc[0] + pd.Timedelta(weeks=3)
    as_frame = client.predict_crop_demand(frame, as_frame=True)
    pd.testing.assert_frame_equal(as_frame, long)


def test_predict_fish_stock_from_a_dict_of_arrays(client, repo):
    version_dir, spec, dtypes, frame = repo["fish"]
    expected = in_process(version_dir, frame, dtypes)
    features = {name: frame[name].to_numpy() for name in dtypes}  # no time column
    forecast = client.predict_fish_stock(features)
    assert forecast.model_spec == ModelSpec("fish_stock", 1, "serving_default")
    np.testing.assert_allclose(forecast.p50, expected["p50"], rtol=1e-5, atol=1e-3)
    long = forecast.to_frame()
    assert list(long.columns) == ["zone", "horizon", "p10", "p50", "p90"]
    assert long["zone"].tolist() == list(np.repeat(features["zone"], spec.horizon))
    np.testing.assert_allclose(long["p90"], expected["p90"].reshape(-1), rtol=1e-5, atol=1e-3)


def test_dict_and_dataframe_inputs_give_the_same_forecast(server):
    features = toy_features(5)
    expected = toy_p50(features, TOY_OFFSETS[2])
    as_lists = {
        "zone": [z.encode() if i % 2 else z for i, z in enumerate(features["zone"])],  # bytes too
        "code": features["code"].tolist(),
        "value": [None if np.isnan(v) else float(v) for v in features["value"]],  # None = NaN
    }
    frame = pd.DataFrame(features).astype({"value": "Float64"})  # pd.NA for the missing value
    frame.loc[1, "value"] = pd.NA
    with ForecastClient(server.target, model_name=TOY) as client:
        results = [client.predict(x) for x in (features, as_lists, frame)]
        long = client.predict(frame, as_frame=True)
    for forecast in results:
        np.testing.assert_allclose(forecast.p50, expected)
        np.testing.assert_allclose(forecast.p10, expected - 1.0)
        np.testing.assert_allclose(forecast.p90, expected + 1.0)
        assert forecast.model_spec == ModelSpec(TOY, 2, "serving_default")
    assert list(long.columns) == ["horizon", "p10", "p50", "p90"]  # no use case: no keys
    assert long["horizon"].tolist() == [1, 2, 3] * 5
    assert list(results[0].to_frame(keys=["zone", "code"]).columns[:2]) == ["zone", "code"]


@pytest.mark.parametrize(
    ("selector", "version"),
    [({}, 2), ({"version": 1}, 1), ({"version": 2}, 2), ({"label": "stable"}, 1),
     ({"label": "canary"}, 2)],
)  # fmt: skip
def test_version_and_label_selection(server, selector, version):
    features = toy_features()
    with ForecastClient(server.target, model_name=TOY, **selector) as client:
        forecast = client.predict(features)
        assert forecast.model_spec == ModelSpec(TOY, version, "serving_default")
        np.testing.assert_allclose(forecast.p50, toy_p50(features, TOY_OFFSETS[version]))
        assert client.metadata().version == version


def test_status_and_metadata(server):
    with ForecastClient(server.target, model_name=TOY) as client:
        assert client.status() == [
            VersionStatus(1, "AVAILABLE", ""),
            VersionStatus(2, "AVAILABLE", ""),
        ]
        assert client.status("crop_demand") == [(1, "AVAILABLE", "")]
        meta = client.metadata()
    assert (meta.name, meta.version, meta.signature, meta.horizon) == (
        TOY,
        2,
        "serving_default",
        TOY_HORIZON,
    )
    assert meta.inputs == {"zone": "string", "code": "int64", "value": "float32"}
    assert meta.outputs == {"p10": "float32", "p50": "float32", "p90": "float32"}
    with ForecastClient(server.target, model_name=TOY, label="stable") as client:
        assert client.status() == [(1, "AVAILABLE", "")]


def test_metadata_is_read_once_per_version(server, monkeypatch):
    with ForecastClient(server.target, model_name=TOY) as client:
        calls = []
        real = client._predict_stub.GetModelMetadata

        def counting(request, **kwargs):
            calls.append(request.model_spec.name)
            return real(request, **kwargs)

        monkeypatch.setattr(client._predict_stub, "GetModelMetadata", counting)
        for _ in range(3):
            client.predict(toy_features())
        assert calls == [TOY]


def test_one_client_serves_many_threads(server):
    from concurrent.futures import ThreadPoolExecutor

    batches = [{**toy_features(), "code": np.arange(4, dtype=np.int64) + i} for i in range(32)]
    with (
        ForecastClient(server.target, model_name=TOY, label="stable") as client,
        ThreadPoolExecutor(8) as pool,
    ):
        forecasts = list(pool.map(client.predict, batches))
    for batch, forecast in zip(batches, forecasts, strict=True):
        np.testing.assert_allclose(forecast.p50, toy_p50(batch, TOY_OFFSETS[1]))
        assert forecast.model_spec.version == 1


# --- local validation -----------------------------------------------------------------------


def test_bad_columns_are_refused_locally_before_sending(server, monkeypatch):
    with ForecastClient(server.target, model_name=TOY) as client:
        client.metadata()
        sent = []
        monkeypatch.setattr(client._predict_stub, "Predict", lambda *a, **k: sent.append(a))
        features = toy_features()
        cases = {
            "missing feature columns .*'value'": {k: features[k] for k in ("zone", "code")},
            "unknown feature columns .*'bogus'": {**features, "bogus": np.zeros(4)},
            "different lengths": {**features, "code": features["code"][:2]},
            "'code' has 1 missing values": {**features, "code": np.array([1.0, np.nan, 2, 3])},
            "'code' must hold whole numbers": {**features, "code": np.array([1.5, 1, 2, 3])},
            "'zone' has a missing value at row 2": {
                **features,
                "zone": np.array(["a", "b", None, "c"], dtype=object),
            },
            "'value' must be numeric": {**features, "value": np.array(["1", "x", "2", "3"])},
            "no rows": {k: v[:0] for k, v in features.items()},
        }
        for message, bad in cases.items():
            with pytest.raises(ValueError, match=message):
                client.predict(bad)
        # Extra columns pass when ignored; whole floats and numeric strings are converted.
        ok = {**features, "note": ["x"] * 4, "code": features["code"].astype(float)}
        with pytest.raises(ValueError, match="unknown feature columns"):
            client.predict(ok)
        assert sent == []
    with ForecastClient(server.target, model_name=TOY) as client:
        forecast = client.predict(ok, ignore_extra=True)
        np.testing.assert_allclose(forecast.p50, toy_p50(features, TOY_OFFSETS[2]))


def test_tensor_proto_round_trip_matches_tensorflow():
    import tensorflow as tf

    values = np.array([1.5, np.nan, -2.0], np.float32)
    proto = column_to_proto("v", values, "float32")
    np.testing.assert_array_equal(tf.make_ndarray(proto), values)
    proto = column_to_proto("k", ["a", b"b", "ñ"], "string")
    assert tf.make_ndarray(proto).tolist() == [b"a", b"b", "ñ".encode()]
    assert tensor_to_array(tf.make_tensor_proto(np.ones((2, 3), np.float32))).shape == (2, 3)
    compressed = tf.make_tensor_proto([7.0, 7.0, 7.0, 7.0], shape=[2, 2])  # float_val form
    assert tensor_to_array(compressed).tolist() == [[7.0, 7.0], [7.0, 7.0]]


def test_an_unknown_signature_is_refused(server):
    with (
        ForecastClient(server.target, model_name=TOY, signature="nope") as client,
        pytest.raises(ServingClientError) as info,
    ):
        client.predict(toy_features())
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no signature 'nope'" in info.value.details


# --- server errors, retries, deadlines ------------------------------------------------------


def test_server_errors_keep_their_grpc_code_and_message(server):
    with (
        ForecastClient(server.target, model_name="nope", retries=0) as client,
        pytest.raises(ServingClientError) as info,
    ):
        client.predict(toy_features())
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.details == "Servable not found for request: Latest(nope)"
    assert str(info.value) == "NOT_FOUND: Servable not found for request: Latest(nope)"

    with (
        ForecastClient(server.target, model_name=TOY, label="nope") as client,
        pytest.raises(ServingClientError) as info,
    ):
        client.status()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: nope" in info.value.details

    with (
        ForecastClient(server.target, model_name=TOY, version=9) as client,
        pytest.raises(ServingClientError) as info,
    ):
        client.predict(toy_features())
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.details == f"Servable not found for request: Specific({TOY}, 9)"


class DroppingProxy:
    """A TCP forwarder to `upstream` that closes (RST) its first `drop` connections."""

    def __init__(self, upstream: str, drop: int):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.drop = drop
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.drop:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            conn.settimeout(None)
            upstream = socket.create_connection(self.upstream)
            self._sockets += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()


def test_unavailable_is_retried_until_the_server_answers(server):
    proxy = DroppingProxy(server.target, drop=2)
    try:
        # Backoff: random(0, 0.5 s · 2^n), longer than the 100 ms reconnect backoff of the
        # channel, so the four retries cannot all fall before the third connection.
        with ForecastClient(
            proxy.target, model_name=TOY, retries=4, initial_backoff_s=0.5, timeout_s=30
        ) as client:
            forecast = client.predict(toy_features())
        np.testing.assert_allclose(forecast.p50, toy_p50(toy_features(), TOY_OFFSETS[2]))
        assert proxy.connections == 3  # two refused, the third carried both calls
    finally:
        proxy.close()


def test_without_retries_unavailable_fails_at_once(server):
    proxy = DroppingProxy(server.target, drop=1)
    try:
        with (
            ForecastClient(proxy.target, model_name=TOY, retries=0, timeout_s=30) as client,
            pytest.raises(ServingClientError) as info,
        ):
            client.predict(toy_features())
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert proxy.connections == 1
    finally:
        proxy.close()


def test_nothing_listening_is_unavailable_after_the_retries():
    with (
        ForecastClient(f"127.0.0.1:{free_port()}", model_name=TOY, retries=2) as client,
        pytest.raises(ServingClientError) as info,
    ):
        client.status()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_deadline_exceeded(client, repo):
    _, spec, dtypes, _ = repo["crop"]
    _, stats = fake_statistics("crop_demand")
    big = random_features(spec, stats, dtypes, 20_000, seed=9)  # ~6 MB request
    client.metadata("crop_demand")  # the metadata is cached: only Predict runs below
    with pytest.raises(ServingClientError) as info:
        client.predict_crop_demand(big, timeout_s=0.001)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server is fine afterwards.
    assert len(client.predict_crop_demand(big.head(3))) == 3


def test_client_arguments_are_checked():
    with pytest.raises(ValueError, match="not both"):
        ForecastClient("localhost:1", model_name="m", version=1, label="stable")
    with pytest.raises(ValueError, match="retries"):
        ForecastClient("localhost:1", model_name="m", retries=5)
    with pytest.raises(ValueError, match="unknown use case"):
        ForecastClient("localhost:1", use_case="wheat")
    with ForecastClient("localhost:1") as client, pytest.raises(ValueError, match="model name"):
        client.predict(toy_features())


# --- the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_cli_predict_prints_the_table_and_writes_csv(server, repo, crop_expected, tmp_path, fmt):
    from perucast.cli import app

    _, spec, _, frame = repo["crop"]
    path = tmp_path / f"features.{fmt}"
    extra = frame.assign(target_h1=1.0)  # a column the model does not take: ignored
    extra.to_parquet(path) if fmt == "parquet" else extra.to_csv(path, index=False)
    out = tmp_path / "forecast.csv"
    args = ["predict", "--use-case", "crop_demand", "--features", str(path)]
    args += ["--target", server.target, "--rows", "3", "--out", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "crop_demand version 1 (3 rows)" in result.output
    for word in ("origin", "region", "horizon", "target_time", "p10", "p50", "p90"):
        assert word in result.output
    assert str(frame["region"].iloc[0]) in result.output
    written = pd.read_csv(out)
    assert list(written.columns) == [
        "origin", "region", "crop", "horizon", "target_time", "p10", "p50", "p90"
    ]  # fmt: skip
    assert len(written) == 3 * spec.horizon
    np.testing.assert_allclose(
        written["p50"], crop_expected["p50"][:3].reshape(-1), rtol=1e-5, atol=1e-3
    )
    assert f"{crop_expected['p50'][0, 0]:,.2f}" in result.output


def test_cli_predict_errors_exit_non_zero_with_the_server_message(server, repo, tmp_path):
    from perucast.cli import app

    path = tmp_path / "features.parquet"
    repo["crop"][3].to_parquet(path)
    args = ["predict", "--use-case", "crop_demand", "--features", str(path)]
    result = CliRunner().invoke(app, [*args, "--target", server.target, "--version", "9"])
    assert result.exit_code == 1
    assert "NOT_FOUND: Servable not found for request: Specific(crop_demand, 9)" in result.output
    fish = ["predict", "--use-case", "fish_stock", "--features", str(path)]
    result = CliRunner().invoke(app, [*fish, "--target", server.target])
    assert result.exit_code == 1
    assert "missing feature columns for model 'fish_stock' version 1" in result.output
    result = CliRunner().invoke(app, [*args, "--version", "1", "--label", "stable"])
    assert result.exit_code == 2 and "not both" in result.output
    result = CliRunner().invoke(app, ["predict", "--use-case", "crop_demand", "--features", "no"])
    assert result.exit_code == 3


def test_cli_serve_runs_a_repository_until_sigterm(cli_serve):
    process, port, log_path = cli_serve
    with ForecastClient(f"127.0.0.1:{port}", model_name=TOY, timeout_s=5) as client:

        def ready():
            assert process.poll() is None, log_path.read_text()
            try:
                return client.status()
            except ServingClientError:
                return None

        # The latest version only: TF Serving's default version policy.
        assert wait_for(ready, timeout=120, interval=0.3, what="perucast serve") == [
            (2, "AVAILABLE", "")
        ]
        forecast = client.predict(toy_features())
        np.testing.assert_allclose(forecast.p50, toy_p50(toy_features(), TOY_OFFSETS[2]))
        with pytest.raises(ServingClientError) as info:
            client.status("crop_demand")  # not among the --model options
        assert info.value.code == grpc.StatusCode.NOT_FOUND
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert f"serving {TOY} (versions 1, 2)" in log_path.read_text()


def test_cli_serve_refuses_a_missing_repository_or_model(repo, tmp_path):
    from perucast.cli import app

    result = CliRunner().invoke(app, ["serve", "--model-repository", str(tmp_path / "none")])
    assert result.exit_code == 3
    result = CliRunner().invoke(
        app, ["serve", "--model-repository", str(repo["models"]), "--model", "wheat"]
    )
    assert result.exit_code == 3
    assert "wheat" in result.output and "crop_demand" in result.output


def test_serve_writes_a_config_for_every_model_directory(repo):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from perucast.cli import model_directories, model_server_config_text

    found = model_directories(repo["models"])
    assert found == {"crop_demand": [1], "fish_stock": [1], TOY: [1, 2]}
    config = text_format.Parse(
        model_server_config_text(repo["models"], list(found)),
        model_server_config_pb2.ModelServerConfig(),
    )
    entries = {c.name: c.base_path for c in config.model_config_list.config}
    assert entries == {name: str((repo["models"] / name).resolve()) for name in found}
