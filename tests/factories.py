"""Small, valid, hand-built tables for any ``TableSchema``, so step tests need no generator.

``valid_frame`` respects the schema: unique keys (the Cartesian product of a few values per key
column), the time column on the table's cadence, numbers inside [min, max], labels from the
vocabulary. Tests then break one thing and check that validation names it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from models import get_use_case
from models.base import Column, TableSchema

START = dt.date(2020, 1, 1)


def _grid(column: Column, frequency: str | None, periods: int) -> list[dt.date]:
    """``periods`` dates on the cadence, from 2020 (or the column's minimum, if later)."""
    start = max(START, dt.date.fromisoformat(str(column.min))) if column.min else START
    freq = {None: "D", "inferred": "8D"}.get(frequency, frequency)
    first = pd.Timestamp(start)
    if freq not in ("D", "8D"):
        first = first + pd.tseries.frequencies.to_offset(freq) * 0  # roll onto the cadence
    return [d.date() for d in pd.date_range(first, periods=periods, freq=freq)]


def _distinct(column: Column, n: int) -> list[Any]:
    """``n`` distinct valid values of a key column."""
    if column.allowed is not None:
        return list(column.allowed[:n])
    if column.dtype in ("int32", "int64"):
        low = int(column.min or 0)
        return list(range(low, low + n))
    if column.dtype == "float64":
        low = float(column.min or 0.0)
        return [low + i for i in range(n)]
    if column.dtype == "date":
        return _grid(column, "D", n)
    return [f"{column.name}-{i}" for i in range(n)]


def _values(column: Column, n: int, rng: np.random.Generator) -> list[Any] | np.ndarray:
    """``n`` random valid values of a non-key column."""
    if column.allowed is not None:
        return list(rng.choice(column.allowed, size=n))
    if column.is_numeric:
        low = float(column.min) if column.min is not None else -100.0
        high = float(column.max) if column.max is not None else low + 200.0
        low, high = low + 0.1 * (high - low), high - 0.1 * (high - low)  # away from the bounds
        values = rng.uniform(low, high, size=n)
        return np.round(values).astype(column.dtype) if column.dtype != "float64" else values
    if column.dtype == "date":
        start = max(START, dt.date.fromisoformat(str(column.min))) if column.min else START
        return [start + dt.timedelta(days=int(d)) for d in rng.integers(0, 365, size=n)]
    if column.dtype == "bool":
        return list(rng.random(n) < 0.5)
    return [f"{column.name}-{i}" for i in range(n)]


def valid_frame(
    schema: TableSchema, *, series: int = 2, periods: int = 6, seed: int = 0
) -> pd.DataFrame:
    """A small valid table of ``schema``.

    Args:
        schema: The table schema.
        series: Distinct values per key column other than time.
        periods: Distinct times of the time column (when it is a key).
        seed: Seed of the non-key values.

    Returns:
        One row per combination of key values, sorted by the keys, columns in schema order. Dates
        are ``datetime.date`` objects.
    """
    rng = np.random.default_rng(seed)
    key_values = []
    for key in schema.keys:
        column = schema.column(key)
        if key == schema.time_column:
            key_values.append(_grid(column, schema.frequency, periods))
        else:
            key_values.append(_distinct(column, series))
    combos = list(itertools.product(*key_values)) if schema.keys else [()] * periods
    n = len(combos)
    data: dict[str, Any] = {}
    for column in schema.columns:
        if column.name in schema.keys:
            data[column.name] = [c[schema.keys.index(column.name)] for c in combos]
        else:
            data[column.name] = _values(column, n, rng)
    return pd.DataFrame(data)[schema.column_names]


def arrow_table(frame: pd.DataFrame, schema: TableSchema | None = None) -> pa.Table:
    """``frame`` as Arrow, schema types for the schema's columns (nullable; NaN stays NaN)."""
    arrays, names = [], []
    for name in frame.columns:
        values = frame[name].tolist()
        if schema is not None and name in schema.column_names:
            arrays.append(pa.array(values, type=schema.column(name).arrow_type))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def write_table(
    frame: pd.DataFrame,
    directory: Path,
    name: str,
    fmt: str = "parquet",
    schema: TableSchema | None = None,
) -> Path:
    """Write ``frame`` as ``<directory>/<name>.<fmt>`` (Parquet or CSV written by pyarrow)."""
    directory.mkdir(parents=True, exist_ok=True)
    table = arrow_table(frame, schema)
    path = directory / f"{name}.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    return path


def write_dataset(
    use_case: str,
    directory: Path,
    fmt: str = "parquet",
    *,
    frames: dict[str, pd.DataFrame] | None = None,
    oracle: bool = False,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, pd.DataFrame]:
    """Write a valid raw data set (every raw table, optionally the oracle) into ``directory``.

    Args:
        use_case: Use case name.
        directory: Target directory (created).
        fmt: ``parquet`` or ``csv``.
        frames: Tables to write instead of the generated ones (by name).
        oracle: Also write the oracle table.
        seed: Seed of the first table; each further table uses the next one.
        **kwargs: Passed to ``valid_frame``.

    Returns:
        The frames written, by table name.
    """
    uc = get_use_case(use_case)
    schemas = [*uc.tables, *([uc.oracle] if oracle else [])]
    written = {}
    for i, schema in enumerate(schemas):
        frame = (frames or {}).get(schema.name)
        if frame is None:
            frame = valid_frame(schema, seed=seed + i, **kwargs)
        write_table(frame, directory, schema.name, fmt, schema)
        written[schema.name] = frame
    return written


def tool_env() -> dict[str, str]:
    """Environment for real git and dvc subprocesses: the venv's tools, no analytics, an author."""
    bin_dir = Path(sys.executable).parent
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "PERUCAST_LOG": "WARNING",
        "GIT_AUTHOR_NAME": "perucast-test",
        "GIT_AUTHOR_EMAIL": "test@perucast.invalid",
        "GIT_COMMITTER_NAME": "perucast-test",
        "GIT_COMMITTER_EMAIL": "test@perucast.invalid",
    }


def run_tool(cwd: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` and assert it succeeded, showing its output when it did not."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def predict_log_record(model: str, version: int, secs: int, inputs: dict, outputs: dict):
    """A ``PredictionLog`` of one Predict, as the model server writes it: the model spec and
    time in ``log_metadata`` and the request, and each input and output array as a tensor."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    record = prediction_log_pb2.PredictionLog()
    meta = record.log_metadata
    meta.model_spec.name = model
    meta.model_spec.version.value = version
    meta.model_spec.signature_name = "serving_default"
    meta.timestamp_secs = secs
    record.predict_log.request.model_spec.CopyFrom(meta.model_spec)
    for key, value in inputs.items():
        record.predict_log.request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    for key, value in outputs.items():
        record.predict_log.response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return record
