"""Check one raw table file against its ``TableSchema`` in a single streamed pass.

The engine of the validate step (``components/validate.py``): ``check_table`` reads a Parquet or CSV
file batch by batch (``perucast.tableread``), checks types, ranges, vocabularies, missing values,
cadence, duplicate keys and gaps per series, gathers statistics (``perucast.tablestats``) and can
write the table, cast to the schema, while it stays clean. Memory stays bounded: per column a few
counters, a row sample of at most ``sample_rows`` rows, 8 bytes per row for the key hashes and one
entry per series.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.base import Column, FileFormat, TableSchema
from perucast import tablestats
from perucast.io import TableWriter
from perucast.progress import progress
from perucast.tableread import (
    CsvConversionError,
    RawTable,
    TableReadError,
    cast_locating,
    iter_batches,
    open_raw_table,
)
from perucast.validation_report import Issue, TableSummary, plural

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckOptions:
    """How a table is checked.

    Attributes:
        example_rows: Example rows kept per problem.
        sample_rows: Rows sampled for quantiles and histograms (exact below this).
        batch_rows: Rows per streamed batch (Parquet) and per written row group.
    """

    example_rows: int = 5
    sample_rows: int = 100_000
    batch_rows: int = 1_000_000


@dataclass
class _Finding:
    """Running tally of one (check, column) problem while batches stream by."""

    check: str
    column: str | None
    count: int = 0
    lower_bound: bool = False
    examples: list[dict[str, Any]] = field(default_factory=list)
    values: Counter[Any] = field(default_factory=Counter)


def _plain(value: Any) -> Any:
    """A JSON- and people-friendly version of a cell value."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return value


def _compatible(found: pa.DataType, target: pa.DataType) -> bool:
    """Whether a Parquet column of type ``found`` may hold a column of type ``target``.

    Widening is fine (int32 -> float64, float32 -> float64, timestamp -> date, dictionary-encoded
    strings); a value that does not fit (overflow, a time of day) is caught per value by the cast.
    """
    if pa.types.is_dictionary(found):
        found = found.value_type
    if found.equals(target):
        return True
    if pa.types.is_floating(target):
        return pa.types.is_integer(found) or pa.types.is_floating(found)
    if pa.types.is_integer(target):
        return pa.types.is_integer(found)
    if pa.types.is_date(target):
        return pa.types.is_date(found) or pa.types.is_timestamp(found)
    if pa.types.is_string(target):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    return False


def _show(value: Any) -> str:
    """A number or date for a message: 81,351,979 or 0.0123 or 2020-01-06."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) >= 1 else f"{value:.4g}"
    return str(_plain(value))


def _bound(column: Column, value: float | str | None) -> Any:
    if value is None:
        return None
    return dt.date.fromisoformat(str(value)) if column.dtype == "date" else value


def _key_hashes(batch: pa.RecordBatch, keys: tuple[str, ...]) -> np.ndarray:
    """One 64-bit hash per row of the key columns (dates as day numbers: fast and exact)."""
    import pandas as pd  # here, not at the top: keeps `perucast --help` quick

    frame = pd.DataFrame(
        {
            key: (
                batch.column(key).cast(pa.int32())
                if pa.types.is_date(batch.column(key).type)
                else batch.column(key)
            ).to_pandas()
            for key in keys
        }
    )
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _days(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Dates as day numbers since 1970-01-01."""
    return np.asarray(values.cast(pa.int32()).to_numpy(), dtype=np.int64)


def _day(n: int | np.integer) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(n))).isoformat()


def _cadence(freq: str | None, modal_days: int | None = None) -> str | None:
    if freq is None:
        return None
    if freq == "inferred":
        return f"every {modal_days} days (inferred)" if modal_days else "inferred"
    return {
        "W-MON": "weekly, weeks start on Mondays",
        "MS": "monthly, on the first day of the month",
        "D": "daily",
    }.get(freq, freq)


class TableCheck:
    """Checks and statistics of one table, fed batch by batch, in bounded memory.

    Memory: per column a few counters, a row sample of at most ``sample_rows`` rows, 8 bytes per
    row for the key hashes (duplicate check) and one entry per series (gap check).
    """

    def __init__(
        self,
        schema: TableSchema,
        raw: RawTable,
        options: CheckOptions,
        reference: dict[str, Any] | None,
    ) -> None:
        self.schema, self.raw, self.options = schema, raw, options
        self.reference = reference or {}
        self.limit = options.example_rows
        self.issues: list[Issue] = []
        present = set(raw.columns)
        for col in schema.columns:
            if col.name not in present:
                found = ", ".join(raw.columns) or "no columns"
                self._issue(
                    "missing_column",
                    col.name,
                    f"column {col.name!r} ({col.dtype}) is missing; the file has {found}",
                )
        for name in raw.columns:
            if name not in schema.column_names:
                self._issue(
                    "extra_column",
                    name,
                    f"column {name!r} is not in the schema of {schema.name} "
                    f"(columns: {', '.join(schema.column_names)})",
                )
        self.columns = [c for c in schema.columns if c.name in present and self._type_ok(c)]
        self.text_mode = False
        self.duplicate_rows: int | None = None
        self.series_count: int | None = None
        self.series_with_gaps: int | None = None
        self.missing_periods: int | None = None
        self.modal_days: int | None = None
        self.reset()

    def reset(self) -> None:
        """Start (or restart) the pass."""
        self.rows = 0
        ref_cols = self.reference.get("columns", {})
        self.stats = {
            c.name: tablestats.column_stats(c.dtype, ref_cols.get(c.name)) for c in self.columns
        }
        self.sample = tablestats.RowSample(self.options.sample_rows)
        self.findings: dict[tuple[str, str | None], _Finding] = {}
        self.failed: set[str] = set()
        self.hashes: list[np.ndarray] = []
        self.series_parts: list[pa.Table] = []

    # -- helpers --------------------------------------------------------------------------------

    def _issue(
        self,
        check: str,
        column: str | None,
        message: str,
        *,
        count: int | None = None,
        examples: list[dict[str, Any]] | None = None,
        severity: Literal["error", "warning"] = "error",
    ) -> None:
        self.issues.append(
            Issue(
                severity=severity,
                table=self.schema.name,
                column=column,
                check=check,
                message=message,
                count=count,
                examples=examples or [],
            )
        )

    def read_error(self, err: TableReadError) -> None:
        self._issue(err.check, None, err.message, examples=err.examples)

    def _type_ok(self, column: Column) -> bool:
        found = self.raw.arrow_types.get(column.name)
        if found is None or _compatible(found, column.arrow_type):
            return True
        pf = pq.ParquetFile(self.raw.path)
        wanted = [k for k in self.schema.keys if k in self.raw.columns and k != column.name]
        if not pf.num_row_groups:
            return False
        shown = pf.read_row_group(0, columns=[*wanted, column.name]).slice(0, self.limit)
        self._issue(
            "type",
            column.name,
            f"column {column.name!r} has Arrow type {found}, expected {column.arrow_type} "
            f"({column.dtype})",
            count=self.raw.num_rows,
            examples=[
                {"row": i, **self._keys_of(shown, i), column.name: _plain(v)}
                for i, v in enumerate(shown.column(column.name).to_pylist())
            ],
        )
        return False

    def _keys_of(self, data: pa.Table | pa.RecordBatch, i: int) -> dict[str, Any]:
        return {
            k: _plain(data.column(k)[i].as_py()) for k in self.schema.keys if k in data.column_names
        }

    def _available(self, names: tuple[str, ...] | list[str]) -> bool:
        usable = {c.name for c in self.columns} - self.failed
        return all(n in usable for n in names)

    @property
    def complete(self) -> bool:
        """Every schema column is present with a usable type (the table can be written)."""
        return len(self.columns) == len(self.schema.columns) and not self.failed

    @property
    def clean(self) -> bool:
        """No error so far (null shares are judged at the end, where some nulls are allowed)."""
        return not self.issues and all(
            f.check == "null_share" and self.schema.column(f.column or "").max_null_share > 0
            for f in self.findings.values()
        )

    def read_types(self) -> dict[str, pa.DataType] | None:
        """CSV reader types: the schema's, or None (text) to locate values that do not convert."""
        return None if self.text_mode else {c.name: c.arrow_type for c in self.columns}

    def _finding(self, check: str, column: str | None) -> _Finding:
        return self.findings.setdefault((check, column), _Finding(check, column))

    def _note(
        self, check: str, column: str, raw: pa.RecordBatch, positions: np.ndarray
    ) -> _Finding:
        finding = self._finding(check, column)
        finding.count += len(positions)
        for p in positions[: max(self.limit - len(finding.examples), 0)]:
            p = int(p)
            example: dict[str, Any] = {"row": self.rows + p}
            if self.raw.format == "csv":
                example["line"] = self.rows + p + 2  # one record per line; the header is line 1
            example.update(self._keys_of(raw, p))
            example[column] = _plain(raw.column(column)[p].as_py())
            finding.examples.append(example)
        return finding

    # -- per batch ------------------------------------------------------------------------------

    def feed(self, raw: pa.RecordBatch) -> pa.RecordBatch | None:
        """Check one batch; returns it cast to the schema when the table is complete."""
        typed: dict[str, pa.Array] = {}
        for col in self.columns:
            if col.name in self.failed:
                continue
            cast, bad, truncated = cast_locating(raw.column(col.name), col.arrow_type)
            if len(bad):
                self._note("type", col.name, raw, bad).lower_bound |= truncated
            if cast is None:  # too many bad values to go on with this column
                self.failed.add(col.name)
                continue
            typed[col.name] = cast
            self._check_values(col, cast, raw, bad)
            self.stats[col.name].update(cast)
        batch = pa.RecordBatch.from_pydict(typed) if typed else None
        if batch is not None:
            numeric = [c.name for c in self.columns if c.is_numeric and c.name in typed]
            if numeric:
                self.sample.update(batch.select(numeric))
            self._track_keys(batch)
        self.rows += raw.num_rows
        if batch is None or not self.complete:
            return None
        return batch.select(self.schema.column_names)

    def _check_values(
        self, col: Column, arr: pa.Array, raw: pa.RecordBatch, bad: np.ndarray
    ) -> None:
        nulls = arr.is_null().to_numpy(zero_copy_only=False)
        if len(bad):
            nulls = nulls.copy()
            nulls[bad] = False  # reported as type errors already
        nans = np.zeros(len(arr), dtype=bool)
        if pa.types.is_floating(arr.type):
            nans = pc.fill_null(pc.is_nan(arr), False).to_numpy(zero_copy_only=False)
        if nulls.any() or nans.any():
            finding = self._note("null_share", col.name, raw, np.flatnonzero(nulls | nans))
            finding.values["null"] += int(nulls.sum())
            finding.values["NaN"] += int(nans.sum())
        low, high = _bound(col, col.min), _bound(col, col.max)
        if low is not None or high is not None:
            outside = np.zeros(len(arr), dtype=bool)
            for bound, op in ((low, pc.less), (high, pc.greater)):
                if bound is not None:
                    hit = pc.fill_null(op(arr, pa.scalar(bound)), False)
                    outside |= hit.to_numpy(zero_copy_only=False)
            if outside.any():
                self._note("out_of_range", col.name, raw, np.flatnonzero(outside))
        if col.allowed is not None:
            unknown = pc.and_(arr.is_valid(), pc.invert(pc.is_in(arr, pa.array(col.allowed))))
            positions = np.flatnonzero(unknown.to_numpy(zero_copy_only=False))
            if len(positions):
                finding = self._note("vocabulary", col.name, raw, positions)
                finding.values.update(arr.take(pa.array(positions[:1000])).to_pylist())
        freq = self.schema.frequency
        if col.name == self.schema.time_column and freq not in (None, "inferred"):
            import pandas as pd
            from pandas.tseries.frequencies import to_offset

            idx = pd.DatetimeIndex(arr.to_numpy(zero_copy_only=False))
            # Adding a zero-length anchored offset rolls a date forward onto the cadence.
            off = np.asarray((idx + to_offset(freq) * 0) != idx) & ~np.asarray(idx.isna())
            if off.any():
                self._note("off_grid", col.name, raw, np.flatnonzero(off))

    def _track_keys(self, batch: pa.RecordBatch) -> None:
        keys = self.schema.keys
        if keys and self._available(keys):
            self.hashes.append(_key_hashes(batch, keys))
        tcol, series = self.schema.time_column, list(self.schema.series_keys)
        if tcol and self.schema.frequency and self._available([tcol, *series]):
            columns = {k: batch.column(k) for k in series} or {
                "__all": pa.array(np.zeros(batch.num_rows, dtype=np.int8))
            }
            part = pa.table({**columns, "__t": batch.column(tcol)})
            self.series_parts.append(
                part.group_by(list(columns)).aggregate(
                    [("__t", "min"), ("__t", "max"), ("__t", "count")]
                )
            )
            if len(self.series_parts) >= 64:
                self.series_parts = [self._series()]

    def _series(self) -> pa.Table:
        """Per series: first and last time and row count, merged over the batches so far."""
        merged = pa.concat_tables(self.series_parts)
        names = [c for c in merged.column_names if not c.startswith("__t")]
        return (
            merged.group_by(names)
            .aggregate([("__t_min", "min"), ("__t_max", "max"), ("__t_count", "sum")])
            .rename_columns([*names, "__t_min", "__t_max", "__t_count"])
        )

    # -- after the pass -------------------------------------------------------------------------

    def finish(self) -> None:
        """Turn the tallies into issues; a second pass over the key columns finds examples."""
        if self.rows == 0:
            self._issue("empty_table", None, f"{self.schema.name} has no rows")
        for (check, column), finding in self.findings.items():
            col = self.schema.column(column) if column else None
            message = self._message(check, col, finding)
            if message is not None:
                self._issue(check, column, message, count=finding.count, examples=finding.examples)
        dup_hashes = self._duplicate_hashes()
        gap_series = self._gap_series()
        if len(dup_hashes) or gap_series:
            self._second_pass(dup_hashes, gap_series)

    def _message(self, check: str, col: Column | None, f: _Finding) -> str | None:
        if col is None:
            return plural(f.count, "problem")
        name, rows = col.name, self.rows
        if check == "type":
            what = col.dtype
            if col.dtype == "date":
                what = "ISO dates (YYYY-MM-DD)" if self.raw.format == "csv" else "dates (no time)"
            count = "at least " if f.lower_bound else ""
            source = "CSV value" if self.raw.format == "csv" else "value"
            return f"{count}{plural(f.count, source)} in {name!r} cannot be read as {what}"
        if check == "null_share":
            share = f.count / rows if rows else 0.0
            if share <= col.max_null_share:
                return None
            return (
                f"{f.count} of {rows} values ({share:.1%}) in {name!r} are missing "
                f"({f.values['null']} null, {f.values['NaN']} NaN); at most "
                f"{col.max_null_share:.0%} may be"
            )
        if check == "out_of_range":
            stats = self.stats[name]
            low, high = getattr(stats, "min", None), getattr(stats, "max", None)
            seen = f"; values seen from {_show(low)} to {_show(high)}" if low is not None else ""
            values = plural(f.count, "value")
            return f"{values} in {name!r} outside {col.range_text()}{seen}"
        if check == "vocabulary":
            shown = ", ".join(f"{v!r} ({n}×)" for v, n in f.values.most_common(10))
            return (
                f"{plural(f.count, 'value')} in {name!r} not in its vocabulary {col.range_text()}: "
                f"{shown}"
            )
        if check == "off_grid":
            cadence = _cadence(self.schema.frequency)
            return f"{plural(f.count, 'value')} in {name!r} off the table's cadence ({cadence})"
        return f"{plural(f.count, 'value')} in {name!r} failed {check}"

    def _duplicate_hashes(self) -> np.ndarray:
        """Count rows whose key repeats an earlier row's; return some repeated key hashes."""
        if not self.hashes:
            return np.empty(0, dtype=np.uint64)
        hashes = np.concatenate(self.hashes)
        self.hashes = []
        hashes.sort()
        repeated = hashes[1:] == hashes[:-1]
        self.duplicate_rows = int(repeated.sum())
        return np.unique(hashes[1:][repeated])[: self.limit]

    def _gap_series(self) -> list[dict[str, Any]]:
        """Series with missing periods (the worst ``example_rows`` of them, for the 2nd pass)."""
        tcol = self.schema.time_column
        if not self.series_parts or tcol is None:
            return []
        series = self._series()
        self.series_parts = []
        self.series_count = series.num_rows
        stats = self.stats[tcol]
        assert isinstance(stats, tablestats.DateStats)
        times = np.array(sorted(stats.distinct), dtype="datetime64[D]").astype(np.int64)
        if len(times) < 2:
            return []
        diffs = np.diff(times)
        values, counts = np.unique(diffs, return_counts=True)
        self.modal_days = int(values[counts.argmax()])
        freq = self.schema.frequency
        # Periods with no row at all, in any series.
        if freq == "inferred":
            wide = np.flatnonzero(diffs > 1.5 * self.modal_days)
            holes = [(times[i], times[i + 1]) for i in wide]
            missing = int(sum(round((b - a) / self.modal_days) - 1 for a, b in holes))
            shown = ", ".join(f"{_day(a)} .. {_day(b)}" for a, b in holes[: self.limit])
        else:
            import pandas as pd

            grid = _days(pa.array(pd.date_range(_day(times[0]), _day(times[-1]), freq=freq).date))
            absent = np.setdiff1d(grid, times)
            missing, shown = len(absent), ", ".join(_day(d) for d in absent[: self.limit])
        if missing:
            self._issue(
                "time_gaps",
                tcol,
                f"no rows at all for {plural(missing, 'period')} "
                f"({_cadence(freq, self.modal_days)}): "
                f"{shown}",
                count=missing,
                severity="warning",
            )
        # Per series: periods between its first and last row where other series have rows.
        first, last = _days(series.column("__t_min")), _days(series.column("__t_max"))
        expected = np.searchsorted(times, last, "right") - np.searchsorted(times, first, "left")
        lacking = np.clip(expected - series.column("__t_count").to_numpy(), 0, None)
        self.series_with_gaps = int((lacking > 0).sum())
        self.missing_periods = int(lacking.sum())
        if not self.series_with_gaps:
            return []
        worst = np.argsort(-lacking, kind="stable")[: self.limit]
        keys = [c for c in series.column_names if not c.startswith("__")]
        return [
            {
                "series": {k: series.column(k)[int(i)].as_py() for k in keys},
                "first": int(first[i]),
                "last": int(last[i]),
                "missing": int(lacking[i]),
                "times": [],
            }
            for i in worst
            if lacking[i] > 0
        ]

    def _second_pass(self, dup_hashes: np.ndarray, gap_series: list[dict[str, Any]]) -> None:
        """Read the key columns again to show which rows repeat a key and which periods lack."""
        keys, tcol = self.schema.keys, self.schema.time_column
        names = list(dict.fromkeys([*keys, *self.schema.series_keys, *([tcol] if tcol else [])]))
        names = [n for n in names if self._available([n])]
        types = self.read_types()
        dups: dict[int, list[tuple[int, dict[str, Any]]]] = {int(h): [] for h in dup_hashes}
        offset = 0
        for raw, _ in iter_batches(
            self.raw,
            names,
            types={n: types[n] for n in names} if types else None,
            batch_rows=self.options.batch_rows,
        ):
            batch = pa.RecordBatch.from_pydict(
                {
                    n: cast_locating(raw.column(n), self.schema.column(n).arrow_type)[0]
                    for n in names
                }
            )
            if dups:
                hashes = _key_hashes(batch, keys)
                for p in np.flatnonzero(np.isin(hashes, dup_hashes)):
                    rows = dups[int(hashes[p])]
                    if len(rows) < 10:  # a key repeated a million times needs 10 examples
                        rows.append((offset + int(p), self._keys_of(batch, int(p))))
            for gap in gap_series:
                mask = pa.array(np.ones(batch.num_rows, dtype=bool))
                for k, v in gap["series"].items():
                    mask = pc.and_(mask, pc.fill_null(pc.equal(batch.column(k), v), False))
                gap["times"].extend(_days(batch.column(tcol).filter(mask)).tolist())
            offset += raw.num_rows
        if dups:
            self._report_duplicates(dups)
        if gap_series:
            self._report_gaps(gap_series)

    def _report_duplicates(self, dups: dict[int, list[tuple[int, dict[str, Any]]]]) -> None:
        examples = []
        for rows in dups.values():
            by_key: dict[str, list[int]] = {}
            values: dict[str, dict[str, Any]] = {}
            for row, key in rows:  # same hash: confirm the key values are really equal
                text = json.dumps(key, sort_keys=True, default=str)
                by_key.setdefault(text, []).append(row)
                values[text] = key
            for text, positions in by_key.items():
                if len(positions) > 1:
                    example: dict[str, Any] = {**values[text], "rows": positions[:10]}
                    if self.raw.format == "csv":
                        example["lines"] = [r + 2 for r in positions[:10]]
                    examples.append(example)
        if not examples:  # a 64-bit hash collision, not a duplicate
            self.duplicate_rows = 0
            return
        keys = ", ".join(self.schema.keys)
        self._issue(
            "duplicate_keys",
            None,
            f"{plural(self.duplicate_rows or 0, 'row')} repeat the key ({keys}) of an earlier row",
            count=self.duplicate_rows,
            examples=examples[: self.limit],
        )

    def _report_gaps(self, gap_series: list[dict[str, Any]]) -> None:
        stats = self.stats[self.schema.time_column or ""]
        assert isinstance(stats, tablestats.DateStats)
        times = np.array(sorted(stats.distinct), dtype="datetime64[D]").astype(np.int64)
        examples = []
        for gap in gap_series:
            span = times[(times >= gap["first"]) & (times <= gap["last"])]
            absent = np.setdiff1d(span, np.asarray(gap["times"], dtype=np.int64))
            examples.append(
                {
                    **{k: _plain(v) for k, v in gap["series"].items() if k != "__all"},
                    "missing": gap["missing"],
                    "first_missing": ", ".join(_day(d) for d in absent[:5]),
                    "series_from": _day(gap["first"]),
                    "series_to": _day(gap["last"]),
                }
            )
        cadence = _cadence(self.schema.frequency, self.modal_days)
        self._issue(
            "time_gaps",
            self.schema.time_column,
            f"{self.series_with_gaps} of {self.series_count} series miss "
            f"{plural(self.missing_periods or 0, 'period')} between their first and last row "
            f"({cadence})",
            count=self.missing_periods,
            examples=examples,
            severity="warning",
        )

    # -- results --------------------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """This table's entry in ``statistics.json``."""
        columns: dict[str, Any] = {}
        for col in self.columns:
            if col.name in self.failed:
                continue
            stats = self.stats[col.name]
            if isinstance(stats, tablestats.NumericStats):
                values = stats.to_dict(self.sample.column(col.name), self.sample.exact)
            else:
                values = stats.to_dict()
            columns[col.name] = {"type": col.dtype, **values}
        out: dict[str, Any] = {"rows": self.rows, "file": self.raw.path.name}
        tcol = self.schema.time_column
        if tcol in columns and columns[tcol]["count"]:
            out["time"] = {
                "column": tcol,
                "first": columns[tcol]["min"],
                "last": columns[tcol]["max"],
                "periods": columns[tcol]["distinct"],
                "frequency": self.schema.frequency,
                "series": self.series_count,
            }
        out["columns"] = columns
        return out

    def summary(self, seconds: float) -> TableSummary:
        return TableSummary(
            table=self.schema.name,
            file=self.raw.path.name,
            format=self.raw.format,
            bytes=self.raw.size,
            rows=self.rows,
            columns=self.raw.columns,
            duplicate_keys=self.duplicate_rows,
            series=self.series_count,
            series_with_gaps=self.series_with_gaps,
            missing_periods=self.missing_periods,
            cadence=_cadence(self.schema.frequency, self.modal_days),
            seconds=round(seconds, 3),
        )


@dataclass
class TableResult:
    summary: TableSummary
    issues: list[Issue]
    check: TableCheck | None = None
    statistics: dict[str, Any] | None = None


def check_table(
    schema: TableSchema,
    path: Path,
    options: CheckOptions,
    reference: dict[str, Any] | None,
    staging: Path | None,
) -> TableResult:
    """Validate one table file; write it (cast) into ``staging`` while it stays clean."""
    started = time.perf_counter()
    log.info("validating %s (%s, %s bytes)", schema.name, path.name, f"{path.stat().st_size:,}")
    try:
        raw = open_raw_table(path, schema.column_names)
    except TableReadError as err:
        summary = TableSummary(
            table=schema.name,
            file=path.name,
            format=path.suffix.lstrip("."),
            bytes=path.stat().st_size,
        )
        issue = Issue(
            severity="error",
            table=schema.name,
            check=err.check,
            message=err.message,
            examples=err.examples,
        )
        return TableResult(summary, [issue])
    check = TableCheck(schema, raw, options, reference)
    names = [c.name for c in check.columns]
    writer: TableWriter | None = None
    pending: list[pa.RecordBatch] = []  # CSV batches are small: gather them into row groups

    def flush() -> None:
        nonlocal writer
        if pending and staging is not None:
            if writer is None:
                writer = TableWriter(schema, staging, FileFormat.PARQUET)
            writer.write(pa.Table.from_batches(pending))
        pending.clear()

    read_failed = False
    try:
        while names:
            try:
                with progress(f"validate {schema.name}", raw.progress_total) as bar:
                    done_before = 0
                    for batch, done in iter_batches(
                        raw, names, types=check.read_types(), batch_rows=options.batch_rows
                    ):
                        typed = check.feed(batch)
                        if staging is not None and typed is not None and check.clean:
                            pending.append(typed)
                            if sum(b.num_rows for b in pending) >= options.batch_rows:
                                flush()
                        else:
                            pending.clear()
                        bar.advance(done - done_before)
                        done_before = done
                if check.clean:
                    flush()
                break
            except CsvConversionError:
                # Some CSV value does not convert: read again as text to locate every one.
                log.info("%s: values that do not convert; re-reading as text", schema.name)
                check.reset()
                check.text_mode = True
                staging = None
                pending.clear()
            except TableReadError as err:
                check.read_error(err)
                read_failed = True
                break
    finally:
        if writer is not None:
            writer.close()
    if not names and raw.num_rows is not None:
        check.rows = raw.num_rows
    if not read_failed:
        check.finish()
    seconds = time.perf_counter() - started
    errors = sum(i.severity == "error" for i in check.issues)
    log.info("%s: %s rows, %d errors in %.1fs", schema.name, f"{check.rows:,}", errors, seconds)
    return TableResult(
        check.summary(seconds),
        check.issues,
        check,
        check.statistics() if not read_failed else None,
    )
