"""Command-line flags and config files of ``perucast-model-server``, as TensorFlow Serving has them.

``perucast-model-server`` accepts ``tensorflow_model_server``'s flags (same names, same defaults)
and reads the same text-format config files:

* ``--model_config_file``: a ``tensorflow.serving.ModelServerConfig``;
* ``--batching_parameters_file``: a ``tensorflow.serving.BatchingParameters``;
* ``--monitoring_config_file``: a ``tensorflow.serving.MonitoringConfig``;
* ``--ssl_config_file``: a ``tensorflow.serving.SSLConfig``.

Defaults and error wording follow TensorFlow Serving 2.21 (``model_servers/main.cc`` and
``server.h``/``server.cc``, ``model_servers/server_core.cc``,
``servables/tensorflow/bundle_factory_util.h`` and TensorFlow's ``shared_batch_scheduler.h``).
Every problem with a flag or a config file raises `ConfigError`, naming the flag, file or field.

Deliberate differences from ``tensorflow_model_server``:

* an unknown flag is an error (TF Serving prints "unknown argument" and carries on);
* ``--name value`` is accepted besides ``--name=value``;
* the flags in `IGNORED_FLAGS` are accepted for compatibility but have no effect (a warning is
  logged for each one given);
* ``--use_alts_credentials`` is rejected (ALTS is not available), rather than ignored;
* a model with an empty ``model_platform`` is served as ``tensorflow`` (TF Serving rejects it);
* ``--num_server_processes`` and ``--log_format`` exist only here (see `PERUCAST_FLAGS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import itertools
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import message as _message
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.protos import monitoring_config_pb2, session_bundle_config_pb2, ssl_config_pb2

logger = logging.getLogger(__name__)

ModelServerConfig = model_server_config_pb2.ModelServerConfig
BatchingParameters = session_bundle_config_pb2.BatchingParameters
MonitoringConfig = monitoring_config_pb2.MonitoringConfig
SSLConfig = ssl_config_pb2.SSLConfig

PROG = "perucast-model-server"
TF_SERVING_VERSION = "2.21.0"
TENSORFLOW_PLATFORM = "tensorflow"  # model_servers/model_platform_types.h
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)

# Batching defaults: TF Serving leaves unset BatchingParameters fields to TensorFlow's
# SharedBatchScheduler (core/kernels/batching_util/shared_batch_scheduler.h): Options and
# QueueOptions. --enable_batching without a file sets only the thread pool name (server.cc).
DEFAULT_MAX_BATCH_SIZE = 1000  # QueueOptions::input_batch_size_limit
DEFAULT_BATCH_TIMEOUT_MICROS = 0  # QueueOptions::batch_timeout_micros
DEFAULT_MAX_ENQUEUED_BATCHES = 10  # QueueOptions::max_enqueued_batches
DEFAULT_BATCH_THREAD_POOL_NAME = "batch_threads"  # Options::thread_pool_name
MODEL_SERVER_BATCH_THREAD_POOL_NAME = "model_server_batch_threads"  # server.cc, no file given


class ConfigError(ValueError):
    """A flag or config file TensorFlow Serving would refuse; the message says what to fix."""


def schedulable_cpus() -> int:
    """The number of CPUs this process may run on (TensorFlow's ``port::NumSchedulableCPUs``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _four_per_cpu() -> int:
    return 4 * schedulable_cpus()


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


def _flag(
    default: Any = None,
    help: str = "",
    *,
    kind: str,
    default_factory: Callable[[], Any] | None = None,
    default_doc: str | None = None,
    ignored: bool = False,
    perucast: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A `ServerFlags` field with the metadata `parse_flags` builds the parser from."""
    metadata = {
        "help": help,
        "kind": kind,
        "default_doc": default_doc,
        "ignored": ignored,
        "perucast": perucast,
        "choices": choices,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ServerFlags:
    """Every flag ``perucast-model-server`` accepts, with TensorFlow Serving's names and defaults.

    The fields follow ``tensorflow_model_server``'s flag list (``model_servers/main.cc``; the
    defaults live in ``model_servers/server.h``, ``Server::Options``). Flags named in
    `IGNORED_FLAGS` are parsed but have no effect; `PERUCAST_FLAGS` are ours, not TF Serving's.
    """

    # gRPC and REST front ends.
    port: int = _flag(8500, "TCP port of the gRPC API; 0 disables it.", kind="int32")
    grpc_socket_path: str = _flag(
        "", "If non-empty, also serve the gRPC API on this UNIX socket path.", kind="string"
    )
    rest_api_port: int = _flag(
        0, "TCP port of the HTTP/REST API; 0 disables it. Must differ from --port.", kind="int32"
    )
    rest_api_num_threads: int = _flag(
        help="Threads serving HTTP/REST requests.",
        kind="int32",
        default_factory=_four_per_cpu,
        default_doc="4 x schedulable CPUs",
    )
    rest_api_timeout_in_ms: int = _flag(30000, "Timeout of HTTP/REST calls.", kind="int32")
    rest_api_enable_cors_support: bool = _flag(
        False, "Add CORS headers to HTTP/REST responses.", kind="bool"
    )
    enable_batching: bool = _flag(False, "Batch concurrent requests to a model.", kind="bool")
    allow_version_labels_for_unavailable_models: bool = _flag(
        False,
        "Allow assigning a version label to a model version that is not loaded yet.",
        kind="bool",
    )
    batching_parameters_file: str = _flag(
        "",
        "Text-format BatchingParameters to use instead of the batching defaults "
        "(needs --enable_batching).",
        kind="string",
    )
    enable_per_model_batching_parameters: bool = _flag(
        False,
        "Read per-model batching parameters from each SavedModel's assets.extra.",
        kind="bool",
        ignored=True,
    )
    model_config_file: str = _flag(
        "",
        "Text-format ModelServerConfig naming the models to serve. When set, --model_name and "
        "--model_base_path are ignored.",
        kind="string",
    )
    model_config_file_poll_wait_seconds: int = _flag(
        0,
        "Seconds between re-reads of --model_config_file; 0 reads it once at start-up.",
        kind="int32",
    )
    model_name: str = _flag(
        "default", "Name of the single model (without --model_config_file).", kind="string"
    )
    model_base_path: str = _flag(
        "",
        "Directory holding the single model's numbered versions (without --model_config_file).",
        kind="string",
    )
    num_load_threads: int = _flag(
        0, "Threads loading servables; 0 loads them one at a time.", kind="int32", ignored=True
    )
    num_unload_threads: int = _flag(
        0, "Threads unloading servables; 0 unloads one at a time.", kind="int32", ignored=True
    )
    max_num_load_retries: int = _flag(
        5, "Retries of a failed model load; 0 tries once.", kind="int32"
    )
    load_retry_interval_micros: int = _flag(
        60_000_000,
        "Microseconds between load retries; negative retries at once.",
        kind="int64",
    )
    file_system_poll_wait_seconds: int = _flag(
        1,
        "Seconds between scans for new model versions; 0 scans once; negative never scans.",
        kind="int32",
    )
    flush_filesystem_caches: bool = _flag(
        True, "Flush file-system caches after models load.", kind="bool"
    )
    tensorflow_session_parallelism: int = _flag(
        0, "Threads of a TensorFlow session; 0 chooses.", kind="int64", ignored=True
    )
    tensorflow_session_config_file: str = _flag(
        "", "Text-format TensorFlow ConfigProto for sessions.", kind="string", ignored=True
    )
    tensorflow_intra_op_parallelism: int = _flag(
        0, "Threads inside one TensorFlow op; 0 lets TensorFlow choose.", kind="int64"
    )
    tensorflow_inter_op_parallelism: int = _flag(
        0, "TensorFlow ops run at once; 0 lets TensorFlow choose.", kind="int64"
    )
    use_alts_credentials: bool = _flag(
        False, "Use Google ALTS credentials (not supported: refused when set).", kind="bool"
    )
    ssl_config_file: str = _flag(
        "", "Text-format SSLConfig: serve gRPC over TLS (or mutual TLS).", kind="string"
    )
    platform_config_file: str = _flag(
        "", "Text-format PlatformConfigMap.", kind="string", ignored=True
    )
    per_process_gpu_memory_fraction: float = _flag(
        0.0, "Share of GPU memory to reserve; 0 lets TensorFlow choose.", kind="float", ignored=True
    )
    saved_model_tags: str = _flag(
        "serve",
        "Comma-separated tags of the MetaGraph to load from each SavedModel.",
        kind="string",
    )
    grpc_channel_arguments: str = _flag(
        "",
        "Comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=2000.",
        kind="string",
    )
    grpc_max_threads: int = _flag(
        help="Most threads handling gRPC requests.",
        kind="int32",
        default_factory=_four_per_cpu,
        default_doc="4 x schedulable CPUs",
    )
    enable_model_warmup: bool = _flag(
        True, "Replay assets.extra/tf_serving_warmup_requests when a model loads.", kind="bool"
    )
    num_request_iterations_for_warmup: int = _flag(
        0, "Times each warm-up request is replayed; used only when > 0 (else 1).", kind="int32"
    )
    version: bool = _flag(False, "Print the version and exit.", kind="bool")
    monitoring_config_file: str = _flag(
        "", "Text-format MonitoringConfig (Prometheus metrics on the REST port).", kind="string"
    )
    remove_unused_fields_from_bundle_metagraph: bool = _flag(
        True, "Drop unused MetaGraphDef fields to save memory.", kind="bool", ignored=True
    )
    prefer_tflite_model: bool = _flag(
        False,
        "Serve model.tflite instead of saved_model.pb when present.",
        kind="bool",
        ignored=True,
    )
    num_tflite_pools: int = _flag(
        help="TFLite interpreter pools per model.",
        kind="int32",
        default_factory=lambda: schedulable_cpus(),
        default_doc="schedulable CPUs",
        ignored=True,
    )
    num_tflite_interpreters_per_pool: int = _flag(
        1, "TFLite interpreters per pool.", kind="int32", ignored=True
    )
    enable_signature_method_name_check: bool = _flag(
        False,
        "Require classify/regress signatures to carry the matching method_name (off for TF2 "
        "models).",
        kind="bool",
    )
    xla_cpu_compilation_enabled: bool = _flag(
        False, "Enable XLA:CPU JIT compilation.", kind="bool", ignored=True
    )
    xla_gpu_compilation_enabled: bool = _flag(
        False, "Enable XLA:CPU and XLA:GPU JIT compilation.", kind="bool", ignored=True
    )
    enable_profiler: bool = _flag(True, "Serve the profiler service.", kind="bool", ignored=True)
    thread_pool_factory_config_file: str = _flag(
        "", "Text-format ThreadPoolConfig.", kind="string", ignored=True
    )
    mixed_precision: str = _flag("", "Mixed precision mode.", kind="string", ignored=True)
    skip_initialize_tpu: bool = _flag(
        False, "Do not initialise the TPU system.", kind="bool", ignored=True
    )
    enable_grpc_healthcheck_service: bool = _flag(
        False, "Serve the standard grpc.health.v1.Health service.", kind="bool"
    )
    enable_serialization_as_tensor_content: bool = _flag(
        False, "Serialise predict responses as tensor_content.", kind="bool", ignored=True
    )

    # perucast-only flags: not TensorFlow Serving's.
    num_server_processes: int = _flag(
        1,
        "[perucast-only] Server processes sharing the gRPC and REST ports (SO_REUSEPORT).",
        kind="int32",
        perucast=True,
    )
    log_format: str = _flag(
        "text",
        "[perucast-only] Log line format.",
        kind="string",
        perucast=True,
        choices=("text", "json"),
    )

    @property
    def warmup_request_iterations(self) -> int:
        """How often each warm-up request is replayed (TF Serving's default is 1)."""
        return (
            self.num_request_iterations_for_warmup
            if self.num_request_iterations_for_warmup > 0
            else 1
        )

    @property
    def saved_model_tag_set(self) -> tuple[str, ...]:
        """``--saved_model_tags`` split on commas."""
        return tuple(tag for tag in self.saved_model_tags.split(",") if tag)


IGNORED_FLAGS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(ServerFlags) if f.metadata["ignored"]
)
"""TF Serving flags accepted for compatibility but without effect here (a warning is logged)."""

PERUCAST_FLAGS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(ServerFlags) if f.metadata["perucast"]
)
"""Flags of ``perucast-model-server`` that ``tensorflow_model_server`` does not have."""


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"invalid bool value: {text!r} (use true, false, 1 or 0)")


def _int_parser(kind: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind} value: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{kind} value out of range: {text!r}")
        return value

    return parse


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [--flag=value ...] (--help lists the flags)",
        description="TensorFlow Serving compatible model server (tensorflow_model_server flags).",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    for f in dataclasses.fields(ServerFlags):
        meta = f.metadata
        kind = meta["kind"]
        default = meta["default_doc"] or (
            str(f.default).lower() if kind == "bool" else repr(f.default)
        )
        notes = [f"{kind}, default {default}"]
        if meta["ignored"]:
            notes.append("accepted for TF Serving compatibility; no effect")
        help_text = f"{meta['help']} ({'; '.join(notes)})"
        option = f"--{f.name}"
        if kind == "bool":
            parser.add_argument(
                option, nargs="?", const=True, type=_parse_bool, metavar="BOOL", help=help_text
            )
        elif kind == "int32":
            parser.add_argument(
                option,
                type=_int_parser("int32", _INT32_MIN, INT32_MAX),
                metavar="INT",
                help=help_text,
            )
        elif kind == "int64":
            parser.add_argument(
                option,
                type=_int_parser("int64", _INT64_MIN, _INT64_MAX),
                metavar="INT",
                help=help_text,
            )
        elif kind == "float":
            parser.add_argument(option, type=_parse_float, metavar="FLOAT", help=help_text)
        else:
            parser.add_argument(option, choices=meta["choices"], metavar="STRING", help=help_text)
    return parser


def version_text() -> str:
    """What ``--version`` prints (TF Serving prints its own and the TensorFlow version)."""

    def dist_version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return (
        f"TensorFlow ModelServer: {PROG} {dist_version('perucast')} "
        f"(TensorFlow Serving {TF_SERVING_VERSION} compatible)\n"
        f"TensorFlow Library: {dist_version('tensorflow')}"
    )


def parse_flags(argv: Sequence[str]) -> ServerFlags:
    """Parses ``tensorflow_model_server`` command-line flags.

    Accepts ``--name=value`` and ``--name value``; a boolean flag also as a bare ``--name`` and
    with ``true``/``false``/``1``/``0``. Logs a warning for each flag of `IGNORED_FLAGS` given.

    Args:
        argv: The arguments after the program name (``sys.argv[1:]``).

    Returns:
        The flags, with TF Serving's defaults for those not given.

    Raises:
        SystemExit: With status 2 and a message on stderr for an unknown flag, a positional
            argument or a malformed value; with status 0 after ``--help`` or ``--version``.
    """
    parser = _build_parser()
    namespace, extras = parser.parse_known_args(list(argv))
    for extra in extras:
        if extra.startswith("-") and extra.lstrip("-"):
            name = extra.lstrip("-").split("=", 1)[0]
            parser.error(f"unknown command line flag '{name}'")
        parser.error(f"unknown argument: {extra!r} (flags look like --name=value)")
    given = vars(namespace)
    flags = ServerFlags(**given)
    if flags.version:
        print(version_text())
        raise SystemExit(0)
    if flags.num_server_processes < 1:
        parser.error(f"--num_server_processes must be at least 1; got {flags.num_server_processes}")
    for name in sorted(IGNORED_FLAGS & given.keys()):
        logger.warning(
            "Flag --%s is accepted for TensorFlow Serving compatibility but has no effect in %s",
            name,
            PROG,
        )
    return flags


def check_flags(flags: ServerFlags) -> None:
    """Rejects flag combinations TensorFlow Serving refuses at start-up.

    Raises:
        ConfigError: No gRPC listener (``--port=0`` without ``--grpc_socket_path``), or
            ``--use_alts_credentials`` (not supported).
    """
    if flags.port == 0 and not flags.grpc_socket_path:
        raise ConfigError(
            "--port is 0 and --grpc_socket_path is empty: set --port (default 8500) or "
            "--grpc_socket_path so the gRPC API has somewhere to listen"
        )
    if flags.use_alts_credentials:
        raise ConfigError(
            "--use_alts_credentials is not supported by perucast-model-server: drop it, or use "
            "--ssl_config_file for TLS"
        )


# ---------------------------------------------------------------------------------------------
# Text-format protos
# ---------------------------------------------------------------------------------------------

_M = TypeVar("_M", bound=_message.Message)
_LOCATION_PREFIX = re.compile(r"^\d+:\d+ : ")


def load_text_proto(path: str | os.PathLike[str], message_cls: type[_M], *, flag: str = "") -> _M:
    """Reads a text-format protobuf file, as TF Serving's ``ParseProtoTextFile`` does.

    Args:
        path: The file.
        message_cls: The message class to parse into, e.g. ``ModelServerConfig``.
        flag: The flag that named the file, for the error message (e.g. "--model_config_file").

    Returns:
        The parsed message.

    Raises:
        ConfigError: The file cannot be read, or does not parse. A parse error reads
            "Error parsing text-format <full message name>: <line>:<column>: <problem>" and
            names the file.
    """
    full_name = message_cls.DESCRIPTOR.full_name
    where = f"{flag}={path}" if flag else str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file (expected a text-format {full_name})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}: cannot read the {full_name} file: {err}") from None
    message = message_cls()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        detail = _LOCATION_PREFIX.sub("", str(err))
        line, column = err.GetLine(), err.GetColumn()
        location = f"{line}:{column}: " if line is not None else ""
        raise ConfigError(
            f"Error parsing text-format {full_name}: {location}{detail} (in {where})"
        ) from None
    return message


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def _is_relative_path(uri: str) -> bool:
    """TF Serving's ``UriIsRelativePath``: no scheme, no host, and not an absolute path."""
    if "://" in uri:
        return False
    return not uri.startswith("/")


def model_server_config(flags: ServerFlags) -> model_server_config_pb2.ModelServerConfig:
    """The models to serve: ``--model_config_file``, or one model from the flags.

    Like TF Serving, ``--model_config_file`` wins when given: ``--model_name`` and
    ``--model_base_path`` are then ignored (with a warning). Otherwise one ``ModelConfig`` is built
    from ``--model_name`` and ``--model_base_path`` with platform "tensorflow". The result is
    checked with `validate_model_server_config`.

    Raises:
        ConfigError: Neither flag is set, the file is unreadable or malformed, or the config is
            one TF Serving rejects.
    """
    if flags.model_config_file:
        if flags.model_base_path:
            logger.warning(
                "--model_config_file is set: ignoring --model_base_path=%s and --model_name=%s "
                "(as TensorFlow Serving does)",
                flags.model_base_path,
                flags.model_name,
            )
        config = load_text_proto(
            flags.model_config_file, ModelServerConfig, flag="--model_config_file"
        )
        source = f"--model_config_file={flags.model_config_file}"
    else:
        if not flags.model_base_path:
            raise ConfigError(
                "Both model_base_path and model_config_file are empty: pass --model_base_path "
                "(and --model_name) to serve one model, or --model_config_file to serve several"
            )
        logger.info(
            "Building single TensorFlow model file config: model_name: %s model_base_path: %s",
            flags.model_name,
            flags.model_base_path,
        )
        config = ModelServerConfig()
        model = config.model_config_list.config.add()
        model.name = flags.model_name
        model.base_path = flags.model_base_path
        model.model_platform = TENSORFLOW_PLATFORM
        source = "--model_name/--model_base_path"
    validate_model_server_config(
        config,
        source=source,
        allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
    )
    return config


def validate_model_server_config(
    config: model_server_config_pb2.ModelServerConfig,
    *,
    source: str = "ModelServerConfig",
    allow_version_labels_for_unavailable_models: bool = False,
) -> None:
    """Checks a ModelServerConfig the way TF Serving's ServerCore does, filling in the platform.

    Models with neither ``model_platform`` nor the deprecated ``model_type`` get platform
    "tensorflow" (in place). An empty config (no ``model_config_list``) is accepted: the server
    then starts with no models, as TF Serving does.

    Args:
        config: The config; changed in place as described.
        source: Where it came from, for error messages (e.g. "--model_config_file=/m.config").
        allow_version_labels_for_unavailable_models: The flag of the same name.

    Raises:
        ConfigError: ``custom_model_config`` is used; a model has no name, a repeated name, a
            relative or empty base path, a platform other than "tensorflow", both
            ``model_type`` and ``model_platform``, or a version label on a version its
            ``specific`` version policy never loads.
    """
    which = config.WhichOneof("config")
    if which == "custom_model_config":
        raise ConfigError(
            f"{source}: custom_model_config is not supported (ModelServer does not yet support "
            "custom model config); list the models in model_config_list"
        )
    if which is None:
        logger.warning("%s: no model_config_list, so no models will be served", source)
        return
    names: set[str] = set()
    for index, model in enumerate(config.model_config_list.config):
        if not model.name:
            raise ConfigError(
                f'{source}: model_config_list.config[{index}] has no name: set name: "..."'
            )
        if model.name in names:
            raise ConfigError(
                f"{source}: Illegal to list model {model.name} multiple times in config list"
            )
        names.add(model.name)
        if _is_relative_path(model.base_path):
            raise ConfigError(
                f"{source}: Expected model {model.name} to have an absolute path or URI; got "
                f"base_path()={model.base_path!r}"
            )
        _check_platform(model, source)
        _check_version_labels(model, source, allow_version_labels_for_unavailable_models)


def _check_platform(model: model_server_config_pb2.ModelConfig, source: str) -> None:
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise ConfigError(
                f"{source}: model {model.name}: Illegal setting both ModelServerConfig::model_type "
                "(deprecated) and ModelServerConfig::model_platform; keep only "
                'model_platform: "tensorflow"'
            )
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise ConfigError(
                f"{source}: model {model.name}: ModelServerConfig::model_type choice "
                f"{model_server_config_pb2.ModelType.Name(model.model_type)} not supported; use "
                'model_platform: "tensorflow"'
            )
        model.ClearField("model_type")
        model.model_platform = TENSORFLOW_PLATFORM
    elif not model.model_platform:
        logger.warning(
            '%s: model %s has no model_platform; serving it as "tensorflow" (TensorFlow Serving '
            "would reject this config)",
            source,
            model.name,
        )
        model.model_platform = TENSORFLOW_PLATFORM
    if model.model_platform != TENSORFLOW_PLATFORM:
        raise ConfigError(
            f"{source}: Model {model.name} requests unsupported platform {model.model_platform}; "
            'only "tensorflow" is served'
        )


def _check_version_labels(
    model: model_server_config_pb2.ModelConfig, source: str, allow_unavailable: bool
) -> None:
    policy = model.model_version_policy
    for label, version in sorted(model.version_labels.items()):
        if not label:
            raise ConfigError(f"{source}: model {model.name} has a version label with no name")
        if version <= 0:
            raise ConfigError(
                f"{source}: model {model.name}: version label {label!r} points at version "
                f"{version}; versions are positive integers"
            )
        if (
            not allow_unavailable
            and policy.WhichOneof("policy_choice") == "specific"
            and version not in policy.specific.versions
        ):
            raise ConfigError(
                f"{source}: Request to assign label to version {version} of model {model.name}, "
                "which is not currently available for inference: its model_version_policy "
                f"serves only versions {list(policy.specific.versions)}; fix the label, add the "
                "version, or pass --allow_version_labels_for_unavailable_models"
            )


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchingOptions:
    """Resolved batching settings, every default applied and checked like TF Serving does.

    Build it with `BatchingOptions.from_proto`; construction validates.

    Attributes:
        max_batch_size: Largest batch a request is merged into (the queue's input batch limit).
        batch_timeout_micros: Longest wait of the oldest request for a batch to fill.
        max_enqueued_batches: Batches that may wait per model before requests are refused.
        num_batch_threads: Threads running batches, shared by all models.
        allowed_batch_sizes: Sizes batches are padded up to; empty means any size.
        pad_variable_length_inputs: Pad inputs whose non-batch dimensions differ.
        enable_large_batch_splitting: Split a large request across batches.
        max_execution_batch_size: Largest batch run when splitting; 0 (the default) means
            max_batch_size, and without splitting it is always max_batch_size.
        thread_pool_name: Name of the batch thread pool.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = field(default_factory=lambda: schedulable_cpus())
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0
    thread_pool_name: str = DEFAULT_BATCH_THREAD_POOL_NAME

    def __post_init__(self) -> None:
        if not self.enable_large_batch_splitting or self.max_execution_batch_size == 0:
            # TF Serving uses max_execution_batch_size only with splitting, else max_batch_size.
            object.__setattr__(self, "max_execution_batch_size", self.max_batch_size)
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"{name} must be positive; was {value}")
        if self.batch_timeout_micros < 0:
            raise ConfigError(
                f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}"
            )
        sizes = self.allowed_batch_sizes
        if sizes:
            if sizes[0] <= 0 or any(b <= a for a, b in itertools.pairwise(sizes)):
                raise ConfigError(
                    f"allowed_batch_sizes entries must be positive and monotonically increasing; "
                    f"got {list(sizes)}"
                )
            if sizes[-1] != self.max_batch_size:
                raise ConfigError(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                    f"{sizes[-1]}; expected {self.max_batch_size}"
                )
        if not 0 < self.max_execution_batch_size <= self.max_batch_size:
            raise ConfigError(
                "With enable_large_batch_splitting, max_execution_batch_size must be between "
                f"1 and max_batch_size ({self.max_batch_size}); was "
                f"{self.max_execution_batch_size}"
            )

    @classmethod
    def from_proto(cls, params: session_bundle_config_pb2.BatchingParameters) -> BatchingOptions:
        """Resolves a BatchingParameters message, using the scheduler's default for unset fields.

        Raises:
            ConfigError: The values break one of TF Serving's batching rules.
        """
        max_batch_size = (
            params.max_batch_size.value
            if params.HasField("max_batch_size")
            else DEFAULT_MAX_BATCH_SIZE
        )
        splitting = params.HasField("enable_large_batch_splitting") and (
            params.enable_large_batch_splitting.value
        )
        max_execution = (
            params.max_execution_batch_size.value
            if params.HasField("max_execution_batch_size")
            else 0
        )
        return cls(
            max_batch_size=max_batch_size,
            batch_timeout_micros=(
                params.batch_timeout_micros.value
                if params.HasField("batch_timeout_micros")
                else DEFAULT_BATCH_TIMEOUT_MICROS
            ),
            max_enqueued_batches=(
                params.max_enqueued_batches.value
                if params.HasField("max_enqueued_batches")
                else DEFAULT_MAX_ENQUEUED_BATCHES
            ),
            num_batch_threads=(
                params.num_batch_threads.value
                if params.HasField("num_batch_threads")
                else schedulable_cpus()
            ),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            pad_variable_length_inputs=params.pad_variable_length_inputs,
            enable_large_batch_splitting=splitting,
            max_execution_batch_size=max_execution,
            thread_pool_name=(
                params.thread_pool_name.value
                if params.HasField("thread_pool_name")
                else DEFAULT_BATCH_THREAD_POOL_NAME
            ),
        )

    def to_proto(self) -> session_bundle_config_pb2.BatchingParameters:
        """These options as a BatchingParameters message with every field set."""
        params = BatchingParameters()
        params.max_batch_size.value = self.max_batch_size
        params.batch_timeout_micros.value = self.batch_timeout_micros
        params.max_enqueued_batches.value = self.max_enqueued_batches
        params.num_batch_threads.value = self.num_batch_threads
        params.thread_pool_name.value = self.thread_pool_name
        params.enable_large_batch_splitting.value = self.enable_large_batch_splitting
        params.max_execution_batch_size.value = self.max_execution_batch_size
        params.allowed_batch_sizes.extend(self.allowed_batch_sizes)
        params.pad_variable_length_inputs = self.pad_variable_length_inputs
        return params


def batching_parameters(flags: ServerFlags) -> session_bundle_config_pb2.BatchingParameters | None:
    """The batching parameters in effect, with every default filled in; None without batching.

    TF Serving (``server.cc``): without ``--enable_batching`` there is no batching (and
    ``--batching_parameters_file`` is an error); with it and no file only the thread pool name is
    set ("model_server_batch_threads"); with a file the file's values are used. Unset fields take
    TensorFlow's ``SharedBatchScheduler`` defaults: max_batch_size 1000, batch_timeout_micros 0,
    max_enqueued_batches 10, num_batch_threads = schedulable CPUs, thread_pool_name
    "batch_threads", no large batch splitting (max_execution_batch_size = max_batch_size).

    Raises:
        ConfigError: ``--batching_parameters_file`` without ``--enable_batching``; the file is
            unreadable or malformed; or the values break a batching rule (see `BatchingOptions`).
    """
    if not flags.enable_batching:
        if flags.batching_parameters_file:
            raise ConfigError(
                f"--batching_parameters_file={flags.batching_parameters_file} is set without "
                "--enable_batching: add --enable_batching (TF Serving refuses to start otherwise)"
            )
        return None
    if flags.batching_parameters_file:
        params = load_text_proto(
            flags.batching_parameters_file, BatchingParameters, flag="--batching_parameters_file"
        )
        source = f"--batching_parameters_file={flags.batching_parameters_file}"
    else:
        params = BatchingParameters()
        params.thread_pool_name.value = MODEL_SERVER_BATCH_THREAD_POOL_NAME
        source = "--enable_batching"
    try:
        options = BatchingOptions.from_proto(params)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return options.to_proto()


def batching_options(flags: ServerFlags) -> BatchingOptions | None:
    """`batching_parameters` resolved into a `BatchingOptions`; None without batching."""
    params = batching_parameters(flags)
    return None if params is None else BatchingOptions.from_proto(params)


# ---------------------------------------------------------------------------------------------
# Monitoring and TLS
# ---------------------------------------------------------------------------------------------


def monitoring_config(flags: ServerFlags) -> monitoring_config_pb2.MonitoringConfig:
    """``--monitoring_config_file`` (an empty config without it), with the default metrics path.

    TF Serving reads this file only when the REST API is on (``--rest_api_port``); the metrics
    are served there. When Prometheus is enabled without a path, the path becomes
    "/monitoring/prometheus/metrics".

    Raises:
        ConfigError: The file is unreadable or malformed, or the path does not start with "/".
    """
    if not flags.monitoring_config_file:
        return MonitoringConfig()
    config = load_text_proto(
        flags.monitoring_config_file, MonitoringConfig, flag="--monitoring_config_file"
    )
    prometheus = config.prometheus_config
    if prometheus.enable:
        if not prometheus.path:
            prometheus.path = DEFAULT_PROMETHEUS_PATH
        elif not prometheus.path.startswith("/"):
            raise ConfigError(
                f"--monitoring_config_file={flags.monitoring_config_file}: prometheus_config.path "
                f"must start with '/'; got {prometheus.path!r}"
            )
    return config


def ssl_config(flags: ServerFlags) -> ssl_config_pb2.SSLConfig | None:
    """``--ssl_config_file``, or None (plaintext gRPC) without it.

    The config holds PEM text, not file paths: ``server_key``, ``server_cert``, and for mutual
    TLS ``custom_ca`` with ``client_verify: true``.

    Raises:
        ConfigError: The file is unreadable or malformed, the key or certificate is missing or
            not PEM, or ``client_verify`` is set without ``custom_ca``.
    """
    if not flags.ssl_config_file:
        return None
    config = load_text_proto(flags.ssl_config_file, SSLConfig, flag="--ssl_config_file")
    where = f"--ssl_config_file={flags.ssl_config_file}"
    for name in ("server_key", "server_cert"):
        value = getattr(config, name)
        if not value:
            raise ConfigError(f"{where}: {name} is empty; paste the PEM text into the config")
        if "-----BEGIN" not in value:
            raise ConfigError(
                f"{where}: {name} is not PEM (no '-----BEGIN' line); it must hold the PEM text "
                "itself, not a file path"
            )
    if config.custom_ca and "-----BEGIN" not in config.custom_ca:
        raise ConfigError(
            f"{where}: custom_ca is not PEM (no '-----BEGIN' line); it must hold the PEM text "
            "itself, not a file path"
        )
    if config.client_verify and not config.custom_ca:
        raise ConfigError(
            f"{where}: client_verify is true but custom_ca is empty: add the PEM of the CA that "
            "signs client certificates"
        )
    return config


def server_credentials(ssl: ssl_config_pb2.SSLConfig) -> grpc.ServerCredentials:
    """gRPC server credentials from an SSLConfig, as TF Serving builds them.

    ``client_verify`` requests and requires a client certificate signed by ``custom_ca``
    (mutual TLS); otherwise no client certificate is requested.

    Raises:
        ConfigError: The key or certificate is missing, or ``client_verify`` lacks ``custom_ca``.
    """
    if not ssl.server_key or not ssl.server_cert:
        raise ConfigError("SSLConfig needs both server_key and server_cert (PEM text)")
    if ssl.client_verify and not ssl.custom_ca:
        raise ConfigError("SSLConfig.client_verify needs custom_ca (PEM of the client CA)")
    return grpc.ssl_server_credentials(
        [(ssl.server_key.encode(), ssl.server_cert.encode())],
        root_certificates=ssl.custom_ca.encode() if ssl.custom_ca else None,
        require_client_auth=ssl.client_verify,
    )


# ---------------------------------------------------------------------------------------------
# gRPC server options
# ---------------------------------------------------------------------------------------------

_INT_VALUE = re.compile(r"^\s*[+-]?\d+\s*$")


def _channel_value(text: str) -> int | str:
    """TF Serving passes a value as an int when ``safe_strto32`` accepts it, else as a string."""
    if _INT_VALUE.match(text):
        value = int(text)
        if _INT32_MIN <= value <= INT32_MAX:
            return value
    return text


def grpc_channel_arguments(flags: ServerFlags) -> list[tuple[str, int | str]]:
    """Parses ``--grpc_channel_arguments`` ("key1=val1,key2=val2").

    Values that are 32-bit integers become ints, others stay strings (as TF Serving passes
    them). Empty entries (a trailing comma) are skipped.

    Raises:
        ConfigError: An entry has no "=" or an empty key.
    """
    result: list[tuple[str, int | str]] = []
    for entry in flags.grpc_channel_arguments.split(","):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--grpc_channel_arguments: expected key=value, got {entry!r} (e.g. "
                "grpc.max_connection_age_ms=2000)"
            )
        result.append((key, _channel_value(value.strip())))
    return result


def grpc_server_options(flags: ServerFlags) -> list[tuple[str, int | str]]:
    """Options for ``grpc.aio.server(options=...)``, as TF Serving configures its gRPC server.

    TF Serving lifts the message size limits to INT32_MAX both ways (``SetMaxMessageSize``),
    then applies ``--grpc_channel_arguments``, which override. Each key appears once.
    (``--grpc_max_threads`` and SO_REUSEPORT for ``--num_server_processes`` are left to the
    server.)
    """
    options: dict[str, int | str] = {
        "grpc.max_receive_message_length": INT32_MAX,
        "grpc.max_send_message_length": INT32_MAX,
    }
    for key, value in grpc_channel_arguments(flags):
        options[key] = value
    return list(options.items())
