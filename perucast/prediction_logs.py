"""Read the model server's prediction logs into a pandas frame, one row per predicted instance.

``perucast-model-server`` writes sampled ``tensorflow.serving.PredictionLog`` records to TFRecord
files ``<filename_prefix>-<UTC start>-<pid>-<sequence>.tfrecord`` (``serving/prediction_log.py``).
`read_predictions` turns the ``predict_log`` records into rows: a Predict request with a batch
of B instances becomes B rows, with the time, the model spec that served it, one column per
request input and one per response output::

    frame = read_predictions("/logs/crop_demand", model_name="crop_demand",
                             start="2026-05-01", end="2026-06-01")
    frame[["timestamp", "region", "crop", "demand_tonnes", "p50"]]

Records of other kinds (Classify, Regress, MultiInference) and requests whose inputs are not all
``[batch]`` vectors of one length have no per-instance row; they are counted in
``frame.attrs["skipped"]``. A file the server is still writing may end in a partial record and
a damaged file may not parse: what can be read is read, and the file is listed in
``frame.attrs["unreadable_files"]`` with a warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from perucast.progress import progress

if TYPE_CHECKING:
    from tensorflow_serving.apis import prediction_log_pb2

log = logging.getLogger(__name__)

METADATA_COLUMNS = ("timestamp", "model_name", "model_version", "signature", "record", "row")
# `<prefix>-<YYYYmmddTHHMMSSZ>-<pid>-<sequence>.tfrecord`, as serving/prediction_log.py names them.
_SUFFIX = re.compile(r"-\d{8}T\d{6}Z-\d+-\d+\.tfrecord")
OTHER_KINDS = ("classify_log", "regress_log", "multi_inference_log")
UNBATCHED = "unbatched_predict"  # a Predict whose inputs are not [batch] vectors of one length
UNPARSEABLE = "unparseable"  # a record with a valid checksum that is not a PredictionLog

TimeLike = str | dt.datetime | pd.Timestamp


def log_files(prefix_or_dir: str | Path) -> list[Path]:
    """The prediction log files of a ``filename_prefix``, or every ``*.tfrecord`` in a directory.

    Args:
        prefix_or_dir: A directory, or the ``filename_prefix`` of a model's ``logging_config``
            (``/logs/crop_demand`` matches ``/logs/crop_demand-20260501T000000Z-7-00001.tfrecord``
            but not the files of a prefix ``/logs/crop_demand_v2``).

    Returns:
        The files sorted by name, which is their order in time: the start time in the name is
        UTC and the sequence number zero-padded.
    """
    path = Path(prefix_or_dir)
    if path.is_dir():
        return sorted(p for p in path.glob("*.tfrecord") if p.is_file())
    parent, stem = path.parent, path.name
    if not parent.is_dir():
        return []
    return sorted(
        p
        for p in parent.glob(f"{_glob_escape(stem)}-*.tfrecord")
        if p.is_file() and _SUFFIX.fullmatch(p.name[len(stem) :])
    )


def _glob_escape(text: str) -> str:
    """``text`` with glob metacharacters made literal."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _source_files(source: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_file():
            return [path]
        return log_files(path)
    return [Path(p) for p in source]


def _epoch_seconds(value: TimeLike | None) -> float | None:
    """Seconds since the epoch; naive times are taken as UTC (the logs' clock)."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.timestamp()


def _column(array: np.ndarray) -> np.ndarray:
    """One decoded input or output tensor as a column: strings, float64, int64, bool."""
    if array.dtype == object or array.dtype.kind == "S":
        flat = [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
            for v in array.reshape(-1)
        ]
        return np.array(flat, dtype=object).reshape(array.shape)
    if array.dtype.kind == "f":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    return array


def _per_row(array: np.ndarray) -> np.ndarray:
    """A [batch, ...] output as a [batch] object column of per-row arrays (a [batch] output
    stays a plain column)."""
    if array.ndim == 1:
        return array
    rows = np.empty(array.shape[0], dtype=object)
    for i in range(array.shape[0]):
        rows[i] = array[i]
    return rows


def _op_message(exc: Exception) -> str:
    """A TensorFlow op error's own words, without the function-node and op-name wrapping."""
    text = str(getattr(exc, "message", exc) or "").strip()
    text = re.sub(r"\{\{.*?\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S)


@dataclass
class _Chunk:
    """The rows of one record."""

    size: int
    meta: dict[str, Any]
    columns: dict[str, np.ndarray]


@dataclass
class _Reader:
    """Accumulates rows and counts over the files of one `read_predictions` call."""

    model_name: str | None
    start: float | None  # seconds since the epoch, as log_metadata.timestamp_secs
    end: float | None
    chunks: list[_Chunk] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)
    records: int = 0
    filtered: int = 0

    def add(self, record: prediction_log_pb2.PredictionLog, index: int) -> None:
        from tensorflow import make_ndarray

        meta = record.log_metadata
        spec = meta.model_spec
        if self.model_name is not None and spec.name != self.model_name:
            self.filtered += 1
            return
        stamp = meta.timestamp_secs
        if (self.start is not None and stamp < self.start) or (
            self.end is not None and stamp >= self.end
        ):
            self.filtered += 1
            return
        kind = record.WhichOneof("log_type")
        if kind != "predict_log":
            self.skipped[kind or "empty"] += 1
            return
        request, response = record.predict_log.request, record.predict_log.response
        inputs = {k: _column(make_ndarray(v)) for k, v in request.inputs.items()}
        sizes = {a.shape[0] if a.ndim == 1 else -1 for a in inputs.values()}
        if len(sizes) != 1 or -1 in sizes:
            self.skipped[UNBATCHED] += 1
            return
        (size,) = sizes
        outputs = {k: _column(make_ndarray(v)) for k, v in response.outputs.items()}
        if any(a.ndim == 0 or a.shape[0] != size for a in outputs.values()):
            self.skipped[UNBATCHED] += 1
            return
        columns = dict(inputs)
        for name, array in outputs.items():
            # An output named like an input keeps both: the output gets a prefix.
            columns[f"output:{name}" if name in columns else name] = _per_row(array)
        self.chunks.append(
            _Chunk(
                size,
                {
                    "timestamp": stamp,
                    "model_name": spec.name,
                    "model_version": int(spec.version.value),
                    "signature": spec.signature_name
                    or request.model_spec.signature_name
                    or "serving_default",
                    "record": index,
                },
                columns,
            )
        )

    def read_file(self, path: Path) -> None:
        import tensorflow as tf
        from google.protobuf.message import DecodeError
        from tensorflow_serving.apis import prediction_log_pb2

        first = self.records
        try:
            for raw in tf.data.TFRecordDataset(str(path)):
                index = self.records
                self.records += 1
                try:
                    record = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
                except DecodeError:
                    self.skipped[UNPARSEABLE] += 1
                    continue
                self.add(record, index)
        except tf.errors.OpError as exc:
            # A partial last record (the server is still writing) or a damaged file: the
            # records before the damage were read above.
            self.unreadable.append(str(path))
            log.warning(
                "prediction log %s: unreadable after record %d of the file (%s: %s)",
                path,
                self.records - first,
                type(exc).__name__,
                _op_message(exc),
            )

    def frame(self) -> pd.DataFrame:
        n = sum(c.size for c in self.chunks)
        sizes = [c.size for c in self.chunks]
        seconds = np.array([c.meta["timestamp"] for c in self.chunks], dtype=np.int64)
        data: dict[str, Any] = {
            "timestamp": pd.to_datetime(np.repeat(seconds, sizes), unit="s", utc=True)
        }
        data["model_name"] = np.repeat(
            np.array([c.meta["model_name"] for c in self.chunks], dtype=object), sizes
        )
        data["model_version"] = np.repeat(
            np.array([c.meta["model_version"] for c in self.chunks], dtype=np.int64), sizes
        )
        data["signature"] = np.repeat(
            np.array([c.meta["signature"] for c in self.chunks], dtype=object), sizes
        )
        data["record"] = np.repeat(
            np.array([c.meta["record"] for c in self.chunks], dtype=np.int64), sizes
        )
        data["row"] = (
            np.concatenate([np.arange(s, dtype=np.int64) for s in sizes])
            if n
            else np.zeros(0, np.int64)
        )
        names = list(dict.fromkeys(k for c in self.chunks for k in c.columns))
        for name in names:
            data[name] = _concat([c.columns.get(name) for c in self.chunks], sizes)
        frame = pd.DataFrame(data)
        frame.attrs["skipped"] = dict(self.skipped)
        frame.attrs["unreadable_files"] = list(self.unreadable)
        frame.attrs["records"] = self.records
        frame.attrs["filtered"] = self.filtered
        return frame


def _concat(parts: list[np.ndarray | None], sizes: list[int]) -> Any:
    """One column from per-record parts; records without the column get missing values
    (NaN for floats, <NA> for integers and booleans, None otherwise)."""
    present = [p for p in parts if p is not None]
    if len(present) == len(parts):
        kinds = {p.dtype.kind for p in present}
        if len(kinds) == 1 or kinds <= {"f", "i"}:
            return np.concatenate(present)
        return np.concatenate([p.astype(object) for p in present])
    kinds = {p.dtype.kind for p in present}
    if kinds == {"f"}:
        return np.concatenate(
            [p if p is not None else np.full(s, np.nan) for p, s in zip(parts, sizes, strict=True)]
        )
    if kinds in ({"i"}, {"b"}):
        dtype = "Int64" if kinds == {"i"} else "boolean"
        values = np.concatenate(
            [
                p.astype(object) if p is not None else np.full(s, None, dtype=object)
                for p, s in zip(parts, sizes, strict=True)
            ]
        )
        return pd.array(values, dtype=dtype)
    return np.concatenate(
        [
            p.astype(object) if p is not None else np.full(s, None, dtype=object)
            for p, s in zip(parts, sizes, strict=True)
        ]
    )


def read_predictions(
    source: str | Path | Iterable[str | Path],
    *,
    model_name: str | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Predict requests and responses from prediction logs, one row per instance.

    Args:
        source: A ``filename_prefix``, a directory (every ``*.tfrecord`` in it), one file, or a
            list of files (read in the given order).
        model_name: Keep only records of this model (``log_metadata.model_spec.name``).
        start: Keep records logged at or after this time (naive times are UTC).
        end: Keep records logged before this time.
        show_progress: A bar (terminal) or periodic log lines per file read.

    Returns:
        Columns ``timestamp`` (UTC, second resolution: ``log_metadata.timestamp_secs``),
        ``model_name``, ``model_version``, ``signature``, ``record`` (index of the record in
        the files' order, counting every record read; rows of one request share it), ``row``
        (index in the request's batch), then one column per request input (strings decoded
        from UTF-8, floats as float64, integers as int64) and one per response output (per
        row a float64 array of the output's trailing shape, e.g. length H for ``[batch, H]``;
        a ``[batch]`` output is a plain column; an output named like an input is called
        ``output:<name>``). Columns a record lacks are missing in its rows.

        ``attrs``: ``skipped`` (kind -> records read but not turned into rows:
        ``classify_log``, ``regress_log``, ``multi_inference_log``, ``unbatched_predict``,
        ``unparseable``), ``unreadable_files`` (paths whose end could not be read: a partial
        last record or damage), ``records`` (read) and ``filtered`` (left out by the model or
        time filter).
    """
    files = _source_files(source)
    reader = _Reader(model_name, _epoch_seconds(start), _epoch_seconds(end))
    with progress("prediction log files", len(files), enabled=show_progress) as bar:
        for path in files:
            reader.read_file(path)
            bar.advance()
    frame = reader.frame()
    log.info(
        "prediction logs: %d files, %d records, %d rows; skipped %s; %d unreadable files",
        len(files),
        reader.records,
        len(frame),
        dict(reader.skipped) or "none",
        len(reader.unreadable),
    )
    return frame
