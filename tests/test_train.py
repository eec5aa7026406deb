"""The forecasting network, the train step (1 process and 2 loopback workers) and the export.

Real TensorFlow throughout: tf_keras models, MultiWorkerMirroredStrategy worker processes on
127.0.0.1 ports, SavedModels loaded back with ``tf.saved_model.load``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from components.train import (
    TrainConfig,
    TrainError,
    choose_strategy,
    load_split,
    train,
)
from models import get_use_case
from models.network import (
    build_network,
    input_dtypes,
    pinball_loss,
    season_position,
    seasonal_profile,
    series_table,
)
from perucast.export import export_model, load_serving, read_metadata, versions


def _spec_stats(features: Path, use_case: str):
    split = json.loads((features / "split.json").read_text())
    stats = json.loads((features / "statistics.json").read_text())
    return get_use_case(use_case).feature_spec(split["horizon"]), stats


def _batch(inputs: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in inputs.items()}


def _tensors(inputs: dict[str, np.ndarray], dtypes: dict[str, str]):
    import tensorflow as tf

    return {k: tf.constant(v, dtype=tf.as_dtype(dtypes[k])) for k, v in inputs.items()}


# --- strategy choice ------------------------------------------------------------------------


def test_strategy_choice_follows_tf_config_and_gpus():
    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert choose_strategy("auto", None, gpus=0) == "default"
    assert choose_strategy("auto", None, gpus=1) == "default"
    assert choose_strategy("auto", None, gpus=4) == "mirrored"
    assert choose_strategy("auto", two, gpus=0) == "multi_worker"
    assert choose_strategy("auto", two, gpus=4) == "multi_worker"
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        choose_strategy("multi_worker", None, gpus=0)
    with pytest.raises(ValueError, match="at least 2 GPUs"):
        choose_strategy("mirrored", None, gpus=1)


def test_train_config_rejects_unknown_fields_and_bad_values(tmp_path):
    base = dict(
        use_case="fish_stock",
        features_dir=tmp_path,
        model_repository=tmp_path / "repo",
        output_dir=tmp_path / "out",
    )
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(**base, epoch=3)
    with pytest.raises(ValueError, match="unknown use case"):
        TrainConfig(**{**base, "use_case": "potatoes"})
    with pytest.raises(ValueError):
        TrainConfig(**base, workers=0)
    with pytest.raises(ValueError):
        TrainConfig(**base, model_name="../escape")


# --- the network ----------------------------------------------------------------------------


def test_pinball_loss_matches_hand_computed_values():
    import tensorflow as tf

    loss = pinball_loss((0.1, 0.5, 0.9))
    y = tf.constant([[10.0]])
    pred = tf.constant([[[8.0, 10.0, 13.0]]])
    # errors y - q: 2, 0, -3 -> 0.1*2, 0, (0.9-1)*-3 = 0.2, 0, 0.3 -> mean 0.1667
    assert float(loss(y, pred)[0]) == pytest.approx(0.5 / 3, rel=1e-6)
    # A NaN target contributes nothing.
    y2 = tf.constant([[10.0, float("nan")]])
    pred2 = tf.constant([[[8.0, 10.0, 13.0], [0.0, 0.0, 0.0]]])
    assert float(loss(y2, pred2)[0]) == pytest.approx(0.5 / 6, rel=1e-6)


def test_network_scales_per_series_and_never_crosses_quantiles(fish_features):
    spec, stats = _spec_stats(fish_features, "fish_stock")
    uc = get_use_case("fish_stock")
    model = build_network(spec, uc.network_spec(), stats, seed=3)
    inputs, targets, weights = load_split(fish_features, "validation", spec, stats, "fish_stock")
    out = model(_tensors(inputs, input_dtypes(spec, stats)), training=False).numpy()
    assert out.shape == (len(targets), spec.horizon, 3)
    assert np.all(np.diff(out, axis=-1) >= 0), "P10 <= P50 <= P90"
    assert np.all(out >= 0)
    # The loss weight of a row is 1 / the series' training target std.
    ids, _, std = series_table(spec, stats)
    zone = str(inputs["zone"][0])
    assert weights[0] == pytest.approx(1.0 / std[ids.index(zone) + 1], rel=1e-6)
    # An unseen zone falls back to the global statistics instead of failing.
    odd = _batch(inputs, slice(0, 2))
    odd["zone"] = np.array(["atlantis", "atlantis"], dtype=object)
    assert np.isfinite(model(_tensors(odd, input_dtypes(spec, stats))).numpy()).all()


def test_network_needs_the_target_as_a_level_column(fish_features):
    from dataclasses import replace

    spec, stats = _spec_stats(fish_features, "fish_stock")
    bad = replace(get_use_case("fish_stock").network_spec(), level_columns=("biomass_lag1",))
    with pytest.raises(ValueError, match="must be a level column"):
        build_network(spec, bad, stats)


def test_season_position_inverts_the_calendar_features():
    import math

    weeks = np.arange(1, 53)
    angle = weeks * (2 * math.pi / (365.2425 / 7))  # as models.crop_demand.features
    pos = season_position(np.sin(angle), np.cos(angle), 52)
    assert list(pos) == [w % 52 for w in weeks]  # week 52 wraps to position 0
    months = np.arange(1, 13)
    pos = season_position(np.sin(months * 2 * math.pi / 12), np.cos(months * 2 * math.pi / 12), 12)
    assert list(pos) == [m % 12 for m in months]


def test_seasonal_profile_is_the_mean_scaled_deviation_from_the_level(crop_features):
    spec, stats = _spec_stats(crop_features, "crop_demand")
    network = get_use_case("crop_demand").network_spec()
    inputs = load_split(crop_features, "train", spec, stats, "crop_demand")[0]
    profile = seasonal_profile(inputs, spec, network, stats)
    ids = series_table(spec, stats)[0]
    assert profile.shape == (len(ids) + 1, 52) and not profile[0].any()
    # Hand check one cell: series of row 0, its season position.
    region, crop = str(inputs["region"][0]), str(inputs["crop"][0])
    pos = season_position(inputs["week_sin"], inputs["week_cos"], 52)
    same = (
        (inputs["region"].astype(str) == region)
        & (inputs["crop"].astype(str) == crop)
        & (pos == pos[0])
    )
    row = ids.index(f"{region}\x1f{crop}") + 1
    # crop_demand scales by the level (the 52-week mean): the profile is a relative deviation.
    level = inputs["demand_mean_52"][same]
    expected = np.mean((inputs["demand_tonnes"][same] - level) / level)
    assert profile[row, pos[0]] == pytest.approx(expected, rel=1e-5)


# --- export ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_crop(crop_features):
    """A crop network fitted for a few steps, with the validation inputs it is checked on."""
    import tf_keras as keras

    spec, stats = _spec_stats(crop_features, "crop_demand")
    network = get_use_case("crop_demand").network_spec()
    inputs, targets, weights = load_split(crop_features, "train", spec, stats, "crop_demand")
    profile = seasonal_profile(inputs, spec, network, stats)
    model = build_network(spec, network, stats, seed=1, profile=profile)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=pinball_loss(), weighted_metrics=[])
    dtypes = input_dtypes(spec, stats)
    first = model.evaluate(_tensors(inputs, dtypes), targets, sample_weight=weights, verbose=0)
    history = model.fit(
        _tensors(inputs, dtypes),
        targets,
        sample_weight=weights,
        batch_size=512,
        epochs=3,
        verbose=0,
    ).history
    val = load_split(crop_features, "validation", spec, stats, "crop_demand")[0]
    return model, spec, stats, dtypes, val, first, history


def test_training_decreases_the_loss(fitted_crop):
    _, _, _, _, _, first, history = fitted_crop
    assert history["loss"][-1] < 0.8 * first, (first, history["loss"])
    assert history["loss"][-1] < history["loss"][0]


def test_export_signature_contract_and_outputs_equal_the_in_memory_model(fitted_crop, tmp_path):
    import tensorflow as tf

    model, spec, _, dtypes, val, _, _ = fitted_crop
    version_dir = export_model(
        model,
        spec,
        dtypes,
        tmp_path / "repo",
        "crop_demand",
        {"metrics": {"x": 1.0}},
        warmup_examples=val,
    )
    assert version_dir == tmp_path / "repo" / "crop_demand" / "1"
    serve = load_serving(version_dir)
    # Contract: one [batch] input per raw feature with its dtype; p10/p50/p90 [batch, H].
    _, kwargs = serve.structured_input_signature
    assert set(kwargs) == set(dtypes)
    assert kwargs["region"].dtype == tf.string and kwargs["crop"].dtype == tf.string
    assert kwargs["fut_holiday_h1"].dtype == tf.int64
    assert kwargs["demand_lag_52"].dtype == tf.float32
    assert all(spec_.shape.as_list() == [None] for spec_ in kwargs.values())
    outputs = serve.structured_outputs
    assert set(outputs) == {"p10", "p50", "p90"}
    assert all(o.shape.as_list() == [None, spec.horizon] for o in outputs.values())
    assert all(o.dtype == tf.float32 for o in outputs.values())

    rows = slice(0, 200)
    got = serve(**_tensors(_batch(val, rows), dtypes))
    expected = model(_tensors(_batch(val, rows), dtypes), training=False).numpy()
    for i, name in enumerate(("p10", "p50", "p90")):
        np.testing.assert_allclose(got[name].numpy(), expected[:, :, i], rtol=1e-5, atol=1e-3)

    meta = read_metadata(version_dir)
    assert meta["feature_spec"]["horizon"] == spec.horizon
    assert meta["inputs"]["region"] == "string" and meta["metrics"] == {"x": 1.0}
    warmup = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    from tensorflow_serving.apis import prediction_log_pb2

    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(warmup))
    ]
    assert len(records) == 3
    assert set(records[0].predict_log.request.inputs) == set(dtypes)

    # The next export takes the next version; an explicit existing version is refused.
    assert export_model(model, spec, dtypes, tmp_path / "repo", "crop_demand", {}).name == "2"
    with pytest.raises(FileExistsError, match="immutable"):
        export_model(model, spec, dtypes, tmp_path / "repo", "crop_demand", {}, version=1)
    assert versions(tmp_path / "repo" / "crop_demand") == [1, 2]


def test_a_failed_export_leaves_no_version_behind(fitted_crop, tmp_path, monkeypatch):
    import perucast.export as export

    model, spec, _, dtypes, val, _, _ = fitted_crop

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "_warmup_records", broken)
    with pytest.raises(OSError, match="disk full"):
        export_model(model, spec, dtypes, tmp_path, "m", {}, warmup_examples=val)
    assert list((tmp_path / "m").iterdir()) == []


# --- the train step -------------------------------------------------------------------------


def _config(features: Path, tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig(
        use_case="fish_stock",
        features_dir=features,
        model_repository=tmp_path / "repo",
        output_dir=tmp_path / "out",
        batch_size=64,
        **kw,
    )


def test_single_process_train_step_exports_a_version(fish_features, tmp_path):
    result = train(_config(fish_features, tmp_path, epochs=8, patience=8))
    assert result.version == 1 and result.workers == 1 and result.strategy == "default"
    assert result.epochs_run == 8
    assert result.history["loss"][-1] < result.history["loss"][0]
    lines = (tmp_path / "out" / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(8))
    assert any((tmp_path / "out" / "tensorboard").rglob("events.out.tfevents.*"))
    meta = read_metadata(result.version_dir)
    assert meta["training"]["epochs_run"] == 8
    assert meta["data_version"]["features_md5"]
    assert len(meta["code_revision"]) >= 7


@pytest.mark.slow
def test_two_loopback_workers_export_a_model_that_loads_and_predicts(fish_features, tmp_path):
    spec, stats = _spec_stats(fish_features, "fish_stock")
    result = train(_config(fish_features, tmp_path, epochs=4, patience=4, workers=2))
    assert result.workers == 2 and result.strategy == "multi_worker" and result.attempts == 1
    meta = read_metadata(result.version_dir)
    assert meta["training"]["replicas"] == 2
    inputs = load_split(fish_features, "test", spec, stats, "fish_stock")[0]
    out = load_serving(result.version_dir)(**_tensors(inputs, input_dtypes(spec, stats)))
    assert out["p50"].shape == (len(inputs["zone"]), spec.horizon)
    assert np.isfinite(out["p50"].numpy()).all()
    for i in range(2):
        assert "worker" in (tmp_path / "out" / "logs" / f"worker-{i}.log").read_text()


def _attempt1_worker1() -> list[psutil.Process]:
    """The running worker process with index 1 of attempt 1 (children of this test)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd, env = p.cmdline(), p.environ()
        except psutil.Error:  # exited (or a zombie) between listing and reading
            continue
        if (
            "components.train" in cmd
            and "worker" in cmd
            and env.get("PERUCAST_TRAIN_ATTEMPT") == "1"
            and '"index": 1' in env.get("TF_CONFIG", "")
        ):
            found.append(p)
    return found


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_completed_epoch(fish_features, tmp_path):
    config = _config(fish_features, tmp_path, epochs=12, patience=12, workers=2, max_restarts=1)
    epochs_file = tmp_path / "out" / "epochs.jsonl"
    outcome: dict[str, object] = {}

    def run():
        try:
            outcome["result"] = train(config)
        except TrainError as err:  # surfaced by the assertion below
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 300
    killed_after = None
    while time.monotonic() < deadline and thread.is_alive():
        done = epochs_file.read_text().splitlines() if epochs_file.exists() else []
        if len(done) >= 3:
            worker1 = _attempt1_worker1()
            assert worker1, "worker 1 of attempt 1 is running"
            killed_after = len(epochs_file.read_text().splitlines())
            worker1[0].kill()
            break
        time.sleep(0.05)
    thread.join(timeout=400)
    assert killed_after is not None, "training ended before the worker could be killed"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.attempts == 2
    records = [json.loads(x) for x in epochs_file.read_text().splitlines()]
    first_run = [r["epoch"] for r in records if r["attempt"] == 1]
    second_run = [r["epoch"] for r in records if r["attempt"] == 2]
    # The second attempt starts right after the last epoch the first one completed (its
    # backup), not at epoch 0, and runs to the end.
    assert first_run == list(range(len(first_run))) and len(first_run) >= 3
    assert second_run[0] == first_run[-1] + 1 > 0
    assert second_run[-1] == config.epochs - 1
    assert result.epochs_run == config.epochs - second_run[0]


def test_a_tfjob_worker_pod_exits_0_without_exporting(fish_features, tmp_path, monkeypatch):
    """In a TFJob every replica runs the same `train run` command with its own TF_CONFIG;
    a non-chief replica's run_worker returns None, which must not fail the pod."""
    from typer.testing import CliRunner

    import components.train as train_module

    calls = []
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {
                "cluster": {"chief": ["c:2222"], "worker": ["w0:2222"]},
                "task": {"type": "worker", "index": 0},
            }
        ),
    )
    monkeypatch.setattr(train_module, "run_worker", lambda config: calls.append(config))
    result = CliRunner().invoke(
        train_module.app,
        [
            "run",
            "--use-case",
            "fish_stock",
            "--features",
            str(fish_features),
            "--model-repository",
            str(tmp_path / "repo"),
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "worker finished" in result.output
    assert len(calls) == 1 and calls[0].use_case == "fish_stock"
    assert not (tmp_path / "repo").exists()
