"""Prediction logging from each model's ``logging_config``, written to TFRecord files.

A ``ModelConfig`` in the ``ModelServerConfig`` may carry TF Serving's ``LoggingConfig``::

    config {
      name: "crop_demand" base_path: "/models/crop_demand" model_platform: "tensorflow"
      logging_config {
        log_collector_config { type: "file" filename_prefix: "/logs/crop_demand" }
        sampling_config { sampling_rate: 0.05 }
      }
    }

Each successful Predict, Classify, Regress and MultiInference request to that model (gRPC or
REST) is then sampled with probability ``sampling_rate`` (TF Serving's ``RequestLogger``:
``random < rate``), and a sampled one becomes a ``tensorflow.serving.PredictionLog``: the request
and the response, and ``log_metadata`` with the model spec that served it (name, resolved
version, signature), the model's ``sampling_config``, the SavedModel tags and the time. The
records go to TFRecord files named::

    <filename_prefix>-<UTC start time YYYYmmddTHHMMSSZ>-<pid>-<sequence, 5 digits>.tfrecord

A file is closed and the next one started once it holds `max_file_bytes` (64 MiB by default,
``PERUCAST_PREDICTION_LOG_MAX_FILE_BYTES``). The pid keeps the files of several server
processes (``--num_server_processes``) apart. The directory of the prefix is created if needed.
Read them with ``tf.data.TFRecordDataset`` and ``PredictionLog.FromString``; they are also the
format of ``assets.extra/tf_serving_warmup_requests``.

The request path does as little as it can: the sampling draw, and a ``put_nowait`` of the
request and response objects on a bounded queue (``PERUCAST_PREDICTION_LOG_QUEUE_SIZE``, 1024 by
default). The PredictionLog is built, serialised and written by one writer thread per logging
config. When the queue is full the record is dropped and counted in
``perucast_serving_prediction_log_dropped_total{model}``: a slow disk never slows requests.
Written records and bytes are counted in ``perucast_serving_prediction_log_records_total`` and
``perucast_serving_prediction_log_bytes_total``, and write failures in
``perucast_serving_prediction_log_errors_total``. Files are flushed whenever the queue runs
empty, and flushed and closed when the server stops (after requests drain) or when a config
reload removes the model or changes its ``logging_config``.

Differences from TensorFlow Serving (``core/server_request_logger.cc``, ``core/log_collector.cc``):

* TF Serving looks ``log_collector_config.type`` up in a registry of ``LogCollector`` factories,
  and the open-source ``tensorflow_model_server`` registers none and gives ``ServerCore`` no
  request-logger creator, so a config with a ``logging_config`` fails to load there with
  ``No request-logger-creator provided.``. Here the collector is built in: type ``""`` or
  ``"file"`` writes the TFRecord files above, and any other type is a config error.
* ``sampling_rate`` outside [0, 1], an empty ``filename_prefix`` and ``custom_logging_config``
  are config errors naming the model. ``sampling_config.attributes`` and
  ``per_task_sampling_configs`` are accepted and ignored (one rate for every request).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_COLLECTOR_TYPES = ("", "file")
DEFAULT_MAX_FILE_BYTES = 64 << 20
DEFAULT_QUEUE_SIZE = 1024
MAX_FILE_BYTES_ENV = "PERUCAST_PREDICTION_LOG_MAX_FILE_BYTES"
QUEUE_SIZE_ENV = "PERUCAST_PREDICTION_LOG_QUEUE_SIZE"
CLOSE_TIMEOUT_SECONDS = 10.0
TFRECORD_OVERHEAD = 16  # length (8) + length crc (4) + data crc (4)

# The PredictionLog field of each API's log.
LOG_FIELDS = {
    "predict": "predict_log",
    "classify": "classify_log",
    "regress": "regress_log",
    "multi_inference": "multi_inference_log",
}

_STOP = object()


def logging_config_error(model) -> str | None:
    """What is wrong with a `ModelConfig`'s ``logging_config`` (None: fine or absent)."""
    if not model.HasField("logging_config"):
        return None
    config = model.logging_config
    where = f"model {model.name}: logging_config"
    if config.HasField("custom_logging_config"):
        return f"{where}.custom_logging_config is not supported; use log_collector_config"
    kind = config.log_collector_config.type
    if kind not in FILE_COLLECTOR_TYPES:
        return (
            f"{where}.log_collector_config.type {kind!r} is not supported: "
            'perucast-model-server writes TFRecord files (type "" or "file")'
        )
    if not config.log_collector_config.filename_prefix:
        return (
            f"{where}.log_collector_config.filename_prefix is empty: set the path prefix of the "
            "TFRecord files"
        )
    rate = config.sampling_config.sampling_rate
    if not (0.0 <= rate <= 1.0) or math.isnan(rate):
        return f"{where}.sampling_config.sampling_rate must be in [0, 1]; was {rate}"
    return None


def validate(config, source: str = "ModelServerConfig") -> None:
    """Checks every model's ``logging_config``.

    Raises:
        serving.config.ConfigError: naming the source, the model and the field.
    """
    from serving.config import ConfigError

    for model in config.model_config_list.config:
        error = logging_config_error(model)
        if error:
            raise ConfigError(f"{source}: {error}")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text) if text else default
    except ValueError:
        log.warning("ignoring %s=%r: not an integer", name, text)
        return default


class PredictionLogSink:
    """One logging config's bounded queue, writer thread and rotating TFRecord files.

    Args:
        model: The model name (metric label).
        logging_config: The model's ``LoggingConfig``.
        saved_model_tags: Written into each record's ``log_metadata``.
        max_file_bytes: A file is closed once it holds this many bytes.
        queue_size: Records waiting for the writer; more are dropped.
        on_dropped, on_written, on_error: Metric hooks: (model), (model, bytes), (model).
    """

    def __init__(
        self,
        model: str,
        logging_config,
        saved_model_tags: Iterable[str] = ("serve",),
        *,
        max_file_bytes: int | None = None,
        queue_size: int | None = None,
        on_dropped: Callable[[str], None] | None = None,
        on_written: Callable[[str, int], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ):
        self.model = model
        self.config = type(logging_config)()
        self.config.CopyFrom(logging_config)  # the caller's config may change later
        self.sampling_rate = logging_config.sampling_config.sampling_rate
        self.prefix = logging_config.log_collector_config.filename_prefix
        self.saved_model_tags = sorted(saved_model_tags)
        self.max_file_bytes = max(
            1, max_file_bytes or _env_int(MAX_FILE_BYTES_ENV, 0) or DEFAULT_MAX_FILE_BYTES
        )
        size = queue_size or _env_int(QUEUE_SIZE_ENV, 0) or DEFAULT_QUEUE_SIZE
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._on_dropped = on_dropped
        self._on_written = on_written
        self._on_error = on_error
        self._closed = False
        self._started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._sequence = 0
        self._writer = None
        self._file_bytes = 0
        self.files: list[Path] = []
        self.dropped = 0
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._run, name=f"prediction-log-{model}", daemon=True
        )
        self._thread.start()

    # --- request path --------------------------------------------------------------------

    def sampled(self) -> bool:
        """TF Serving's uniform sampler: True with probability `sampling_rate`."""
        return self.sampling_rate > 0 and random.random() < self.sampling_rate

    def submit(self, build: Callable[[], Any]) -> bool:
        """Queues `build` (called on the writer thread, returns a PredictionLog); never blocks.

        Returns:
            False when the record was dropped (queue full or sink closed).
        """
        if self._closed:
            return False
        try:
            self._queue.put_nowait(build)
        except queue.Full:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped(self.model)
            return False
        return True

    # --- writer thread -------------------------------------------------------------------

    def _next_path(self) -> Path:
        self._sequence += 1
        return Path(f"{self.prefix}-{self._started}-{os.getpid()}-{self._sequence:05d}.tfrecord")

    def _write_record(self, data: bytes) -> None:
        """Appends one serialised record, starting a new file when needed."""
        if self._writer is None:
            import tensorflow as tf

            path = self._next_path()
            self._writer = tf.io.TFRecordWriter(str(path))
            self._file_bytes = 0
            self.files.append(path)
        self._writer.write(data)
        self._file_bytes += len(data) + TFRECORD_OVERHEAD
        if self._file_bytes >= self.max_file_bytes:
            self._close_file()

    def _flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _close_file(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            try:
                data = item().SerializeToString()
                self._write_record(data)
            except Exception:
                log.exception("prediction log of model %s: writing a record failed", self.model)
                if self._on_error is not None:
                    self._on_error(self.model)
            else:
                if self._on_written is not None:
                    self._on_written(self.model, len(data) + TFRECORD_OVERHEAD)
            if self._queue.empty():
                with contextlib.suppress(Exception):
                    self._flush()
        try:
            self._close_file()
        except Exception:
            log.exception("prediction log of model %s: closing the file failed", self.model)

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Writes what is queued, closes the file and stops the thread (up to `timeout` s)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("prediction log of model %s: writer stuck; records lost", self.model)
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.error("prediction log of model %s: writer did not finish in time", self.model)


class PredictionLogger:
    """The server's prediction loggers, one `PredictionLogSink` per model with a logging config.

    `update` follows the config (the manager calls it on every config change); `log` is called
    by the serving core after each successful request.
    """

    def __init__(self, metrics=None, saved_model_tags: Iterable[str] = ("serve",), **sink_options):
        self.metrics = metrics
        self.saved_model_tags = tuple(saved_model_tags)
        self.sink_options = sink_options
        self._sinks: dict[str, PredictionLogSink] = {}  # snapshot: replaced, never mutated
        self._lock = threading.Lock()

    def _new_sink(self, name: str, logging_config) -> PredictionLogSink:
        metrics = self.metrics
        return PredictionLogSink(
            name,
            logging_config,
            self.saved_model_tags,
            on_dropped=metrics.prediction_log_dropped_one if metrics else None,
            on_written=metrics.prediction_log_written if metrics else None,
            on_error=metrics.prediction_log_error if metrics else None,
            **self.sink_options,
        )

    def update(self, models: Mapping[str, Any]) -> None:
        """Opens, keeps or closes sinks to match `models` (name -> ModelConfig).

        A model whose ``logging_config`` is unchanged keeps its sink (and file); a removed
        model's sink, or one whose config changed, is flushed and closed.

        Raises:
            ServingError: INVALID_ARGUMENT for a bad logging_config, or a prefix directory
                that cannot be created.
        """
        from serving.errors import invalid_argument

        with self._lock:
            old = self._sinks
            new: dict[str, PredictionLogSink] = {}
            try:
                for name, model in models.items():
                    error = logging_config_error(model)
                    if error:
                        raise invalid_argument(error)
                    if not model.HasField("logging_config"):
                        continue
                    sink = old.get(name)
                    if sink is None or sink.config != model.logging_config:
                        try:
                            sink = self._new_sink(name, model.logging_config)
                        except OSError as exc:
                            raise invalid_argument(
                                f"model {name}: logging_config: cannot create the log "
                                f"directory: {exc}"
                            ) from None
                    if old.get(name) is not sink:
                        log.info(
                            "prediction log of model %s: writing %s-*.tfrecord (sampling rate %g)",
                            name,
                            sink.prefix,
                            model.logging_config.sampling_config.sampling_rate,
                        )
                    new[name] = sink
            except Exception:
                for name, sink in new.items():
                    if old.get(name) is not sink:
                        sink.close()
                raise
            self._sinks = new
        for name, sink in old.items():
            if new.get(name) is not sink:
                log.info("prediction log of model %s: closing %s", name, sink.prefix)
                sink.close()

    def log(self, api: str, servable, request, response) -> None:
        """Samples and queues one successful request (the request path: never blocks).

        `request` and `response` are protos the caller no longer changes; they are copied into
        the PredictionLog on the writer thread.
        """
        sink = self._sinks.get(servable.name)
        if sink is None or not sink.sampled():
            return
        sink.submit(_proto_builder(sink, api, servable.name, servable.version, request, response))

    def log_rest_predict(self, servable, model_spec, signature, inputs, outputs) -> None:
        """As `log` for a REST predict: the PredictRequest and PredictResponse that TF Serving's
        REST handler would have built from the JSON are made from the decoded arrays, on the
        writer thread. The arrays must not change afterwards (they do not: they are the
        request's own)."""
        sink = self._sinks.get(servable.name)
        if sink is None or not sink.sampled():
            return
        name, version = servable.name, servable.version
        timestamp = int(time.time())  # the request's time, not the writer's

        def make():
            from tensorflow_serving.apis import predict_pb2

            from serving import codec

            request = predict_pb2.PredictRequest()
            request.model_spec.CopyFrom(model_spec)
            request.model_spec.signature_name = signature.name
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(codec.ndarray_to_tensor_proto(value))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = name
            response.model_spec.version.value = version
            response.model_spec.signature_name = signature.name
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(codec.ndarray_to_tensor_proto(value))
            return _proto_builder(sink, "predict", name, version, request, response, timestamp)()

        sink.submit(make)

    def close(self) -> None:
        """Flushes and closes every sink (server stop)."""
        with self._lock:
            sinks, self._sinks = self._sinks, {}
        for sink in sinks.values():
            sink.close()


def _proto_builder(
    sink: PredictionLogSink,
    api: str,
    name: str,
    version: int,
    request,
    response,
    timestamp: int | None = None,
):
    timestamp = int(time.time()) if timestamp is None else timestamp

    def build():
        from tensorflow_serving.apis import prediction_log_pb2

        record = prediction_log_pb2.PredictionLog()
        metadata = record.log_metadata
        metadata.model_spec.name = name
        metadata.model_spec.version.value = version
        spec = getattr(response, "model_spec", None)
        if spec is not None and spec.signature_name:
            metadata.model_spec.signature_name = spec.signature_name
        metadata.sampling_config.CopyFrom(sink.config.sampling_config)
        metadata.saved_model_tags.extend(sink.saved_model_tags)
        metadata.timestamp_secs = timestamp
        entry = getattr(record, LOG_FIELDS[api])
        entry.request.CopyFrom(request)
        entry.response.CopyFrom(response)
        return record

    return build
