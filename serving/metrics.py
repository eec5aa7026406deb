"""Prometheus metrics of the model server, and the structured-log set-up.

With several server processes (`--num_server_processes`), prometheus_client's multiprocess
mode aggregates every process's samples: the supervisor sets PROMETHEUS_MULTIPROC_DIR before the
workers start, and whichever process answers the scrape collects them all.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class ServerMetrics:
    """The server's metrics, in its own registry (never the global one: tests start many)."""

    registry: Any
    requests: Any
    latency: Any
    batch_size: Any
    padded_batch_size: Any
    batch_queue_delay: Any
    model_loads: Any
    model_load_seconds: Any
    model_available: Any
    prediction_log_records: Any
    prediction_log_bytes: Any
    prediction_log_dropped: Any
    prediction_log_errors: Any

    def observe_request(
        self, model: str, version: str, api: str, protocol: str, code: str, seconds: float
    ) -> None:
        self.requests.labels(model, version, api, protocol, code).inc()
        self.latency.labels(model, version, api, protocol).observe(seconds)

    def observe_batch(self, model: str, version: int, size: int, padded: int, delay: float) -> None:
        self.batch_size.labels(model, str(version)).observe(size)
        self.padded_batch_size.labels(model, str(version)).observe(padded)
        self.batch_queue_delay.labels(model, str(version)).observe(delay)

    def model_event(self, kind: str, model: str, version: int, seconds: float, error: str) -> None:
        if kind == "load":
            self.model_loads.labels(model, str(version), "success").inc()
            self.model_load_seconds.labels(model).observe(seconds)
            self.model_available.labels(model, str(version)).set(1)
        elif kind == "load_failure":
            self.model_loads.labels(model, str(version), "failure").inc()
        elif kind == "unload":
            self.model_available.labels(model, str(version)).set(0)

    def prediction_log_written(self, model: str, size: int) -> None:
        self.prediction_log_records.labels(model).inc()
        self.prediction_log_bytes.labels(model).inc(size)

    def prediction_log_dropped_one(self, model: str) -> None:
        self.prediction_log_dropped.labels(model).inc()

    def prediction_log_error(self, model: str) -> None:
        self.prediction_log_errors.labels(model).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every process's metrics, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def create_metrics() -> ServerMetrics:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    prefix = "perucast_serving"
    return ServerMetrics(
        registry=registry,
        requests=Counter(
            f"{prefix}_requests",
            "Requests by model, version, API, protocol and status code",
            ["model", "version", "api", "protocol", "code"],
            registry=registry,
        ),
        latency=Histogram(
            f"{prefix}_request_latency_seconds",
            "Request latency (server side, decode to encode)",
            ["model", "version", "api", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        batch_size=Histogram(
            f"{prefix}_batch_size",
            "Rows per batch the dynamic batcher ran",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        ),
        padded_batch_size=Histogram(
            f"{prefix}_padded_batch_size",
            "Rows per batch after padding to allowed_batch_sizes",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        ),
        batch_queue_delay=Histogram(
            f"{prefix}_batch_queue_delay_seconds",
            "Time from a batch's first task to its run",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        model_loads=Counter(
            f"{prefix}_model_loads",
            "Model version load attempts that finished, by outcome",
            ["model", "version", "outcome"],
            registry=registry,
        ),
        model_load_seconds=Histogram(
            f"{prefix}_model_load_seconds",
            "Time to load and warm up a model version",
            ["model"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=registry,
        ),
        model_available=Gauge(
            f"{prefix}_model_available",
            "1 while a model version is AVAILABLE",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="max",
        ),
        prediction_log_records=Counter(
            f"{prefix}_prediction_log_records",
            "Sampled PredictionLog records written to the model's log files",
            ["model"],
            registry=registry,
        ),
        prediction_log_bytes=Counter(
            f"{prefix}_prediction_log_bytes",
            "Bytes of PredictionLog records written (TFRecord framing included)",
            ["model"],
            registry=registry,
        ),
        prediction_log_dropped=Counter(
            f"{prefix}_prediction_log_dropped",
            "Sampled PredictionLog records dropped because the log queue was full",
            ["model"],
            registry=registry,
        ),
        prediction_log_errors=Counter(
            f"{prefix}_prediction_log_errors",
            "PredictionLog records that failed to build or write",
            ["model"],
            registry=registry,
        ),
    )


def setup_server_logging(log_format: str = "text", level: str | None = None) -> None:
    """Logs on stderr: text like TF Serving's, or one JSON object per line (`--log_format json`)."""
    level = (level or os.environ.get("PERUCAST_LOG", "INFO")).upper()
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
