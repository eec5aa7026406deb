"""serving.config: tensorflow_model_server flags and config files, and the generated protos."""

from __future__ import annotations

import logging
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import trustme
from google.protobuf.descriptor import FieldDescriptor

from serving import config as cfg
from serving.config import ConfigError, ServerFlags, parse_flags
from serving.protos import monitoring_config_pb2, session_bundle_config_pb2, ssl_config_pb2

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "serving" / "protos"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------------------
# Generated protos
# ------------------------------------------------------------------------------------------


def test_generated_protos_match_a_fresh_protoc_run(tmp_path):
    protos = sorted(p.relative_to(REPO).as_posix() for p in PROTO_DIR.glob("*.proto"))
    assert protos == [
        "serving/protos/monitoring_config.proto",
        "serving/protos/session_bundle_config.proto",
        "serving/protos/ssl_config.proto",
    ]
    # The same command as `make protos`, written to a temporary directory.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *protos,
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "serving" / "protos").iterdir()}
    committed = {p.name: p.read_bytes() for p in PROTO_DIR.glob("*_pb2.py*")}
    assert sorted(fresh) == sorted(committed), "stale or missing generated files: run make protos"
    drifted = [name for name in fresh if fresh[name] != committed[name]]
    assert drifted == [], f"generated files differ from the .proto files: run make protos {drifted}"


def test_protos_have_tf_serving_names_and_numbers():
    def fields(message):
        return {
            f.name: (f.number, f.message_type.full_name if f.message_type else f.type)
            for f in message.DESCRIPTOR.fields
        }

    assert cfg.MonitoringConfig.DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"
    assert fields(monitoring_config_pb2.MonitoringConfig) == {
        "prometheus_config": (1, "tensorflow.serving.PrometheusConfig")
    }
    prometheus = monitoring_config_pb2.PrometheusConfig.DESCRIPTOR
    assert [(f.name, f.number) for f in prometheus.fields] == [("enable", 1), ("path", 2)]
    assert cfg.SSLConfig.DESCRIPTOR.full_name == "tensorflow.serving.SSLConfig"
    ssl = ssl_config_pb2.SSLConfig.DESCRIPTOR
    assert [(f.name, f.number) for f in ssl.fields] == [
        ("server_key", 1),
        ("server_cert", 2),
        ("custom_ca", 3),
        ("client_verify", 4),
    ]
    assert cfg.BatchingParameters.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert fields(session_bundle_config_pb2.BatchingParameters) == {
        "max_batch_size": (1, "google.protobuf.Int64Value"),
        "batch_timeout_micros": (2, "google.protobuf.Int64Value"),
        "max_enqueued_batches": (3, "google.protobuf.Int64Value"),
        "num_batch_threads": (4, "google.protobuf.Int64Value"),
        "thread_pool_name": (5, "google.protobuf.StringValue"),
        "allowed_batch_sizes": (6, FieldDescriptor.TYPE_INT64),
        "pad_variable_length_inputs": (7, FieldDescriptor.TYPE_BOOL),
        "enable_large_batch_splitting": (8, "google.protobuf.BoolValue"),
        "max_execution_batch_size": (9, "google.protobuf.Int64Value"),
    }
    allowed = session_bundle_config_pb2.BatchingParameters.DESCRIPTOR.fields_by_name
    assert allowed["allowed_batch_sizes"].is_repeated
    # Descriptor file names of our own, so the real TF Serving files could coexist.
    assert cfg.SSLConfig.DESCRIPTOR.file.name == "serving/protos/ssl_config.proto"


# ------------------------------------------------------------------------------------------
# Flags
# ------------------------------------------------------------------------------------------


def test_defaults_are_tf_servings(monkeypatch):
    monkeypatch.setattr(cfg, "schedulable_cpus", lambda: 3)
    flags = parse_flags([])
    assert flags == ServerFlags()
    expected = {
        "port": 8500,
        "grpc_socket_path": "",
        "rest_api_port": 0,
        "rest_api_num_threads": 12,
        "rest_api_timeout_in_ms": 30000,
        "rest_api_enable_cors_support": False,
        "enable_batching": False,
        "allow_version_labels_for_unavailable_models": False,
        "batching_parameters_file": "",
        "model_config_file": "",
        "model_config_file_poll_wait_seconds": 0,
        "model_name": "default",
        "model_base_path": "",
        "num_load_threads": 0,
        "max_num_load_retries": 5,
        "load_retry_interval_micros": 60_000_000,
        "file_system_poll_wait_seconds": 1,
        "flush_filesystem_caches": True,
        "tensorflow_session_parallelism": 0,
        "tensorflow_intra_op_parallelism": 0,
        "tensorflow_inter_op_parallelism": 0,
        "ssl_config_file": "",
        "platform_config_file": "",
        "per_process_gpu_memory_fraction": 0.0,
        "saved_model_tags": "serve",
        "grpc_channel_arguments": "",
        "grpc_max_threads": 12,
        "enable_model_warmup": True,
        "num_request_iterations_for_warmup": 0,
        "version": False,
        "monitoring_config_file": "",
        "num_tflite_pools": 3,
        "enable_signature_method_name_check": False,
        "enable_grpc_healthcheck_service": False,
        "num_server_processes": 1,
        "log_format": "text",
    }
    assert {name: getattr(flags, name) for name in expected} == expected
    assert flags.warmup_request_iterations == 1
    assert flags.saved_model_tag_set == ("serve",)


def test_flag_syntaxes():
    flags = parse_flags(
        [
            "--port=9000",
            "--rest_api_port",
            "9001",
            "--model_name=iris",
            "--model_base_path",
            "/models/iris",
            "--enable_batching",
            "--flush_filesystem_caches=false",
            "--enable_model_warmup",
            "0",
            "--enable_grpc_healthcheck_service=1",
            "--allow_version_labels_for_unavailable_models=TRUE",
            "--file_system_poll_wait_seconds=-1",
            "--load_retry_interval_micros",
            "-5",
            "--per_process_gpu_memory_fraction=0.5",
            "--saved_model_tags=serve,gpu",
            "--num_request_iterations_for_warmup=3",
            "--log_format=json",
            "--num_server_processes=4",
            "--port=9002",
        ]
    )
    assert flags.port == 9002  # the last occurrence wins
    assert flags.rest_api_port == 9001
    assert (flags.model_name, flags.model_base_path) == ("iris", "/models/iris")
    assert flags.enable_batching is True
    assert flags.flush_filesystem_caches is False
    assert flags.enable_model_warmup is False
    assert flags.enable_grpc_healthcheck_service is True
    assert flags.allow_version_labels_for_unavailable_models is True
    assert flags.file_system_poll_wait_seconds == -1
    assert flags.load_retry_interval_micros == -5
    assert flags.per_process_gpu_memory_fraction == 0.5
    assert flags.saved_model_tag_set == ("serve", "gpu")
    assert flags.warmup_request_iterations == 3
    assert (flags.log_format, flags.num_server_processes) == ("json", 4)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--foo"], "unknown command line flag 'foo'"),
        (["--foo=bar"], "unknown command line flag 'foo'"),
        (["--por=8500"], "unknown command line flag 'por'"),  # no prefix matching
        (["stray"], "unknown argument: 'stray'"),
        (["--port=eighty"], "invalid int32 value: 'eighty'"),
        (["--port=4294967296"], "int32 value out of range"),
        (["--enable_batching=yes"], "invalid bool value: 'yes'"),
        (["--log_format=xml"], "--log_format"),
        (["--num_server_processes=0"], "--num_server_processes must be at least 1"),
    ],
)
def test_bad_flags_exit_nonzero_naming_the_problem(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(argv)
    assert exit_info.value.code != 0
    assert needle in capsys.readouterr().err


def test_version_prints_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("TensorFlow ModelServer: perucast-model-server")
    assert "TensorFlow Serving 2.21.0 compatible" in out
    assert "TensorFlow Library: " in out


def test_help_lists_flags_and_marks_ignored_and_perucast_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in ("--port", "--model_config_file", "--batching_parameters_file", "--version"):
        assert name in out
    assert "[perucast-only] Server processes sharing" in out
    assert "accepted for TF Serving compatibility; no effect" in out


def test_ignored_flags_are_accepted_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="serving.config")
    flags = parse_flags(
        [
            "--per_process_gpu_memory_fraction=0.3",
            "--xla_cpu_compilation_enabled",
            "--platform_config_file=/p.config",
            "--port=8600",
        ]
    )
    assert flags.per_process_gpu_memory_fraction == 0.3
    assert flags.platform_config_file == "/p.config"
    warned = sorted(r.getMessage().split()[1] for r in caplog.records)
    assert warned == [
        "--per_process_gpu_memory_fraction",
        "--platform_config_file",
        "--xla_cpu_compilation_enabled",
    ]
    assert {
        "per_process_gpu_memory_fraction",
        "tensorflow_session_parallelism",
        "platform_config_file",
        "xla_gpu_compilation_enabled",
    } <= cfg.IGNORED_FLAGS
    assert not {"port", "model_config_file", "enable_batching"} & cfg.IGNORED_FLAGS
    assert {"num_server_processes", "log_format"} == cfg.PERUCAST_FLAGS


def test_check_flags():
    cfg.check_flags(ServerFlags())
    cfg.check_flags(ServerFlags(port=0, grpc_socket_path="/tmp/s.sock"))
    with pytest.raises(ConfigError, match="--port is 0 and --grpc_socket_path is empty"):
        cfg.check_flags(ServerFlags(port=0))
    with pytest.raises(ConfigError, match="--use_alts_credentials is not supported"):
        cfg.check_flags(ServerFlags(use_alts_credentials=True))


# ------------------------------------------------------------------------------------------
# Text protos
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_cls", "text", "line_col"),
    [
        (cfg.ModelServerConfig, "model_config_list {\n  config { nmae: 'x' }\n}\n", "2:12"),
        (cfg.BatchingParameters, "max_batch_size { value: 8 }\nmax_batch_size: 3\n", "2:"),
        (cfg.MonitoringConfig, "prometheus_config {\n  enable: maybe\n}\n", "2:"),
        (cfg.SSLConfig, "server_key: 'k'\nclient_verify: true\ncustom_ca: {\n", "3:"),
    ],
)
def test_malformed_file_names_type_position_and_path(tmp_path, message_cls, text, line_col):
    path = write(tmp_path, "bad.config", text)
    with pytest.raises(ConfigError) as err:
        cfg.load_text_proto(path, message_cls, flag="--some_file")
    message = str(err.value)
    full_name = message_cls.DESCRIPTOR.full_name
    assert message.startswith(f"Error parsing text-format {full_name}: {line_col}")
    assert f"--some_file={path}" in message


def test_parse_error_for_each_config_flag(tmp_path):
    bad = write(tmp_path, "bad.txt", "nope {")
    cases = [
        (lambda: cfg.model_server_config(ServerFlags(model_config_file=bad)), "ModelServerConfig"),
        (
            lambda: cfg.batching_parameters(
                ServerFlags(enable_batching=True, batching_parameters_file=bad)
            ),
            "BatchingParameters",
        ),
        (
            lambda: cfg.monitoring_config(ServerFlags(monitoring_config_file=bad)),
            "MonitoringConfig",
        ),
        (lambda: cfg.ssl_config(ServerFlags(ssl_config_file=bad)), "SSLConfig"),
    ]
    for call, type_name in cases:
        with pytest.raises(
            ConfigError,
            match=rf"^Error parsing text-format tensorflow\.serving\."
            rf"{type_name}: 1:\d+: .*{bad}",
        ):
            call()


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "absent.config"
    with pytest.raises(ConfigError) as err:
        cfg.model_server_config(ServerFlags(model_config_file=str(missing)))
    assert f"--model_config_file={missing}: no such file" in str(err.value)
    assert "tensorflow.serving.ModelServerConfig" in str(err.value)


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------


MODELS = """
model_config_list {
  config {
    name: "crop"
    base_path: "/models/crop"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "fish"
    base_path: "gs://bucket/fish"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
}
"""


def test_model_config_file(tmp_path):
    path = write(tmp_path, "models.config", MODELS)
    config = cfg.model_server_config(ServerFlags(model_config_file=path))
    models = config.model_config_list.config
    assert [(m.name, m.base_path, m.model_platform) for m in models] == [
        ("crop", "/models/crop", "tensorflow"),
        ("fish", "gs://bucket/fish", "tensorflow"),
    ]
    assert list(models[0].model_version_policy.specific.versions) == [1, 2]
    assert dict(models[0].version_labels) == {"stable": 1, "canary": 2}
    assert models[1].model_version_policy.latest.num_versions == 2


def test_single_model_from_flags():
    config = cfg.model_server_config(ServerFlags(model_name="iris", model_base_path="/m/iris"))
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("iris", "/m/iris", "tensorflow")
    assert not model.HasField("model_version_policy")  # TF Serving's default: latest 1


def test_neither_model_flag_is_an_error():
    with pytest.raises(ConfigError, match="Both model_base_path and model_config_file are empty"):
        cfg.model_server_config(ServerFlags())


def test_model_config_file_wins_over_model_base_path(tmp_path, caplog):
    path = write(tmp_path, "models.config", MODELS)
    config = cfg.model_server_config(
        ServerFlags(model_config_file=path, model_name="x", model_base_path="/models/x")
    )
    assert [m.name for m in config.model_config_list.config] == ["crop", "fish"]
    assert "ignoring --model_base_path=/models/x" in caplog.text


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            'config { name: "a" base_path: "/a" model_platform: "tensorflow" }\n'
            'config { name: "a" base_path: "/b" model_platform: "tensorflow" }',
            "Illegal to list model a multiple times in config list",
        ),
        (
            'config { name: "a" base_path: "models/a" model_platform: "tensorflow" }',
            "Expected model a to have an absolute path or URI; got base_path()='models/a'",
        ),
        (
            'config { name: "a" model_platform: "tensorflow" }',
            "Expected model a to have an absolute path or URI; got base_path()=''",
        ),
        (
            'config { base_path: "/a" model_platform: "tensorflow" }',
            "model_config_list.config[0] has no name",
        ),
        (
            'config { name: "a" base_path: "/a" model_platform: "pytorch" }',
            "Model a requests unsupported platform pytorch",
        ),
        (
            'config { name: "a" base_path: "/a" model_platform: "tensorflow"'
            " model_type: TENSORFLOW }",
            "Illegal setting both ModelServerConfig::model_type (deprecated) and "
            "ModelServerConfig::model_platform",
        ),
        (
            'config { name: "a" base_path: "/a" model_type: OTHER }',
            "ModelServerConfig::model_type choice OTHER not supported",
        ),
        (
            'config { name: "a" base_path: "/a" model_platform: "tensorflow"'
            " model_version_policy { specific { versions: 3 } }"
            ' version_labels { key: "stable" value: 2 } }',
            "Request to assign label to version 2 of model a, which is not currently available",
        ),
        (
            'config { name: "a" base_path: "/a" model_platform: "tensorflow"'
            ' version_labels { key: "stable" value: 0 } }',
            "version label 'stable' points at version 0",
        ),
    ],
)
def test_invalid_model_configs(tmp_path, body, needle):
    path = write(tmp_path, "models.config", f"model_config_list {{\n{body}\n}}\n")
    with pytest.raises(ConfigError) as err:
        cfg.model_server_config(ServerFlags(model_config_file=path))
    assert needle in str(err.value)
    assert f"--model_config_file={path}" in str(err.value)


def test_relative_model_base_path_flag_is_rejected():
    with pytest.raises(ConfigError, match=r"absolute path or URI; got base_path\(\)='models/iris'"):
        cfg.model_server_config(ServerFlags(model_base_path="models/iris"))


def test_labels_for_unavailable_versions_allowed_by_flag(tmp_path):
    body = (
        'config { name: "a" base_path: "/a" model_platform: "tensorflow"'
        " model_version_policy { specific { versions: 3 } }"
        ' version_labels { key: "next" value: 4 } }'
    )
    path = write(tmp_path, "models.config", f"model_config_list {{ {body} }}")
    config = cfg.model_server_config(
        ServerFlags(model_config_file=path, allow_version_labels_for_unavailable_models=True)
    )
    assert dict(config.model_config_list.config[0].version_labels) == {"next": 4}


def test_platform_defaults_and_deprecated_model_type(tmp_path):
    body = (
        'config { name: "a" base_path: "/a" }\n'
        'config { name: "b" base_path: "/b" model_type: TENSORFLOW }'
    )
    path = write(tmp_path, "models.config", f"model_config_list {{\n{body}\n}}\n")
    config = cfg.model_server_config(ServerFlags(model_config_file=path))
    assert [(m.model_platform, m.model_type) for m in config.model_config_list.config] == [
        ("tensorflow", 0),
        ("tensorflow", 0),
    ]


def test_empty_and_custom_model_configs(tmp_path):
    empty = write(tmp_path, "empty.config", "")
    assert cfg.model_server_config(ServerFlags(model_config_file=empty)) == cfg.ModelServerConfig()
    custom = write(
        tmp_path,
        "custom.config",
        "custom_model_config { [type.googleapis.com/tensorflow.serving.SSLConfig] {} }",
    )
    with pytest.raises(ConfigError, match="custom_model_config is not supported"):
        cfg.model_server_config(ServerFlags(model_config_file=custom))


# ------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------


def test_no_batching_without_the_flag():
    assert cfg.batching_parameters(ServerFlags()) is None
    assert cfg.batching_options(ServerFlags()) is None


def test_batching_file_without_enable_batching_is_an_error(tmp_path):
    path = write(tmp_path, "batching.config", "max_batch_size { value: 8 }")
    with pytest.raises(ConfigError, match="is set without --enable_batching"):
        cfg.batching_parameters(ServerFlags(batching_parameters_file=path))


def test_enable_batching_defaults(monkeypatch):
    monkeypatch.setattr(cfg, "schedulable_cpus", lambda: 6)
    params = cfg.batching_parameters(ServerFlags(enable_batching=True))
    assert params.max_batch_size.value == 1000
    assert params.batch_timeout_micros.value == 0
    assert params.max_enqueued_batches.value == 10
    assert params.num_batch_threads.value == 6
    assert params.thread_pool_name.value == "model_server_batch_threads"
    assert params.HasField("enable_large_batch_splitting")
    assert params.enable_large_batch_splitting.value is False
    assert params.max_execution_batch_size.value == 1000
    assert list(params.allowed_batch_sizes) == []
    assert params.pad_variable_length_inputs is False
    assert cfg.batching_options(ServerFlags(enable_batching=True)) == cfg.BatchingOptions(
        max_batch_size=1000,
        batch_timeout_micros=0,
        max_enqueued_batches=10,
        num_batch_threads=6,
        allowed_batch_sizes=(),
        pad_variable_length_inputs=False,
        enable_large_batch_splitting=False,
        max_execution_batch_size=1000,
        thread_pool_name="model_server_batch_threads",
    )


def test_batching_file_values_and_filled_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(cfg, "schedulable_cpus", lambda: 2)
    path = write(
        tmp_path,
        "batching.config",
        "max_batch_size { value: 32 }\n"
        "batch_timeout_micros { value: 5000 }\n"
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\nallowed_batch_sizes: 32\n"
        "pad_variable_length_inputs: true\n",
    )
    flags = ServerFlags(enable_batching=True, batching_parameters_file=path)
    params = cfg.batching_parameters(flags)
    assert (params.max_batch_size.value, params.batch_timeout_micros.value) == (32, 5000)
    assert params.max_enqueued_batches.value == 10  # filled in
    assert params.num_batch_threads.value == 2  # filled in
    assert params.thread_pool_name.value == "batch_threads"  # the scheduler's own default
    assert list(params.allowed_batch_sizes) == [8, 16, 32]
    options = cfg.batching_options(flags)
    assert options.allowed_batch_sizes == (8, 16, 32)
    assert options.pad_variable_length_inputs is True
    assert options.max_execution_batch_size == 32


def test_large_batch_splitting(tmp_path):
    path = write(
        tmp_path,
        "batching.config",
        "max_batch_size { value: 64 }\nenable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 16 }\n",
    )
    options = cfg.batching_options(ServerFlags(enable_batching=True, batching_parameters_file=path))
    assert (options.enable_large_batch_splitting, options.max_execution_batch_size) == (True, 16)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "max_batch_size { value: 32 } allowed_batch_sizes: 8 allowed_batch_sizes: 16",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 16; "
            "expected 32",
        ),
        (
            "allowed_batch_sizes: 8 allowed_batch_sizes: 4",
            "allowed_batch_sizes entries must be positive and monotonically increasing",
        ),
        (
            "allowed_batch_sizes: 500 allowed_batch_sizes: 999",
            "last entry was 999; expected 1000",
        ),  # the default max_batch_size
        ("max_batch_size { value: 0 }", "max_batch_size must be positive; was 0"),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
        ("max_enqueued_batches { value: -1 }", "max_enqueued_batches must be positive; was -1"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be non-negative"),
        (
            "max_batch_size { value: 8 } enable_large_batch_splitting { value: true }"
            " max_execution_batch_size { value: 9 }",
            "max_execution_batch_size must be between 1 and max_batch_size (8); was 9",
        ),
    ],
)
def test_invalid_batching(tmp_path, text, needle):
    path = write(tmp_path, "batching.config", text)
    with pytest.raises(ConfigError) as err:
        cfg.batching_parameters(ServerFlags(enable_batching=True, batching_parameters_file=path))
    assert needle in str(err.value)
    assert str(err.value).startswith(f"--batching_parameters_file={path}: ")


def test_batching_options_round_trip():
    options = cfg.BatchingOptions(
        max_batch_size=16, num_batch_threads=3, allowed_batch_sizes=(4, 16), thread_pool_name="p"
    )
    assert cfg.BatchingOptions.from_proto(options.to_proto()) == options
    # Without splitting, TF Serving runs batches of up to max_batch_size whatever the file says.
    unsplit = cfg.BatchingOptions(
        max_batch_size=16, max_execution_batch_size=8, num_batch_threads=1
    )
    assert unsplit.max_execution_batch_size == 16
    split = cfg.BatchingOptions(
        max_batch_size=16, enable_large_batch_splitting=True, num_batch_threads=1
    )
    assert split.max_execution_batch_size == 16


# ------------------------------------------------------------------------------------------
# Monitoring
# ------------------------------------------------------------------------------------------


def test_monitoring_config(tmp_path):
    assert cfg.monitoring_config(ServerFlags()) == cfg.MonitoringConfig()
    default_path = write(tmp_path, "m1.config", "prometheus_config { enable: true }")
    config = cfg.monitoring_config(ServerFlags(monitoring_config_file=default_path))
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"
    custom = write(tmp_path, "m2.config", 'prometheus_config { enable: true, path: "/metrics" }')
    assert (
        cfg.monitoring_config(ServerFlags(monitoring_config_file=custom)).prometheus_config.path
        == "/metrics"
    )
    disabled = write(tmp_path, "m3.config", "prometheus_config { enable: false }")
    assert (
        cfg.monitoring_config(ServerFlags(monitoring_config_file=disabled)).prometheus_config.path
        == ""
    )
    relative = write(tmp_path, "m4.config", 'prometheus_config { enable: true path: "metrics" }')
    with pytest.raises(ConfigError, match=r"prometheus_config\.path must start with '/'"):
        cfg.monitoring_config(ServerFlags(monitoring_config_file=relative))


# ------------------------------------------------------------------------------------------
# gRPC options
# ------------------------------------------------------------------------------------------


def test_grpc_channel_arguments():
    flags = ServerFlags(
        grpc_channel_arguments="grpc.max_connection_age_ms=2000,grpc.primary_user_agent=perucast,"
        "grpc.keepalive_time_ms=-1,grpc.big=99999999999, grpc.http2.max_pings_without_data = 0,"
    )
    assert cfg.grpc_channel_arguments(flags) == [
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.primary_user_agent", "perucast"),
        ("grpc.keepalive_time_ms", -1),
        ("grpc.big", "99999999999"),  # not an int32: passed as a string, as TF Serving does
        ("grpc.http2.max_pings_without_data", 0),
    ]
    assert cfg.grpc_channel_arguments(ServerFlags()) == []
    for bad in ("grpc.max_connection_age_ms", "=5"):
        with pytest.raises(ConfigError, match="--grpc_channel_arguments: expected key=value"):
            cfg.grpc_channel_arguments(ServerFlags(grpc_channel_arguments=bad))


def test_grpc_server_options():
    assert cfg.grpc_server_options(ServerFlags()) == [
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.max_send_message_length", 2**31 - 1),
    ]
    flags = ServerFlags(
        grpc_channel_arguments="grpc.max_receive_message_length=1024,grpc.max_connection_age_ms=5",
    )
    assert cfg.grpc_server_options(flags) == [
        ("grpc.max_receive_message_length", 1024),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_connection_age_ms", 5),
    ]


# ------------------------------------------------------------------------------------------
# TLS
# ------------------------------------------------------------------------------------------


def _ssl_text(key: bytes, cert: bytes, ca: bytes | None = None, verify: bool = False) -> str:
    def quoted(pem: bytes) -> str:
        return '"' + pem.decode().replace("\n", "\\n") + '"'

    text = f"server_key: {quoted(key)}\nserver_cert: {quoted(cert)}\n"
    if ca is not None:
        text += f"custom_ca: {quoted(ca)}\n"
    return text + f"client_verify: {'true' if verify else 'false'}\n"


def _echo_server(credentials: grpc.ServerCredentials) -> tuple[grpc.Server, int]:
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(lambda request, _: request)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def _ping(port: int, ca: trustme.CA, client: trustme.LeafCert | None) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=client.private_key_pem.bytes() if client else None,
        certificate_chain=client.cert_chain_pems[0].bytes() if client else None,
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        return channel.unary_unary("/test.Echo/Ping")(b"ping", timeout=10)


def test_ssl_config_absent_means_plaintext():
    assert cfg.ssl_config(ServerFlags()) is None


def test_tls_without_client_verification(tmp_path):
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost")
    key, cert = server_cert.private_key_pem.bytes(), server_cert.cert_chain_pems[0].bytes()
    path = write(tmp_path, "ssl.config", _ssl_text(key, cert))
    ssl = cfg.ssl_config(ServerFlags(ssl_config_file=path))
    assert (ssl.server_key.encode(), ssl.server_cert.encode(), ssl.client_verify) == (
        key,
        cert,
        False,
    )
    server, port = _echo_server(cfg.server_credentials(ssl))
    try:
        assert _ping(port, ca, client=None) == b"ping"
    finally:
        server.stop(None)


def test_mutual_tls_requires_a_client_certificate_from_custom_ca(tmp_path):
    ca, other_ca = trustme.CA(), trustme.CA()
    server_cert = ca.issue_cert("localhost")
    path = write(
        tmp_path,
        "ssl.config",
        _ssl_text(
            server_cert.private_key_pem.bytes(),
            server_cert.cert_chain_pems[0].bytes(),
            ca=ca.cert_pem.bytes(),
            verify=True,
        ),
    )
    ssl = cfg.ssl_config(ServerFlags(ssl_config_file=path))
    assert ssl.client_verify is True
    assert ssl.custom_ca == ca.cert_pem.bytes().decode()
    server, port = _echo_server(cfg.server_credentials(ssl))
    try:
        assert _ping(port, ca, client=ca.issue_cert("client@example.com")) == b"ping"
        for client in (None, other_ca.issue_cert("client@example.com")):
            with pytest.raises(grpc.RpcError) as err:
                _ping(port, ca, client=client)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('server_cert: "-----BEGIN CERTIFICATE-----"', "server_key is empty"),
        (
            'server_key: "/etc/tls/key.pem" server_cert: "-----BEGIN CERTIFICATE-----"',
            "server_key is not PEM",
        ),
        (
            'server_key: "-----BEGIN KEY" server_cert: "-----BEGIN CERT" client_verify: true',
            "client_verify is true but custom_ca is empty",
        ),
        (
            'server_key: "-----BEGIN KEY" server_cert: "-----BEGIN CERT" custom_ca: "/ca.pem"',
            "custom_ca is not PEM",
        ),
    ],
)
def test_invalid_ssl_configs(tmp_path, text, needle):
    path = write(tmp_path, "ssl.config", text)
    with pytest.raises(ConfigError) as err:
        cfg.ssl_config(ServerFlags(ssl_config_file=path))
    assert needle in str(err.value)
    assert f"--ssl_config_file={path}" in str(err.value)
