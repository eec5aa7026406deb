"""Model lifecycle of perucast-model-server over the wire, as TF Serving's ServerCore behaves.

Real server subprocesses with short poll intervals; every observation goes through the official
`PredictionServiceStub` / `ModelServiceStub`, and every wait polls GetModelStatus (or the log)
with `wait_for` instead of sleeping.

- `lifecycle`: one server for version policies, file-system polling, a corrupt version, a
  warm-up that fails, the hot reload under load and HandleReloadConfigRequest. Each test uses its
  own models (or sends the full base config), so the tests do not disturb one another.
- `polled`: a server that re-reads its --model_config_file every second, with
  --allow_version_labels_for_unavailable_models.
"""

from __future__ import annotations

import collections
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from serving_harness import ServerProcess, model_config_text, wait_for
from serving_models import export_toy, toy_expected, toy_request_inputs
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
LOADING = get_model_status_pb2.ModelVersionStatus.LOADING
FAST_LIFECYCLE = [
    "--file_system_poll_wait_seconds=1",
    "--load_retry_interval_micros=100000",
    "--max_num_load_retries=1",
]
# y = 0.5 x + offset + count: the offset tells the versions' answers apart.
OFFSETS = {1: 1.0, 2: 2.0, 3: 3.0}
NEW_OFFSET = 5.0
WAIT_S = 60.0


@dataclass
class Setup:
    root: Path
    models: dict[str, Path]
    extra: dict[str, str]

    def config(self, models=None, extra=None) -> model_server_config_pb2.ModelServerConfig:
        """The base config with `models` added and `extra` (per model) replacing the base's."""
        text = model_config_text({**self.models, **(models or {})}, {**self.extra, **(extra or {})})
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


# --- helpers ------------------------------------------------------------------------------------


def toy_request(name: str, version: int | None = None, label: str | None = None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in toy_request_inputs().items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def predict(stub, name: str, version: int | None = None, label: str | None = None):
    return stub.Predict(toy_request(name, version, label), timeout=30)


def y_of(response) -> np.ndarray:
    return tf.make_ndarray(response.outputs["y"])


def expected_y(offset: float) -> np.ndarray:
    return toy_expected(toy_request_inputs(), offset)["y"]


def predict_error(stub, name: str, version: int | None = None, label: str | None = None):
    with pytest.raises(grpc.RpcError) as info:
        predict(stub, name, version, label)
    return info.value


def statuses(stub, name: str) -> dict[int, get_model_status_pb2.ModelVersionStatus]:
    """GetModelStatus by version ({} while the server knows no version of the model)."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    try:
        response = stub.GetModelStatus(request, timeout=10)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return {}
        raise
    return {s.version: s for s in response.model_version_status}


def wait_states(stub, name: str, expected: dict[int, int], timeout: float = WAIT_S):
    """Waits until each version in `expected` is in its state; returns all the statuses."""

    def reached():
        found = statuses(stub, name)
        ok = all(v in found and found[v].state == s for v, s in expected.items())
        return found if ok else None

    return wait_for(reached, timeout=timeout, what=f"{name} states {expected}")


def states(stub, name: str) -> dict[int, int]:
    return {v: s.state for v, s in statuses(stub, name).items()}


def reload(stub, config) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest(config=config)
    return stub.HandleReloadConfigRequest(request, timeout=120)


def write_corrupt_version(base: Path, version: int, scratch: Path) -> None:
    """A numeric directory whose saved_model.pb is garbage, appearing atomically."""
    tmp = scratch / f"corrupt-{base.name}-{version}"
    tmp.mkdir(parents=True)
    (tmp / "saved_model.pb").write_bytes(b"this is not a SavedModel \x00\xff" * 10)
    tmp.rename(base / str(version))


def write_bad_warmup_version(base: Path, version: int, scratch: Path) -> None:
    """A valid SavedModel whose warm-up request names an input the signature lacks."""
    built = export_toy(scratch / f"warm-{base.name}", version, NEW_OFFSET, warmup=False)
    extra = built / "assets.extra"
    extra.mkdir()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = base.name
    request.inputs["no_such_input"].CopyFrom(tf.make_tensor_proto(np.zeros(2, np.float32)))
    record = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        writer.write(record.SerializeToString())
    built.rename(base / str(version))


def write_config_file(path: Path, text: str) -> None:
    """Replaces the file atomically, so a poll never reads half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the shared lifecycle server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    root = tmp_path_factory.mktemp("lifecycle")
    three = root / "three"
    for version, offset in OFFSETS.items():
        export_toy(three, version, offset)
    for name in ("poll", "corrupt", "warm", "hot", "emptied"):
        export_toy(root / name, 1, OFFSETS[1])
    models = {
        "latest2": three,
        "all": three,
        "specific": three,
        "default": three,
        "labeled": three,
        "poll": root / "poll",
        "corrupt": root / "corrupt",
        "warm": root / "warm",
        "hot": root / "hot",
        "emptied": root / "emptied",
    }
    extra = {
        "latest2": "model_version_policy { latest { num_versions: 2 } }",
        "all": "model_version_policy { all {} }",
        "specific": "model_version_policy { specific { versions: 1 } }",
        "labeled": "model_version_policy { specific { versions: [1, 2] } } "
        'version_labels { key: "stable" value: 1 }',
    }
    return Setup(root, models, extra)


@pytest.fixture(scope="module")
def lifecycle(setup):
    config = setup.root / "models.config"
    config.write_text(model_config_text(setup.models, setup.extra))
    process = ServerProcess(
        [f"--model_config_file={config}", *FAST_LIFECYCLE],
        setup.root / "lifecycle.log",
        rest=False,
        ready_models=tuple(setup.models),
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def channel(lifecycle):
    with grpc.insecure_channel(lifecycle.target) as channel:
        yield channel


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


# --- version policies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "loaded"),
    [("latest2", [2, 3]), ("all", [1, 2, 3]), ("specific", [1]), ("default", [3])],
)
def test_version_policy_picks_the_versions_on_disk(model_stub, predict_stub, model, loaded):
    # Versions 1, 2 and 3 are on disk; versions the policy never aspires are not reported.
    assert states(model_stub, model) == dict.fromkeys(loaded, AVAILABLE)
    latest = predict(predict_stub, model)
    assert latest.model_spec.version.value == max(loaded)
    np.testing.assert_allclose(y_of(latest), expected_y(OFFSETS[max(loaded)]))
    for version in (1, 2, 3):
        if version in loaded:
            assert predict(predict_stub, model, version).model_spec.version.value == version
        else:
            error = predict_error(predict_stub, model, version)
            assert error.code() == grpc.StatusCode.NOT_FOUND
            assert (
                error.details() == f"Servable not found for request: Specific({model}, {version})"
            )


# --- file-system polling ------------------------------------------------------------------------


def test_a_new_version_is_loaded_and_a_removed_one_unloaded(setup, model_stub, predict_stub):
    base = setup.root / "poll"
    before = predict(predict_stub, "poll")
    assert before.model_spec.version.value == 1

    export_toy(base, 2, NEW_OFFSET)
    wait_states(model_stub, "poll", {2: AVAILABLE, 1: END})  # latest 1: the old one leaves
    after = predict(predict_stub, "poll")
    assert after.model_spec.version.value == 2
    np.testing.assert_allclose(y_of(after) - y_of(before), NEW_OFFSET - OFFSETS[1])

    shutil.rmtree(base / "2")
    found = wait_states(model_stub, "poll", {2: END, 1: AVAILABLE})
    assert found[2].status.error_code == 0  # an unload is not an error
    error = predict_error(predict_stub, "poll", 2)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(poll, 2)"
    assert predict(predict_stub, "poll").model_spec.version.value == 1


def test_an_emptied_base_path_unloads_every_version(setup, model_stub, predict_stub):
    # TF Serving's default (servable_versions_always_present is false): no version on disk
    # means no aspired version, so the last one is unloaded too.
    shutil.rmtree(setup.root / "emptied" / "1")
    wait_states(model_stub, "emptied", {1: END})
    error = predict_error(predict_stub, "emptied")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(emptied)"


def test_a_corrupt_version_fails_while_the_previous_keeps_serving(setup, model_stub, predict_stub):
    write_corrupt_version(setup.root / "corrupt", 2, setup.root / "scratch")
    found = wait_states(model_stub, "corrupt", {2: END})
    assert found[2].status.error_code != 0
    assert found[2].status.error_message
    assert found[1].state == AVAILABLE
    latest = predict(predict_stub, "corrupt")
    assert latest.model_spec.version.value == 1
    np.testing.assert_allclose(y_of(latest), expected_y(OFFSETS[1]))
    # It was tried 1 + --max_num_load_retries times, and later polls leave it alone.
    assert read_log(setup).count("retrying load of corrupt version 2") == 1


def test_a_version_whose_warmup_fails_never_becomes_available(setup, model_stub, predict_stub):
    write_bad_warmup_version(setup.root / "warm", 2, setup.root / "scratch")
    found = wait_states(model_stub, "warm", {2: END})
    assert found[2].status.error_code != 0
    assert "no_such_input" in found[2].status.error_message
    assert found[1].state == AVAILABLE
    assert predict(predict_stub, "warm").model_spec.version.value == 1


def read_log(setup: Setup) -> str:
    return (setup.root / "lifecycle.log").read_text(errors="replace")


# --- hot reload under load ----------------------------------------------------------------------


def test_hot_reload_under_load_fails_no_request(setup, lifecycle, model_stub):
    """8 clients call Predict (Latest) while version 2 is pushed and version 1 unloaded."""
    offsets = {1: OFFSETS[1], 2: NEW_OFFSET}
    answers: collections.Counter[int] = collections.Counter()
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    request = toy_request("hot")

    def client():
        with grpc.insecure_channel(lifecycle.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not stop.is_set():
                try:
                    response = stub.Predict(request, timeout=30)
                    version = response.model_spec.version.value
                    if not np.allclose(y_of(response), expected_y(offsets.get(version, np.nan))):
                        raise AssertionError(f"version {version} answered {y_of(response)}")
                except (grpc.RpcError, AssertionError) as error:
                    with lock:
                        failures.append(repr(error))
                    continue
                with lock:
                    answers[version] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: answers[1] >= 100, timeout=WAIT_S, what="traffic on version 1")
        export_toy(setup.root / "hot", 2, NEW_OFFSET)
        wait_states(model_stub, "hot", {2: AVAILABLE, 1: END})
        seen = answers[2]
        wait_for(lambda: answers[2] >= seen + 100, timeout=WAIT_S, what="traffic on version 2")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert set(answers) == {1, 2}
    assert sum(answers.values()) >= 300


# --- HandleReloadConfigRequest ------------------------------------------------------------------


def test_reload_config_adds_and_removes_models(setup, model_stub, predict_stub):
    added = {"added": setup.models["specific"]}
    response = reload(
        model_stub,
        setup.config(added, {"added": "model_version_policy { specific { versions: 2 } }"}),
    )
    assert response.status.error_code == 0, response.status.error_message
    assert states(model_stub, "added") == {2: AVAILABLE}  # the reload returns once it is loaded
    assert predict(predict_stub, "added").model_spec.version.value == 2

    response = reload(model_stub, setup.config())
    assert response.status.error_code == 0, response.status.error_message
    assert states(model_stub, "added") == {2: END}
    for version in (None, 2):
        error = predict_error(predict_stub, "added", version)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        which = "Latest(added)" if version is None else "Specific(added, 2)"
        assert error.details() == f"Servable not found for request: {which}"
    assert predict(predict_stub, "default").model_spec.version.value == 3  # the others serve on


def test_reload_config_with_a_model_that_fails_to_load(setup, model_stub, predict_stub):
    broken = setup.root / "broken"
    broken.mkdir()
    write_corrupt_version(broken, 1, setup.root / "scratch")
    response = reload(model_stub, setup.config({"broken": broken}))
    # ServerCore::WaitUntilModelsAvailable: the new model's failure is the reload's error.
    assert response.status.error_code == grpc.StatusCode.UNKNOWN.value[0]
    assert response.status.error_message.startswith(
        "1 model(s) did not become available: {{{name: broken version: 1} due to error: "
    )
    assert states(model_stub, "broken") == {1: END}
    assert predict(predict_stub, "poll").model_spec.version.value >= 1

    response = reload(model_stub, setup.config())
    assert response.status.error_code == 0, response.status.error_message


def test_reload_config_moves_labels_only_to_available_versions(setup, model_stub, predict_stub):
    policy_12 = "model_version_policy { specific { versions: [1, 2] } }"
    policy_123 = "model_version_policy { specific { versions: [1, 2, 3] } }"

    def labeled(policy: str, stable: int):
        return setup.config(
            extra={"labeled": f'{policy} version_labels {{ key: "stable" value: {stable} }}'}
        )

    assert predict(predict_stub, "labeled", label="stable").model_spec.version.value == 1
    response = reload(model_stub, labeled(policy_12, 2))
    assert response.status.error_code == 0, response.status.error_message
    moved = predict(predict_stub, "labeled", label="stable")
    assert moved.model_spec.version.value == 2
    np.testing.assert_allclose(y_of(moved), expected_y(OFFSETS[2]))

    # Version 3 is on disk but not loaded: labelling it fails, even in the change that would
    # load it (TF Serving checks labels first), and the change is not applied.
    message = (
        "Request to assign label to version 3 of model labeled, which is not currently "
        "available for inference"
    )
    for policy in (policy_12, policy_123):
        response = reload(model_stub, labeled(policy, 3))
        assert response.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert response.status.error_message == message
        assert states(model_stub, "labeled") == {1: AVAILABLE, 2: AVAILABLE}
        assert predict(predict_stub, "labeled", label="stable").model_spec.version.value == 2

    # Two steps work: load version 3, then move the label.
    response = reload(model_stub, labeled(policy_123, 2))
    assert response.status.error_code == 0, response.status.error_message
    assert states(model_stub, "labeled")[3] == AVAILABLE
    response = reload(model_stub, labeled(policy_123, 3))
    assert response.status.error_code == 0, response.status.error_message
    assert predict(predict_stub, "labeled", label="stable").model_spec.version.value == 3

    response = reload(model_stub, setup.config())  # back to the base: stable -> 1, 3 unloaded
    assert response.status.error_code == 0, response.status.error_message
    assert predict(predict_stub, "labeled", label="stable").model_spec.version.value == 1
    assert states(model_stub, "labeled")[3] == END


# --- --model_config_file polling ----------------------------------------------------------------


@pytest.fixture(scope="module")
def polled(tmp_path_factory):
    root = tmp_path_factory.mktemp("polled")
    export_toy(root / "first", 1, OFFSETS[1])
    export_toy(root / "second", 1, NEW_OFFSET)
    config = root / "models.config"
    config.write_text(model_config_text({"first": root / "first"}))
    process = ServerProcess(
        [
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=1",
            "--allow_version_labels_for_unavailable_models",
            *FAST_LIFECYCLE,
        ],
        root / "polled.log",
        rest=False,
        ready_models=("first",),
    )
    with process, grpc.insecure_channel(process.target) as channel:
        yield (
            root,
            config,
            process,
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel),
        )


def test_a_rewritten_config_file_changes_the_models_served(polled):
    root, config, _, predict_stub, model_stub = polled
    write_config_file(config, model_config_text({"second": root / "second"}))
    wait_states(model_stub, "second", {1: AVAILABLE})
    wait_states(model_stub, "first", {1: END})
    np.testing.assert_allclose(y_of(predict(predict_stub, "second")), expected_y(NEW_OFFSET))
    assert predict_error(predict_stub, "first").code() == grpc.StatusCode.NOT_FOUND


def test_config_file_labels_with_allow_version_labels_for_unavailable_models(polled):
    root, config, process, predict_stub, _ = polled

    def write(labels: str) -> None:
        write_config_file(
            config, model_config_text({"second": root / "second"}, {"second": labels})
        )

    # A new label may name a version that is not loaded (here: not even on disk) ...
    write('version_labels { key: "stable" value: 1 } version_labels { key: "next" value: 7 }')

    def next_is_resolved():
        error = predict_error(predict_stub, "second", label="next")
        return error.code() == grpc.StatusCode.NOT_FOUND and error

    error = wait_for(next_is_resolved, timeout=WAIT_S, what="label next -> 7")
    assert error.details() == "Servable not found for request: Specific(second, 7)"
    assert predict(predict_stub, "second", label="stable").model_spec.version.value == 1

    # ... but an existing label cannot move to an unavailable version.
    write('version_labels { key: "stable" value: 7 } version_labels { key: "next" value: 7 }')
    wait_for(
        lambda: "Request to assign label to version 7 of model second" in process.log_tail(200),
        timeout=WAIT_S,
        what="the refused label in the log",
    )
    assert predict(predict_stub, "second", label="stable").model_spec.version.value == 1


def test_a_malformed_config_file_is_logged_and_the_old_config_serves_on(polled):
    root, config, process, predict_stub, model_stub = polled
    write_config_file(config, model_config_text({"second": root / "second"}))
    wait_states(model_stub, "second", {1: AVAILABLE})
    write_config_file(config, 'model_config_list { config { name: "second" base_pa')
    wait_for(
        lambda: (
            "Failed to read ModelServerConfig file: Error parsing text-format "
            "tensorflow.serving.ModelServerConfig" in process.log_tail(200)
        ),
        timeout=WAIT_S,
        what="the parse error in the log",
    )
    assert states(model_stub, "second") == {1: AVAILABLE}
    np.testing.assert_allclose(y_of(predict(predict_stub, "second")), expected_y(NEW_OFFSET))


# --- load retries never hold up a config change -------------------------------------------------


def test_a_config_change_cancels_the_retries_of_a_version_it_no_longer_aspires(tmp_path):
    """TF Serving's default retries (5, here a minute apart) must not block a reload: a deploy's
    rollback is a reload. The retrying version is cancelled (END) and the reload returns."""
    import time

    export_toy(tmp_path / "retry", 1, OFFSETS[1])
    config = tmp_path / "models.config"
    all_versions = "model_version_policy { all {} }"
    config.write_text(model_config_text({"retry": tmp_path / "retry"}, {"retry": all_versions}))
    flags = [
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=5",
        "--load_retry_interval_micros=60000000",
    ]
    server = ServerProcess(flags, tmp_path / "retry.log")
    with server, grpc.insecure_channel(server.target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        wait_states(stub, "retry", {1: AVAILABLE})
        write_corrupt_version(tmp_path / "retry", 2, tmp_path)  # the poller fails on it
        wait_for(
            lambda: (
                "Loading servable: {name: retry version: 2} failed"
                in (tmp_path / "retry.log").read_text(errors="replace")
            ),
            timeout=WAIT_S,
            what="the first failed load of version 2",
        )
        assert statuses(stub, "retry")[2].state == LOADING  # waiting a minute to retry
        only_one = text_format.Parse(
            model_config_text(
                {"retry": tmp_path / "retry"},
                {"retry": "model_version_policy { specific { versions: 1 } }"},
            ),
            model_server_config_pb2.ModelServerConfig(),
        )
        started = time.monotonic()
        response = reload(stub, only_one)
        assert time.monotonic() - started < 20  # not retries x a minute
        assert response.status.error_code == 0
        found = wait_states(stub, "retry", {1: AVAILABLE, 2: END})
        assert found[2].status.error_code == grpc.StatusCode.CANCELLED.value[0]
        assert "no longer aspired" in found[2].status.error_message
