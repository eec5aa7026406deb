"""Ingest step: copy a use case's raw tables from a directory or a DVC-tracked path at a revision.

The first step of a run. Reading through DVC at a named git revision (a tag, a branch, a commit)
makes the run name the exact data version it used; ``ingest.json`` records it::

    python -m components.ingest --use-case fish_stock --path /data/drop/fish_stock \
        --out data/ingested/fish_stock
    python -m components.ingest --use-case fish_stock --dvc-repo . --dvc-rev v1.2 \
        --dvc-path data/raw/fish_stock --out data/ingested/fish_stock

Files are read through ``dvc.api.DVCFileSystem``: from the local DVC cache when the data is there,
otherwise straight from the repository's DVC remote. ``dvc-repo`` may be a local checkout or a git
URL. The output directory receives ``<table>.parquet`` or ``<table>.csv`` for every raw table, the
oracle table and ``manifest.json`` when the source has them, and ``ingest.json`` (source, requested
revision, resolved commit, size and MD5 of every file); it appears atomically or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import posixpath
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import USE_CASE_NAMES, UseCaseName, get_use_case
from models.base import FileFormat, Scale, UseCase
from perucast.exitcodes import ExitCode
from perucast.io import atomic_directory, write_json_atomic

log = logging.getLogger(__name__)

CHUNK = 8 << 20
SIDE_FILES = ("manifest.json",)


class SourceNotFoundError(FileNotFoundError):
    """The source directory, git revision, DVC path or a table is missing or cannot be read."""


class IngestConfig(BaseModel):
    """Configuration of the ingest step: a local directory, or a DVC repository path at a rev.

    Attributes:
        use_case: Which tables to copy.
        output_dir: Where they go (replaced atomically).
        path: A local directory with one file per table.
        dvc_repo: A DVC repository: a local path or a git URL.
        dvc_rev: Git revision (tag, branch, commit); default ``HEAD``.
        dvc_path: The directory inside the repository that holds the tables.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    output_dir: Path
    path: Path | None = None
    dvc_repo: str | None = None
    dvc_rev: str | None = None
    dvc_path: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IngestConfig:
        dvc = (self.dvc_repo, self.dvc_rev, self.dvc_path)
        if self.path is not None and any(v is not None for v in dvc):
            raise ValueError(
                "give either --path or a DVC source (--dvc-repo, --dvc-path), not both"
            )
        if self.path is None and (self.dvc_repo is None or self.dvc_path is None):
            raise ValueError("give --path, or --dvc-repo and --dvc-path (and --dvc-rev)")
        if self.path is not None:
            out, src = self.output_dir.resolve(), self.path.resolve()
            if out == src or out in src.parents:
                raise ValueError(f"output directory {self.output_dir} would replace the source")
        return self


@dataclass
class IngestedFile:
    name: str
    table: str | None
    bytes: int
    md5: str


@dataclass
class IngestResult:
    """What ingest copied, from where, at which commit."""

    use_case: str
    output_dir: Path
    source: dict[str, Any]
    commit: str | None
    files: list[IngestedFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tables(self) -> list[str]:
        return [f.table for f in self.files if f.table is not None]

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def _open_dvc(config: IngestConfig) -> tuple[Any, str]:
    """A DVCFileSystem of the repository at the revision, and the resolved commit."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc.scm import RevError

    rev = config.dvc_rev or "HEAD"
    try:
        fs = DVCFileSystem(config.dvc_repo, rev=rev)
        commit = fs.repo.get_rev()
    except RevError:
        raise SourceNotFoundError(f"unknown git revision {rev!r} in {config.dvc_repo}") from None
    except DvcException as err:
        raise SourceNotFoundError(
            f"cannot open the DVC repository {config.dvc_repo} at {rev!r}: {err}"
        ) from None
    return fs, commit


def _plan(
    fs: Any, root: str, names: list[str], optional: set[str], where: str
) -> list[tuple[str, str | None]]:
    """The files to copy: ``(file name, table)``; raises when a required table is missing.

    The directory is listed once: for DVC data that is in neither the cache nor the remote the
    listing itself fails ("cannot read"), where per-file ``isfile`` checks would only say False
    and blame a missing table.
    """
    present = {posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)}
    files: list[tuple[str, str | None]] = []
    for name in names:
        # Parquet before CSV, as perucast.io.table_file prefers.
        found = next((f"{name}.{fmt}" for fmt in FileFormat if f"{name}.{fmt}" in present), None)
        if found is not None:
            files.append((found, name))
        elif name not in optional:
            raise SourceNotFoundError(
                f"table {name!r} not found: no {name}.parquet or {name}.csv in {where}"
            )
    files += [(side, None) for side in SIDE_FILES if side in present]
    return files


def _copy(fs: Any, src: str, dst: Path) -> tuple[int, str]:
    """Stream ``src`` to ``dst``; returns its size and MD5."""
    md5, size = hashlib.md5(), 0
    with fs.open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK):
            md5.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return size, md5.hexdigest()


def _dvc_errors() -> tuple[type[BaseException], ...]:
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError

    return (DvcException, DataIndexError)


def _ingest_files(
    fs: Any,
    root: str,
    where: str,
    config: IngestConfig,
    use_case: UseCase,
    source: dict[str, Any],
    commit: str | None,
    started: float,
) -> IngestResult:
    if not fs.isdir(root):
        raise SourceNotFoundError(f"no directory {root} in {where}")
    names = [*use_case.table_names, use_case.oracle.name]
    plan = _plan(fs, root, names, {use_case.oracle.name}, where)
    log.info("ingesting %s from %s", use_case.name, where)
    result = IngestResult(use_case.name, config.output_dir, source, commit)
    with atomic_directory(config.output_dir) as staging:
        for name, table in plan:
            size, md5 = _copy(fs, f"{root}/{name}", staging / name)
            log.info("  %s: %s bytes, md5 %s", name, f"{size:,}", md5)
            result.files.append(IngestedFile(name, table, size, md5))
        result.seconds = round(time.perf_counter() - started, 3)
        write_json_atomic(
            staging / "ingest.json",
            {
                "use_case": use_case.name,
                "source": source,
                "requested_rev": config.dvc_rev,
                "commit": commit,
                "tables": result.tables,
                "files": {
                    f.name: {"table": f.table, "bytes": f.bytes, "md5": f.md5} for f in result.files
                },
                "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": result.seconds,
            },
        )
    return result


def ingest(config: IngestConfig) -> IngestResult:
    """Copy the use case's raw tables from the source into ``config.output_dir``.

    Raises:
        SourceNotFoundError: the directory, revision, DVC path or a raw table is missing, or a
            file cannot be read (e.g. in neither the DVC cache nor the remote). Nothing is written.
    """
    import fsspec

    started = time.perf_counter()
    use_case = get_use_case(config.use_case)
    errors: tuple[type[BaseException], ...] = (OSError,)
    if config.path is not None:
        if not config.path.is_dir():
            raise SourceNotFoundError(f"source directory not found: {config.path}")
        fs, root, commit = fsspec.filesystem("file"), str(config.path.resolve()), None
        source: dict[str, Any] = {"kind": "path", "path": root}
        where = root
    else:
        fs, commit = _open_dvc(config)
        errors += _dvc_errors()
        root = str(config.dvc_path).strip("/") or "."
        repo = config.dvc_repo or ""
        if "://" not in repo and Path(repo).exists():
            repo = str(Path(repo).resolve())
        source = {
            "kind": "dvc",
            "repo": repo,
            "path": root,
            "rev": config.dvc_rev or "HEAD",
            "commit": commit,
        }
        where = f"{root} of {config.dvc_repo} at {source['rev']} ({commit[:12]})"
    try:
        result = _ingest_files(fs, root, where, config, use_case, source, commit, started)
    except SourceNotFoundError:
        raise
    except errors as err:
        # A DVC path whose data is in neither the cache nor the remote, an unreadable file.
        raise SourceNotFoundError(f"cannot read {where}: {err}") from None
    finally:
        if config.path is None:
            fs.close()  # the DVC repository (and the temporary clone of a URL)
    log.info(
        "ingested %d files (%s bytes) into %s in %.1fs",
        len(result.files),
        f"{result.total_bytes:,}",
        config.output_dir,
        result.seconds,
    )
    return result


SourceKind = Literal["synthetic", "dvc", "path"]


class SourceConfig(BaseModel):
    """Where a pipeline run's raw data comes from (the ingest component's parameters).

    Attributes:
        kind: ``synthetic`` (the seeded generator), ``dvc`` (a DVC repository at a revision) or
            ``path`` (a local or mounted directory).
        seed: Generator seed (synthetic).
        scale: Generator scale (synthetic): tiny, small or full.
        path: The directory (path).
        dvc_repo: Repository path or git URL (dvc).
        dvc_rev: Git revision; empty means HEAD (dvc).
        dvc_path: Directory of the tables inside the repository (dvc).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: SourceKind = "synthetic"
    seed: int = Field(default=42, ge=0)
    scale: Scale = Scale.SMALL
    path: str = ""
    dvc_repo: str = ""
    dvc_rev: str = ""
    dvc_path: str = ""

    @model_validator(mode="after")
    def _complete(self) -> SourceConfig:
        if self.kind == "path" and not self.path:
            raise ValueError("source kind 'path' needs a path")
        if self.kind == "dvc" and not (self.dvc_repo and self.dvc_path):
            raise ValueError("source kind 'dvc' needs dvc_repo and dvc_path")
        return self


def acquire(use_case: str, source: SourceConfig, output_dir: Path) -> dict[str, Any]:
    """Write the run's raw tables to ``output_dir`` from ``source``; returns metrics.

    The synthetic source runs the generator; the others copy through :func:`ingest`.

    Raises:
        SourceNotFoundError: as :func:`ingest`.
    """
    if source.kind == "synthetic":
        from components.generate import GenerateConfig, generate

        generated = generate(
            GenerateConfig(
                use_case=use_case, output_dir=output_dir, seed=source.seed, scale=source.scale
            )
        )
        return {"rows": generated.total_rows, "seconds": round(generated.seconds, 3)}
    result = ingest(
        IngestConfig(
            use_case=use_case,
            output_dir=output_dir,
            path=Path(source.path) if source.kind == "path" else None,
            dvc_repo=source.dvc_repo or None if source.kind == "dvc" else None,
            dvc_rev=source.dvc_rev or None if source.kind == "dvc" else None,
            dvc_path=source.dvc_path or None if source.kind == "dvc" else None,
        )
    )
    return {
        "files": len(result.files),
        "bytes": result.total_bytes,
        "seconds": round(result.seconds, 3),
    }


def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    out: Annotated[Path, typer.Option(help="Output directory (replaced atomically).")],
    path: Annotated[
        Path | None, typer.Option(help="A local directory with one file per table.")
    ] = None,
    dvc_repo: Annotated[
        str | None, typer.Option(help="A DVC repository: local path or git URL.")
    ] = None,
    dvc_rev: Annotated[
        str | None, typer.Option(help="Git revision: tag, branch or commit (default: HEAD).")
    ] = None,
    dvc_path: Annotated[
        str | None, typer.Option(help="Directory of the tables inside the DVC repository.")
    ] = None,
) -> None:
    """Copy a use case's raw tables from a directory, or from a DVC repository at a revision.

    Exit codes: 0 ok, 2 usage error, 3 source, revision, path or table not found.
    """
    from perucast.logs import setup_logging

    setup_logging()
    try:
        config = IngestConfig(
            use_case=use_case,
            output_dir=out,
            path=path,
            dvc_repo=dvc_repo,
            dvc_rev=dvc_rev,
            dvc_path=dvc_path,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        result = ingest(config)
    except SourceNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND) from None
    at = f" at {result.commit[:12]}" if result.commit else ""
    tables = ", ".join(result.tables)
    typer.echo(f"{result.use_case}{at}: {tables} ({result.total_bytes:,} bytes) -> {out}")
    for f in result.files:
        typer.echo(f"  {f.name:<26} {f.bytes:>14,} bytes  md5 {f.md5}")


app = typer.Typer(add_completion=False, help=__doc__)
app.command()(cli)

if __name__ == "__main__":
    app()
