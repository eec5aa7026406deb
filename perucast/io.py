"""File helpers shared by the steps: atomic output directories and chunked table writers."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from models.base import FileFormat, TableSchema


@contextmanager
def atomic_directory(target: Path | str) -> Iterator[Path]:
    """Yield a temporary directory beside ``target`` that becomes ``target`` on success.

    On an exception the temporary directory is removed and ``target`` is left as it was, so a
    reader never sees a half-written output. An existing ``target`` is replaced only after the
    new content is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write text through a temporary file and a rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path | str, payload: Any) -> None:
    """Write JSON through a temporary file and a rename."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


class TableWriter:
    """Write one table in chunks (row groups), as Parquet or CSV, with the table's Arrow schema.

    Chunks are cast to the schema, so a generator bug that produces a wrong type fails here
    rather than in a later step.
    """

    def __init__(self, schema: TableSchema, directory: Path, fmt: FileFormat) -> None:
        self.schema = schema
        self.arrow_schema = schema.arrow_schema()
        self.fmt = FileFormat(fmt)
        self.path = Path(directory) / f"{schema.name}.{self.fmt.value}"
        self.rows = 0
        if self.fmt is FileFormat.PARQUET:
            self._writer: Any = pq.ParquetWriter(
                self.path, self.arrow_schema, compression="zstd", write_statistics=True
            )
        else:
            self._writer = pacsv.CSVWriter(self.path, self.arrow_schema)

    def write(self, chunk: pa.Table | dict[str, Any]) -> None:
        if not isinstance(chunk, pa.Table):
            chunk = pa.Table.from_pydict({name: chunk[name] for name in self.schema.column_names})
        chunk = chunk.select(self.schema.column_names).cast(self.arrow_schema)
        self._writer.write_table(chunk)
        self.rows += chunk.num_rows

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def table_file(directory: Path | str, table: str) -> Path | None:
    """The file holding ``table`` in ``directory`` (Parquet preferred over CSV), or None."""
    directory = Path(directory)
    for ext in ("parquet", "csv"):
        path = directory / f"{table}.{ext}"
        if path.exists():
            return path
    return None
