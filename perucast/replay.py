"""Replaying forecast requests against a model server, for the monitoring demo and tests.

* :func:`enable_prediction_logging` adds TF Serving's ``logging_config`` to a model in the
  ``ModelServerConfig`` file a server polls (written atomically), and
  :func:`wait_for_prediction_logging` waits until the server's log says it applied it.
* :func:`replay_weeks` sends the feature rows of a run of origins (every series, one Predict per
  origin and batch) through the ``stable`` label, optionally with an El Niño shift applied to
  the later origins (:func:`el_nino_shift`: the Niño 1+2 anomaly inputs warmed by ``delta_c``,
  as a coastal El Niño does: +2 to +5 °C off Peru, ``../shared/DOMAIN.md``).
* :func:`actuals_as_of` writes the use case's target table cut at a date: the actual values
  as they stood then (realized accuracy has pending periods beyond it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

log = logging.getLogger("perucast.replay")

ENSO_PREFIX = "nino12"


def enable_prediction_logging(
    serving_config: Path, model_name: str, prefix: Path, sampling_rate: float = 1.0
) -> None:
    """Sets ``model_name``'s ``logging_config`` (file collector, ``prefix``, ``sampling_rate``).

    Raises:
        KeyError: The config has no model of that name.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from perucast.io import write_text_atomic

    config = text_format.Parse(
        Path(serving_config).read_text(), model_server_config_pb2.ModelServerConfig()
    )
    models = [m for m in config.model_config_list.config if m.name == model_name]
    if not models:
        raise KeyError(f"{serving_config} serves no model {model_name!r}")
    logging_config = models[0].logging_config
    logging_config.log_collector_config.type = "file"
    logging_config.log_collector_config.filename_prefix = str(prefix)
    logging_config.sampling_config.sampling_rate = sampling_rate
    write_text_atomic(serving_config, text_format.MessageToString(config))


def wait_for_prediction_logging(
    server_log: Path, model_name: str, prefix: Path, timeout_s: float = 60.0
) -> float:
    """Waits until the server's log reports writing ``prefix``; returns the seconds waited.

    Raises:
        TimeoutError: The server did not apply the config in time.
    """
    needle = f"prediction log of model {model_name}: writing {prefix}-"
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if server_log.exists() and needle in server_log.read_text(errors="replace"):
            return time.perf_counter() - started
        time.sleep(0.25)
    raise TimeoutError(f"the server did not start logging {model_name} to {prefix} in {timeout_s}s")


def el_nino_shift(frame: pd.DataFrame, delta_c: float = 3.0) -> pd.DataFrame:
    """The rows with every Niño 1+2 anomaly input (current and lagged) warmer by ``delta_c``."""
    columns = [c for c in frame.columns if c.startswith(ENSO_PREFIX)]
    if not columns:
        raise ValueError(f"no {ENSO_PREFIX}* inputs to shift in {list(frame.columns)[:8]}…")
    return frame.assign(**{c: frame[c] + delta_c for c in columns})


@dataclass
class Replay:
    """What :func:`replay_weeks` sent."""

    origins: list[pd.Timestamp]
    shifted: list[pd.Timestamp]
    requests: int
    instances: int
    seconds: float
    version: int


def replay_weeks(
    target: str,
    use_case: str,
    features: pd.DataFrame,
    origins: Sequence[pd.Timestamp],
    *,
    shift_from: pd.Timestamp | None = None,
    delta_c: float = 3.0,
    batch: int = 64,
    label: str = "stable",
) -> Replay:
    """Sends every series' feature row at each origin, in time order, as Predict requests.

    Args:
        target: The server's gRPC ``host:port``.
        use_case: The served use case (the model's name).
        features: Feature rows (``perucast.datasets.read_features``) covering ``origins``.
        origins: The origins to replay, in order.
        shift_from: Origins at or after this one get :func:`el_nino_shift`.
        delta_c: The shift in °C.
        batch: Instances per request.
        label: The version label requests go to.
    """
    from models import get_use_case
    from serving.client import ForecastClient

    time_column = get_use_case(use_case).feature_spec(1).time_column
    times = pd.to_datetime(features[time_column])
    started = time.perf_counter()
    requests = instances = 0
    shifted: list[pd.Timestamp] = []
    version = 0
    with ForecastClient(target, use_case=use_case, label=label, timeout_s=60) as client:
        for origin in origins:
            rows = features[times == pd.Timestamp(origin)]
            if shift_from is not None and pd.Timestamp(origin) >= pd.Timestamp(shift_from):
                rows = el_nino_shift(rows, delta_c)
                shifted.append(pd.Timestamp(origin))
            for start in range(0, len(rows), batch):
                forecast = client.predict(rows.iloc[start : start + batch], ignore_extra=True)
                version = forecast.model_spec.version
                requests += 1
                instances += min(batch, len(rows) - start)
    seconds = time.perf_counter() - started
    log.info("replayed %d origins: %d requests, %d instances in %.1fs", len(origins), requests,
             instances, seconds)  # fmt: skip
    return Replay(list(map(pd.Timestamp, origins)), shifted, requests, instances, seconds, version)


def actuals_as_of(raw_dir: Path, use_case: str, as_of: pd.Timestamp, out_dir: Path) -> Path:
    """The use case's target table as known at ``as_of`` (later periods cut), in ``out_dir``."""
    from models import get_use_case
    from perucast.datasets import read_table

    target = get_use_case(use_case).target
    table = read_table(raw_dir, target.table)
    kept = table[pd.to_datetime(table[target.time_column]) <= pd.Timestamp(as_of)]
    out_dir.mkdir(parents=True, exist_ok=True)
    kept.to_parquet(out_dir / f"{target.table}.parquet", index=False)
    return out_dir
