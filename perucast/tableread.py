"""Read a raw table file (Parquet or CSV) as a stream of Arrow record batches, with precise errors.

Large tables never have to fit in memory: Parquet is read batch by batch, CSV through pyarrow's
streaming reader. Problems a person can fix come out as ``TableReadError`` with a check name and a
message that says what is wrong and where: a truncated Parquet file, a CSV separated by ';' or tabs,
bytes that are not UTF-8 (byte offset and line), a malformed CSV row.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HEADER_PROBE_BYTES = 1 << 20
DELIMITER_NAMES = {";": "semicolon", "\t": "tab", "|": "pipe", ",": "comma"}


class TableReadError(Exception):
    """A table file cannot be read as it is.

    Attributes:
        check: Short name of the failed check (``corrupt_file``, ``encoding``, ``delimiter``,
            ``csv_parse``, ``empty_table``, ``duplicate_column``).
        message: What is wrong, for people.
        examples: Where, e.g. ``[{"line": 17, "byte_offset": 1234, "text": "..."}]``.
    """

    def __init__(
        self, check: str, message: str, examples: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.examples = examples or []


class CsvConversionError(TableReadError):
    """The typed CSV reader met a value it cannot convert; re-read as text to locate them all."""


class NotUtf8Error(ValueError):
    """Raised by ``Utf8CheckedFile`` at the first byte sequence that is not UTF-8."""

    def __init__(self, offset: int, line: int, text: str, bad: bytes) -> None:
        super().__init__(f"invalid UTF-8 at byte offset {offset} (line {line})")
        self.offset, self.line, self.text, self.bad = offset, line, text, bad


class Utf8CheckedFile(io.RawIOBase):
    """A binary file wrapper that checks, while pyarrow reads, that the bytes are UTF-8.

    It also counts the bytes read (for progress) and the lines, so an error names the byte offset
    and the line of the first bad byte. Pure-ASCII chunks skip the decoder.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.bytes_read = 0
        self._lines = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._check(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()

    def _check(self, data: bytes) -> None:
        pending = len(self._decoder.getstate()[0])
        if data and not pending and data.isascii():
            pass
        else:
            try:
                self._decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                # err.start counts the bytes held back from the previous chunk too.
                start = max(err.start - pending, 0)
                line_start = data.rfind(b"\n", 0, start) + 1
                line_end = data.find(b"\n", start)
                text = data[line_start : line_end if line_end >= 0 else len(data)]
                raise NotUtf8Error(
                    offset=self.bytes_read + err.start - pending,
                    line=self._lines + data.count(b"\n", 0, start) + 1,
                    text=text[:200].decode("utf-8", errors="backslashreplace"),
                    bad=data[start : start + 4],
                ) from None
        self._lines += data.count(b"\n")
        self.bytes_read += len(data)


def _not_utf8(err: NotUtf8Error) -> TableReadError:
    return TableReadError(
        "encoding",
        f"the file is not UTF-8: invalid byte 0x{err.bad[:1].hex()} at byte offset {err.offset} "
        f"(line {err.line}); save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        [{"line": err.line, "byte_offset": err.offset, "text": err.text}],
    )


@dataclass
class RawTable:
    """An opened raw table file.

    Attributes:
        path: The file.
        format: ``parquet`` or ``csv``.
        columns: Column names in file order.
        arrow_types: Arrow type per column (Parquet only; CSV columns are typed when read).
        num_rows: Rows (Parquet metadata), None for CSV until read.
        size: File size in bytes.
    """

    path: Path
    format: Literal["parquet", "csv"]
    columns: list[str]
    arrow_types: dict[str, pa.DataType] = field(default_factory=dict)
    num_rows: int | None = None
    size: int = 0

    @property
    def progress_total(self) -> int:
        """Units ``iter_batches`` reports progress in: rows (Parquet) or bytes (CSV)."""
        return (self.num_rows or 0) if self.format == "parquet" else self.size


def open_raw_table(path: Path, expected_columns: Sequence[str]) -> RawTable:
    """Open ``path`` and read its column names (and Arrow types, for Parquet).

    Args:
        path: A ``.parquet`` or ``.csv`` file.
        expected_columns: The schema's column names, to recognise a CSV with another delimiter.

    Raises:
        TableReadError: truncated or corrupt Parquet; empty CSV, CSV with another delimiter, a
            header that is not UTF-8, duplicate column names.
    """
    path = Path(path)
    size = path.stat().st_size
    if path.suffix == ".parquet":
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise TableReadError(
                "corrupt_file",
                f"cannot read the Parquet file ({size} bytes): it is truncated or not Parquet "
                f"({err})",
            ) from None
        schema = pf.schema_arrow
        columns = list(schema.names)
        table = RawTable(
            path, "parquet", columns, {f.name: f.type for f in schema}, pf.metadata.num_rows, size
        )
    else:
        table = RawTable(path, "csv", _csv_header(path, expected_columns), size=size)
    duplicates = sorted({c for c in table.columns if table.columns.count(c) > 1})
    if duplicates:
        raise TableReadError("duplicate_column", f"duplicate column names: {duplicates}")
    return table


def _csv_header(path: Path, expected: Sequence[str]) -> list[str]:
    with open(path, "rb") as raw:
        probe = raw.read(HEADER_PROBE_BYTES)
    if not probe.strip():
        raise TableReadError("empty_table", "the file is empty (no header row)")
    line = probe.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = line.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        bad = line[err.start : err.start + 4]
        shown = line[:200].decode("utf-8", errors="backslashreplace")
        raise _not_utf8(NotUtf8Error(err.start, 1, shown, bad)) from None

    def fields(delimiter: str) -> list[str]:
        return next(csv.reader([text], delimiter=delimiter))

    header = fields(",")
    matched = len(set(header) & set(expected))
    for delimiter in (";", "\t", "|"):
        other = fields(delimiter)
        if len(set(other) & set(expected)) > matched:
            name = DELIMITER_NAMES[delimiter]
            raise TableReadError(
                "delimiter",
                f"the file is separated by {delimiter!r} ({name}), not by commas: perucast reads "
                f"comma-separated CSV; re-export it with ',' as the delimiter",
                [{"line": 1, "text": text[:200]}],
            )
    return header


def iter_batches(
    table: RawTable,
    columns: Sequence[str],
    *,
    types: dict[str, pa.DataType] | None = None,
    batch_rows: int = 1_000_000,
) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Stream ``columns`` of ``table`` as record batches.

    Args:
        table: From ``open_raw_table``.
        columns: The columns to read (present in the file).
        types: CSV only: the Arrow type of each column; None reads every column as text (to
            locate values that do not convert).
        batch_rows: Rows per batch (Parquet); CSV blocks are sized to roughly as many rows.

    Yields:
        ``(batch, done)``: a batch and the progress so far in ``table.progress_total`` units.

    Raises:
        TableReadError: a corrupt Parquet page, a malformed CSV row, bytes that are not UTF-8.
        CsvConversionError: a CSV value does not convert to its column's type.
    """
    if table.format == "parquet":
        yield from _parquet_batches(table, columns, batch_rows)
    else:
        yield from _csv_batches(table, columns, types, batch_rows)


def _parquet_batches(
    table: RawTable, columns: Sequence[str], batch_rows: int
) -> Iterator[tuple[pa.RecordBatch, int]]:
    done = 0
    try:
        # pre_buffer would read ahead every row group of the file: memory grows with its size.
        pf = pq.ParquetFile(table.path, pre_buffer=False)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns)):
            done += batch.num_rows
            yield batch, done
    except (pa.ArrowException, OSError) as err:
        raise TableReadError(
            "corrupt_file",
            f"the Parquet file is corrupt after row {done}: {err}",
            [{"row": done}],
        ) from None


def _csv_batches(
    table: RawTable,
    columns: Sequence[str],
    types: dict[str, pa.DataType] | None,
    batch_rows: int,
) -> Iterator[tuple[pa.RecordBatch, int]]:
    # pyarrow's reader thread queues up to 32 blocks ahead of the parser, so the block size bounds
    # memory: 4 MiB blocks keep it near 128 MiB. (Tests pass tiny batch_rows to stream.)
    block = int(min(4 << 20, max(1 << 10, batch_rows * 100)))
    column_types = types if types is not None else {c: pa.string() for c in columns}
    convert = pacsv.ConvertOptions(
        column_types={c: column_types[c] for c in columns},
        include_columns=list(columns),
        strings_can_be_null=True,  # "" and NA in text columns are missing values, not labels
    )
    rows = 0
    checked = Utf8CheckedFile(open(table.path, "rb"))  # noqa: SIM115 - closed below
    try:
        reader = pacsv.open_csv(
            checked,
            read_options=pacsv.ReadOptions(block_size=block),
            parse_options=pacsv.ParseOptions(delimiter=","),
            convert_options=convert,
        )
        for batch in reader:
            rows += batch.num_rows
            yield batch, checked.bytes_read
    except NotUtf8Error as err:
        raise _not_utf8(err) from None
    except pa.ArrowInvalid as err:
        message = str(err)
        if "conversion error" in message:
            raise CsvConversionError("type", message) from None
        where = f" after the first {rows} data rows" if rows else ""
        raise TableReadError("csv_parse", f"malformed CSV{where}: {message}") from None
    finally:
        checked.close()


def cast_locating(
    arr: pa.Array, target: pa.DataType, limit: int = 1000
) -> tuple[pa.Array | None, np.ndarray, bool]:
    """Cast ``arr`` to ``target``, locating the values that do not convert.

    Bad values are found by bisection with Arrow's own cast, so "bad" means exactly what Arrow
    rejects (unparseable text, overflow, a date with a time of day), at a cost that grows with the
    number of bad values, not the batch size. Text is trimmed first, as pyarrow's CSV reader does.

    Args:
        arr: The column as read (text or another Arrow type).
        target: The schema's Arrow type.
        limit: Stop looking after this many bad values.

    Returns:
        ``(cast, bad, truncated)``: the cast array with bad values as nulls (None when the search
        stopped at ``limit``), the positions of bad values, and whether the search stopped early.
    """
    if pa.types.is_string(arr.type) and not pa.types.is_string(target):
        arr = pc.utf8_trim_whitespace(arr)
    if pa.types.is_timestamp(arr.type) and pa.types.is_date(target):
        # Arrow drops the time of day silently: a timestamp that is not midnight is not a date.
        timed = pc.fill_null(pc.not_equal(pc.floor_temporal(arr, unit="day"), arr), False)
        positions = np.flatnonzero(timed.to_numpy(zero_copy_only=False))
        if len(positions):
            cleaned = pc.if_else(timed, pa.scalar(None, arr.type), arr)
            return pc.cast(cleaned, target), positions[:limit], len(positions) > limit
    try:
        return pc.cast(arr, target), np.empty(0, dtype=np.int64), False
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    bad: list[int] = []

    def bisect(offset: int, length: int) -> None:
        if len(bad) >= limit:
            return
        try:
            pc.cast(arr.slice(offset, length), target)
            return
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        if length == 1:
            bad.append(offset)
            return
        half = length // 2
        bisect(offset, half)
        bisect(offset + half, length - half)

    bisect(0, len(arr))
    positions = np.asarray(bad, dtype=np.int64)
    if len(bad) >= limit:
        return None, positions, True
    mask = np.zeros(len(arr), dtype=bool)
    mask[positions] = True
    cleaned = pc.if_else(pa.array(mask), pa.scalar(None, arr.type), arr)
    return pc.cast(cleaned, target), positions, False
