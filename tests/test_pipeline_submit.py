"""``perucast pipeline submit`` and ``pipelines.run.submit`` against a stub KFP API.

No Kubeflow Pipelines server can run here: :mod:`tests.fake_kfp_api` serves the v2beta1 REST
API on loopback, and the real ``kfp.Client`` talks HTTP to it. The pipelines are compiled
afresh into a temporary directory (``pipelines.run.compiled_path`` points there), so these
tests do not depend on the committed ``pipelines/compiled`` files.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kfp
import pytest
import yaml
from fake_kfp_api import API, FakeKfpApi, cron_error, split_pipeline_spec
from kfp_server_api import ApiException
from typer.testing import CliRunner

import pipelines.run as run_module
from perucast.cli import app
from perucast.exitcodes import ExitCode
from pipelines.config import PipelineConfig
from pipelines.forecast import pipeline_name
from pipelines.run import (
    compile_monitoring_pipeline,
    compile_pipeline,
    compiled_path,
    monitoring_compiled_path,
    submit,
)

pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")

USE_CASE = "crop_demand"
EXPERIMENTS = f"{API}/experiments"
RUNS = f"{API}/runs"
RECURRING_RUNS = f"{API}/recurringruns"
WEEKLY = "0 0 3 * * 1"  # Mondays 03:00:00, seconds first
runner = CliRunner()


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both variants of the use case's pipeline, compiled from the current code."""
    out = tmp_path_factory.mktemp("compiled")
    for gpu in (False, True):
        compile_pipeline(USE_CASE, gpu, compiled_path(USE_CASE, gpu, out))
    compile_monitoring_pipeline(USE_CASE, monitoring_compiled_path(USE_CASE, out))
    return out


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, compiled_dir: Path) -> None:
    """submit() reads the fresh compile; kfp.Client sees no user context or endpoint env."""

    def fresh(use_case: str, gpu: bool = False, directory: Path | None = None) -> Path:
        return compiled_path(use_case, gpu, directory or compiled_dir)

    monkeypatch.setattr(run_module, "compiled_path", fresh)
    monkeypatch.setattr(
        run_module,
        "monitoring_compiled_path",
        lambda use_case, directory=None: monitoring_compiled_path(
            use_case, directory or compiled_dir
        ),
    )
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json"))
    for var in (
        "KF_PIPELINES_ENDPOINT",
        "KF_PIPELINES_UI_ENDPOINT",
        "KF_PIPELINES_IAP_OAUTH2_CLIENT_ID",
        "KF_PIPELINES_APP_OAUTH2_CLIENT_ID",
        "KF_PIPELINES_APP_OAUTH2_CLIENT_SECRET",
        "KFP_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def api():
    with FakeKfpApi() as stub:
        yield stub


def compiled_docs(compiled_dir: Path, gpu: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PipelineSpec, PlatformSpec) of the compiled YAML."""
    pipeline_spec, platform_spec = yaml.safe_load_all(
        compiled_path(USE_CASE, gpu, compiled_dir).read_text()
    )
    return pipeline_spec, platform_spec


def cached_tasks(pipeline_spec: dict[str, Any]) -> list[str]:
    """Tasks, in every DAG of the spec, that still have execution caching on."""
    dags = {"root": pipeline_spec["root"]["dag"]}
    dags |= {n: c["dag"] for n, c in pipeline_spec["components"].items() if "dag" in c}
    return sorted(
        f"{dag_name}/{task_name}"
        for dag_name, dag in dags.items()
        for task_name, task in dag.get("tasks", {}).items()
        if (task.get("cachingOptions") or {}).get("enableCache")
    )


def accelerated_executors(pipeline_spec: dict[str, Any]) -> set[str]:
    return {
        name
        for name, executor in pipeline_spec["deploymentSpec"]["executors"].items()
        if "accelerator" in executor.get("container", {}).get("resources", {})
    }


def cli(api: FakeKfpApi, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(
        app, ["pipeline", "submit", "--use-case", USE_CASE, "--host", api.url, *args], env=env
    )


def http(api: FakeKfpApi, method: str, path: str, body: Any = None, raw: bytes | None = None):
    """(status, JSON answer) of one request to the stub, without any proxy."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        api.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --- one-off runs -------------------------------------------------------------------------


def test_submit_creates_the_experiment_once_and_runs_the_compiled_pipeline(
    api: FakeKfpApi, compiled_dir: Path
) -> None:
    config = PipelineConfig(
        use_case=USE_CASE,
        source={"kind": "synthetic", "seed": 7, "scale": "tiny"},
        executor="kubernetes",
        workers=4,
        epochs=12,
    )
    first = submit(api.url, config, experiment="perucast-test", run_name="first")
    second = submit(api.url, config, experiment="perucast-test")

    # The experiment is looked up by name both times and created only the first time.
    assert len(api.calls("POST", EXPERIMENTS)) == 1
    lookups = api.calls("GET", EXPERIMENTS)
    assert len(lookups) == 2
    for lookup in lookups:
        (predicate,) = json.loads(lookup.param("filter"))["predicates"]
        assert predicate["key"] == "display_name"
        assert predicate["stringValue"] == "perucast-test"
    (experiment,) = api.experiments.values()
    assert experiment["display_name"] == "perucast-test"
    assert first.experiment_id == second.experiment_id == experiment["experiment_id"]

    first_body, second_body = (r.body for r in api.calls("POST", RUNS))
    assert first_body["display_name"] == "first"
    assert re.fullmatch(rf"{pipeline_name(USE_CASE)}-\d{{8}}-\d{{6}}", second_body["display_name"])
    assert first_body["experiment_id"] == experiment["experiment_id"]
    assert "pipeline_version_reference" not in first_body  # the spec goes inline

    # The compiled PipelineSpec and its Kubernetes PlatformSpec, as compiled.
    pipeline_spec, platform_spec = split_pipeline_spec(first_body["pipeline_spec"])
    compiled_spec, compiled_platform = compiled_docs(compiled_dir)
    assert pipeline_spec["pipelineInfo"]["name"] == pipeline_name(USE_CASE)
    assert pipeline_spec["root"]["inputDefinitions"] == compiled_spec["root"]["inputDefinitions"]
    assert set(pipeline_spec["root"]["inputDefinitions"]["parameters"]) == set(config.arguments())
    assert pipeline_spec["deploymentSpec"] == compiled_spec["deploymentSpec"]
    assert platform_spec == compiled_platform
    assert accelerated_executors(pipeline_spec) == set()

    # The run's parameters are the config's, and kfp's caching override reached the root DAG.
    parameters = first_body["runtime_config"]["parameters"]
    assert parameters == config.arguments()
    assert (parameters["workers"], parameters["epochs"], parameters["executor"]) == (
        4,
        12,
        "kubernetes",
    )
    assert (parameters["source_kind"], parameters["data_seed"], parameters["data_scale"]) == (
        "synthetic",
        7,
        "tiny",
    )
    for task in pipeline_spec["root"]["dag"]["tasks"].values():
        assert not (task.get("cachingOptions") or {}).get("enableCache")

    # What submit returns is what the server created.
    assert set(api.runs) == {first.run_id, second.run_id}
    assert api.runs[first.run_id]["display_name"] == "first"
    assert first.url == f"{api.url}/#/runs/details/{first.run_id}"
    assert first.recurring_run_id == ""
    assert first.pipeline_file == compiled_path(USE_CASE, False, compiled_dir)


def test_a_submitted_run_has_caching_off_in_every_dag(api: FakeKfpApi) -> None:
    submit(api.url, PipelineConfig(use_case=USE_CASE))
    (body,) = (r.body for r in api.calls("POST", RUNS))
    pipeline_spec, _ = split_pipeline_spec(body["pipeline_spec"])
    assert cached_tasks(pipeline_spec) == []


def test_gpu_submits_the_gpu_variant(api: FakeKfpApi, compiled_dir: Path) -> None:
    config = PipelineConfig(use_case=USE_CASE, executor="kubernetes", gpus=1)
    done = submit(api.url, config, gpu=True)

    (body,) = (r.body for r in api.calls("POST", RUNS))
    pipeline_spec, platform_spec = split_pipeline_spec(body["pipeline_spec"])
    assert done.pipeline_file == compiled_path(USE_CASE, True, compiled_dir)
    assert pipeline_spec["pipelineInfo"]["name"] == pipeline_name(USE_CASE, gpu=True)
    assert accelerated_executors(pipeline_spec) == {"exec-train"}
    resources = pipeline_spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert resources["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["resources"]["accelerator"]["resourceCount"] == "1"
    train = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train[
        "tolerations"
    ]
    assert body["runtime_config"]["parameters"]["gpus"] == 1
    assert api.runs[done.run_id]["pipeline_spec"] == body["pipeline_spec"]


# --- recurring runs -----------------------------------------------------------------------


def test_cli_schedule_creates_a_recurring_run(api: FakeKfpApi) -> None:
    result = cli(api, "--schedule", WEEKLY, "--experiment", "retraining")

    assert result.exit_code == ExitCode.OK, result.output
    assert api.calls("POST", RUNS) == []
    (request,) = api.calls("POST", RECURRING_RUNS)
    body = request.body
    assert body["trigger"] == {"cron_schedule": {"cron": WEEKLY}}
    assert body["max_concurrency"] == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert USE_CASE in body["description"]
    pipeline_spec, _ = split_pipeline_spec(body["pipeline_spec"])
    assert pipeline_spec["pipelineInfo"]["name"] == pipeline_name(USE_CASE)
    expected = PipelineConfig(
        use_case=USE_CASE, source={"kind": "synthetic"}, executor="kubernetes"
    ).arguments()
    assert body["runtime_config"]["parameters"] == expected

    (experiment,) = api.experiments.values()
    (recurring,) = api.recurring_runs.values()
    assert body["experiment_id"] == experiment["experiment_id"]
    assert experiment["display_name"] == "retraining"
    assert recurring["status"] == "ENABLED"
    assert f"recurring run {recurring['recurring_run_id']} ({WEEKLY}) in retraining" in (
        result.output
    )


def test_cli_schedules_the_monitoring_pipeline(api: FakeKfpApi) -> None:
    from pipelines.config import MonitoringConfig
    from pipelines.monitoring import monitoring_pipeline_name

    result = cli(api, "--pipeline", "monitoring", "--schedule", WEEKLY, "--no-retrain")

    assert result.exit_code == ExitCode.OK, result.output
    (request,) = api.calls("POST", RECURRING_RUNS)
    body = request.body
    assert "monitoring" in body["description"]
    pipeline_spec, _ = split_pipeline_spec(body["pipeline_spec"])
    assert pipeline_spec["pipelineInfo"]["name"] == monitoring_pipeline_name(USE_CASE)
    training = PipelineConfig(
        use_case=USE_CASE, source={"kind": "synthetic"}, executor="kubernetes"
    )
    expected = MonitoringConfig(training=training, retrain=False).arguments()
    assert body["runtime_config"]["parameters"] == expected
    assert expected["retrain"] is False
    assert expected["prediction_logs"] == f"/mnt/models/prediction-logs/{USE_CASE}"
    refused = cli(api, "--pipeline", "monitoring", "--gpu")
    assert refused.exit_code == ExitCode.USAGE and "no GPU variant" in refused.output
    assert cli(api, "--pipeline", "scoring").exit_code == ExitCode.USAGE
    assert len(api.calls("POST", RECURRING_RUNS)) == 1 and api.calls("POST", RUNS) == []


def test_a_cron_the_server_rejects_raises_and_creates_nothing(api: FakeKfpApi) -> None:
    with pytest.raises(ApiException) as caught:
        submit(api.url, PipelineConfig(use_case=USE_CASE), schedule="61 0 3 * * 1")
    assert caught.value.status == 400
    assert "Schedule cron is not a supported format" in caught.value.body
    assert api.recurring_runs == {}


# --- usage errors: nothing reaches the server ---------------------------------------------

BAD_ARGUMENTS = [
    pytest.param(["--workers", "0"], id="workers-0"),
    pytest.param(["--epochs", "0"], id="epochs-0"),
    pytest.param(["--gpus", "1", "--executor", "local"], id="gpus-with-local-executor"),
    pytest.param(["--executor", "spark"], id="unknown-executor"),
    pytest.param(["--seed", "-1"], id="negative-seed"),
    pytest.param(["--scale", "huge"], id="unknown-scale"),
    pytest.param(
        ["--schedule", "0 3 * *"],
        id="cron-with-4-fields",
    ),
    pytest.param(
        ["--schedule", "0 3 * * 1"],
        id="unix-5-field-cron",
    ),
    pytest.param(
        ["--source-path", "/mnt/data", "--dvc-repo", "https://example.org/r.git"],
        id="source-path-and-dvc-repo",
    ),
]


@pytest.mark.parametrize("args", BAD_ARGUMENTS)
def test_bad_parameters_exit_2_before_any_request(api: FakeKfpApi, args: list[str]) -> None:
    result = cli(api, *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert api.requests == []


def test_unknown_use_case_exits_2_before_any_request(api: FakeKfpApi) -> None:
    result = runner.invoke(
        app, ["pipeline", "submit", "--use-case", "llama_herds", "--host", api.url]
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "use_case" in result.output
    assert api.requests == []


def test_missing_compiled_pipeline_exits_3_before_any_request(
    api: FakeKfpApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        run_module, "compiled_path", lambda use_case, gpu=False: tmp_path / f"{use_case}.yaml"
    )
    result = cli(api)
    assert result.exit_code == ExitCode.INPUT_NOT_FOUND, result.output
    assert "perucast pipeline compile" in result.output
    assert api.requests == []


# --- the command line, end to end ---------------------------------------------------------


def test_cli_submit_end_to_end_with_token_and_namespace() -> None:
    with FakeKfpApi(token="s3cret", multi_user=True) as api:
        result = cli(
            api,
            "--experiment",
            "nightly",
            "--run-name",
            "crop-nightly",
            "--namespace",
            "team-a",
            "--workers",
            "3",
            "--epochs",
            "5",
            "--seed",
            "7",
            "--scale",
            "tiny",
            env={"KFP_TOKEN": "s3cret"},
        )
        assert result.exit_code == ExitCode.OK, result.output

        (run,) = api.runs.values()
        (experiment,) = api.experiments.values()
        assert (experiment["display_name"], experiment["namespace"]) == ("nightly", "team-a")
        assert run["display_name"] == "crop-nightly"
        assert run["experiment_id"] == experiment["experiment_id"]
        assert f"run {run['run_id']} in nightly: {api.url}/#/runs/details/{run['run_id']}" in (
            result.output
        )
        # Every request carried the token; the lookup and the new experiment are namespaced.
        assert {r.headers.get("authorization") for r in api.requests} == {"Bearer s3cret"}
        assert api.calls("GET", EXPERIMENTS)[0].param("namespace") == "team-a"
        expected = PipelineConfig(
            use_case=USE_CASE,
            source={"kind": "synthetic", "seed": 7, "scale": "tiny"},
            executor="kubernetes",
            workers=3,
            epochs=5,
        ).arguments()
        assert run["runtime_config"]["parameters"] == expected
        pipeline_spec, _ = split_pipeline_spec(run["pipeline_spec"])
        assert pipeline_spec["pipelineInfo"]["name"] == pipeline_name(USE_CASE)


def test_a_wrong_token_is_refused_and_nothing_is_created() -> None:
    with FakeKfpApi(token="s3cret") as api:
        with pytest.raises(ApiException) as caught:
            submit(
                api.url,
                PipelineConfig(use_case=USE_CASE),
                namespace="team-a",  # with a namespace, kfp.Client skips healthz (5 s retries)
                existing_token="stale",
            )
        assert caught.value.status == 401
        assert api.experiments == {} and api.runs == {}


# --- the stub itself ----------------------------------------------------------------------


def test_stub_validates_what_it_receives_like_the_server(
    api: FakeKfpApi, compiled_dir: Path
) -> None:
    spec, _ = compiled_docs(compiled_dir)
    experiment_id = api.add_experiment("perucast")["experiment_id"]
    unknown = str(uuid.uuid4())
    good = {"display_name": "r", "experiment_id": experiment_id, "pipeline_spec": spec}

    def run_with(**changes: Any) -> dict[str, Any]:
        return {**good, **changes}

    cases = [
        ("POST", RUNS, {"display_name": "r", "experiment_id": experiment_id}, 400, "Pipeline spec"),
        ("POST", RUNS, {"display_name": "r", "pipeline_spec": spec}, 400, "experiment_id"),
        ("POST", RUNS, run_with(display_name=""), 400, "display_name"),
        ("POST", RUNS, run_with(experiment_id=unknown), 404, f"Experiment {unknown} not found"),
        ("POST", RUNS, run_with(pipeline_spec={"root": {}}), 400, "not a PipelineSpec"),
        (
            "POST",
            RUNS,
            run_with(runtime_config={"parameters": {"wrokers": 2}}),
            400,
            "Unrecognized input parameter: wrokers",
        ),
        (
            "POST",
            RUNS,
            run_with(runtime_config={"parameters": {"workers": "2"}}),
            400,
            "requires type NUMBER_INTEGER",
        ),
        (
            "POST",
            RUNS,
            run_with(pipeline_version_reference={"pipeline_id": "p", "pipeline_version_id": "v"}),
            400,
            "cannot both be set",
        ),
        ("GET", f"{RUNS}/{unknown}", None, 404, f"Run {unknown} not found"),
        ("GET", f"{EXPERIMENTS}/{unknown}", None, 404, f"Experiment {unknown} not found"),
        ("GET", f"{RECURRING_RUNS}/{unknown}", None, 404, "not found"),
        ("POST", EXPERIMENTS, {"display_name": "perucast"}, 409, "already exists"),
        ("POST", EXPERIMENTS, {"display_name": " "}, 400, "cannot be empty"),
        (
            "POST",
            RECURRING_RUNS,
            run_with(max_concurrency=0, trigger={"cron_schedule": {"cron": WEEKLY}}),
            400,
            "Support 1-10",
        ),
        ("POST", RECURRING_RUNS, run_with(max_concurrency=1), 400, "exactly one of"),
        ("GET", f"{API}/pipelines", None, 404, "Not Found"),
        ("DELETE", EXPERIMENTS, None, 405, "Method Not Allowed"),
    ]
    for method, path, body, status, message in cases:
        got, answer = http(api, method, path, body)
        assert (got, method, path) == (status, method, path), answer
        assert message in answer["message"], (method, path, answer)
        assert answer["error"] == answer["message"]
        assert answer["code"] == {400: 3, 404: 5, 405: 12, 409: 6}[status]

    got, answer = http(api, "POST", RUNS, raw=b"{not json")
    assert (got, answer["code"]) == (400, 3)
    assert api.runs == {} and api.recurring_runs == {}
    assert len(api.requests) == len(cases) + 1

    # A well-formed run is created, with the server's fields.
    got, created = http(api, "POST", RUNS, run_with(runtime_config={"parameters": {"workers": 3}}))
    assert got == 200
    assert str(uuid.UUID(created["run_id"])) == created["run_id"]
    assert created["state"] == "PENDING"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created["created_at"])
    assert http(api, "GET", f"{RUNS}/{created['run_id']}") == (200, created)


@pytest.mark.parametrize(
    ("cron", "ok"),
    [
        (WEEKLY, True),
        ("0 3 * * 1", True),  # five fields: seconds minutes hours day-of-month month
        ("*/30 * * * * MON-FRI", True),
        ("@daily", True),
        ("@every 1h30m", True),
        ("0 3 * *", False),
        ("0 0 3 * * 1 2026", False),
        ("0 61 3 * * 1", False),
        ("0 0 3 * * FUNDAY", False),
        ("@fortnightly", False),
    ],
)
def test_stub_parses_crons_as_robfig_cron_v1(cron: str, ok: bool) -> None:
    assert (cron_error(cron) is None) is ok
