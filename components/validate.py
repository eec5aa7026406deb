"""Validate step: check a raw data set against its use case's schemas; pass it on whole or not.

Used by ``dvc.yaml``, the demo and (later) the pipelines::

    python -m components.validate --use-case fish_stock --input data/raw/fish_stock \
        --output data/validated/fish_stock --report reports/validation/fish_stock

Every raw table (and the oracle table, when the set has one) is read in a single streamed pass
(``perucast.tablecheck``): Parquet batch by batch, CSV through pyarrow's streaming reader, so a
multi-GB table is validated in bounded memory. Errors fail the run and nothing is written to the
output directory:

- ``missing_table``, ``empty_table``, ``missing_column``, ``extra_column``, ``duplicate_column``
- ``type``: a Parquet column of another Arrow type, CSV text that is not a number, an unparseable
  date, an integer that overflows
- ``out_of_range`` ([min, max] of the column), ``vocabulary`` (closed set of labels),
  ``null_share`` (null and NaN values beyond the column's ``max_null_share``)
- ``off_grid``: a time value that is not on the table's cadence (a week_start that is not a Monday)
- ``duplicate_keys`` (found by hashing the key columns: 8 bytes per row, not the whole table)
- ``corrupt_file`` (truncated Parquet), ``delimiter`` (CSV separated by ';' or tabs), ``encoding``
  (bytes that are not UTF-8, with byte offset and line), ``csv_parse`` (malformed row)

Warnings are reported and the data passes: ``time_gaps`` (missing periods per series against the
table's frequency), ``drift`` (against ``--reference-stats``, the ``statistics.json`` of an
earlier validated set), ``unexpected_file``, ``manifest`` (row counts differ from manifest.json).

On success the output directory receives every table as Parquet cast to the schema, the oracle
table, ``manifest.json`` and ``ingest.json`` when present, and ``statistics.json``; it appears
atomically. The report (``report.json`` for machines, ``report.md`` for people) is always written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import USE_CASE_NAMES, UseCaseName, get_use_case
from models.base import FileFormat
from perucast.exitcodes import ExitCode
from perucast.io import atomic_directory, table_file, write_json_atomic, write_text_atomic
from perucast.validation_report import (
    DriftResult,
    Issue,
    TableSummary,
    ValidationReport,
    missing_share,
    render_markdown,
)

if TYPE_CHECKING:
    from perucast.tablecheck import CheckOptions, TableResult

log = logging.getLogger(__name__)

STATISTICS_FORMAT = "perucast-statistics/1"
SIDE_FILES = ("manifest.json", "ingest.json")  # provenance, copied to the output as they are


class InputNotFoundError(FileNotFoundError):
    """The input directory or the reference statistics file does not exist or cannot be read."""


class ValidateConfig(BaseModel):
    """Configuration of the validate step.

    Attributes:
        use_case: Which schemas to check against.
        input_dir: One file per table: ``<table>.parquet`` or ``<table>.csv``.
        output_dir: Where the validated set goes (replaced atomically, only when valid); None only
            checks.
        report_dir: Where ``report.json`` and ``report.md`` go; default
            ``reports/validation/<use case>``.
        reference_stats: ``statistics.json`` of an earlier validated set, for drift warnings.
        example_rows: Example rows shown per problem.
        sample_rows: Rows sampled per table for quantiles and histograms (exact below this).
        batch_rows: Rows per streamed batch (Parquet; CSV blocks are sized to match).
        drift_mean_shift_sd: Flag a numeric column whose mean moved by more reference SDs.
        drift_psi: Flag a column whose population stability index exceeds this.
        drift_share_change: Flag a label column where one label's share moved by more.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    input_dir: Path
    output_dir: Path | None = None
    report_dir: Path  # defaults to reports/validation/<use case> (see _default_report_dir)
    reference_stats: Path | None = None
    example_rows: int = Field(default=5, ge=1, le=100)
    sample_rows: int = Field(default=100_000, ge=100)
    batch_rows: int = Field(default=1_000_000, ge=1)
    drift_mean_shift_sd: float = Field(default=0.5, gt=0)
    drift_psi: float = Field(default=0.2, gt=0)
    drift_share_change: float = Field(default=0.1, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _default_report_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("report_dir") is None and "use_case" in data:
            data = {**data, "report_dir": Path("reports") / "validation" / str(data["use_case"])}
        return data

    @model_validator(mode="after")
    def _output_does_not_hold_input(self) -> ValidateConfig:
        # The output directory is replaced as a whole: it must not be, or contain, the input.
        if self.output_dir is not None:
            out, inp = self.output_dir.resolve(), self.input_dir.resolve()
            if inp == out or out in inp.parents:
                raise ValueError(f"output directory {self.output_dir} would replace the input")
        return self

    def check_options(self) -> CheckOptions:
        from perucast.tablecheck import CheckOptions

        return CheckOptions(
            example_rows=self.example_rows,
            sample_rows=self.sample_rows,
            batch_rows=self.batch_rows,
        )


# --------------------------------------------------------------------------------------------
# The data set


def _load_reference(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if path.is_dir():
        path = path / "statistics.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputNotFoundError(f"reference statistics not found: {path}") from None
    except (OSError, ValueError) as err:
        raise InputNotFoundError(f"cannot read reference statistics {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise InputNotFoundError(f"{path} is not a perucast statistics.json (no 'tables')")
    return data


def _drift(
    results: dict[str, TableResult], reference: dict[str, Any], config: ValidateConfig
) -> list[DriftResult]:
    """Compare every non-key column with the reference statistics."""
    from perucast import tablestats

    rows: list[DriftResult] = []
    for table, result in results.items():
        ref_table = reference["tables"].get(table)
        if result.check is None or result.statistics is None or not ref_table:
            continue
        schema = result.check.schema
        skip = {*schema.keys, schema.time_column}
        for name, current in result.statistics["columns"].items():
            ref = ref_table.get("columns", {}).get(name)
            if name in skip or not ref:
                continue
            stats = result.check.stats[name]
            reasons: list[str] = []
            if isinstance(stats, tablestats.NumericStats):
                d = tablestats.numeric_drift(ref, current, stats.reference_shares())
                row = DriftResult(table=table, column=name, kind="numeric", **d)
                if (row.mean_shift_sd or 0) > config.drift_mean_shift_sd:
                    reasons.append(
                        f"mean moved {row.mean_shift_sd:.2f} reference SDs "
                        f"({ref['mean']:.4g} -> {current['mean']:.4g})"
                    )
            elif isinstance(stats, tablestats.CategoryStats):
                d = tablestats.category_drift(ref, current)
                row = DriftResult(table=table, column=name, kind="categorical", **d)
                if (row.max_share_change or 0) > config.drift_share_change:
                    reasons.append(
                        f"share of {row.category!r} changed by {row.max_share_change:.1%}"
                    )
            else:
                continue
            if (row.psi or 0) > config.drift_psi:
                reasons.append(f"PSI {row.psi:.2f} > {config.drift_psi}")
            ref_missing = missing_share(ref)
            cur_missing = missing_share(current)
            if ref_missing is not None and cur_missing is not None:
                row.null_share_change = cur_missing - ref_missing
                if abs(row.null_share_change) > config.drift_share_change:
                    reasons.append(f"missing share {ref_missing:.1%} -> {cur_missing:.1%}")
            row.flagged, row.reasons = bool(reasons), reasons
            rows.append(row)
    return rows


def _dataset_issues(config: ValidateConfig, names: list[str]) -> list[Issue]:
    """Warnings about the directory itself: unknown files, a table in two formats."""
    issues = []
    known = {f"{n}.{fmt}" for n in names for fmt in FileFormat} | set(SIDE_FILES)
    files = sorted(p.name for p in config.input_dir.iterdir() if not p.name.startswith("."))
    unexpected = [f for f in files if f not in known]
    if unexpected:
        issues.append(
            Issue(
                severity="warning",
                check="unexpected_file",
                message=f"ignored (not a table of {config.use_case}): {', '.join(unexpected)}",
                count=len(unexpected),
            )
        )
    for name in names:
        if {f"{name}.parquet", f"{name}.csv"} <= set(files):
            issues.append(
                Issue(
                    severity="warning",
                    table=name,
                    check="ambiguous_file",
                    message=f"both {name}.parquet and {name}.csv exist; validated the Parquet",
                )
            )
    return issues


def _manifest_issues(config: ValidateConfig, tables: dict[str, TableSummary]) -> list[Issue]:
    path = config.input_dir / "manifest.json"
    if not path.is_file():
        return []
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        return [Issue(severity="warning", check="manifest", message=f"unreadable: {err}")]
    issues = []
    if manifest.get("use_case") not in (None, config.use_case):
        issues.append(
            Issue(
                severity="warning",
                check="manifest",
                message=f"manifest.json is for {manifest['use_case']!r}, not {config.use_case!r}",
            )
        )
    for table, rows in (manifest.get("rows") or {}).items():
        found = tables.get(table)
        if found is not None and found.rows is not None and found.rows != rows:
            issues.append(
                Issue(
                    severity="warning",
                    table=table,
                    check="manifest",
                    message=f"manifest.json says {rows:,} rows, the file has {found.rows:,}",
                )
            )
    return issues


class _Rejected(Exception):
    """Raised inside the atomic output directory so that it is discarded."""


def validate(config: ValidateConfig) -> ValidationReport:
    """Validate the data set in ``config.input_dir`` and write the report.

    Returns:
        The report; ``report.ok`` tells whether the data passed (and was written to
        ``config.output_dir``).

    Raises:
        InputNotFoundError: the input directory or the reference statistics file is missing.
    """
    from perucast.tablecheck import check_table

    started = time.perf_counter()
    created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    use_case = get_use_case(config.use_case)
    if not config.input_dir.is_dir():
        raise InputNotFoundError(f"input directory not found: {config.input_dir}")
    reference = _load_reference(config.reference_stats)
    log.info("validating %s in %s", use_case.name, config.input_dir)

    schemas = [*use_case.tables, use_case.oracle]
    issues = _dataset_issues(config, [s.name for s in schemas])
    results: dict[str, TableResult] = {}
    summaries: dict[str, TableSummary] = {}
    drift: list[DriftResult] = []
    statistics: dict[str, Any] = {
        "format": STATISTICS_FORMAT,
        "use_case": use_case.name,
        "sample_rows": config.sample_rows,
        "tables": {},
    }
    if reference is not None and reference.get("use_case") not in (None, use_case.name):
        issues.append(
            Issue(
                severity="warning",
                check="drift",
                message=f"the reference statistics are of {reference.get('use_case')!r}",
            )
        )
    statistics_path = None
    output = atomic_directory(config.output_dir) if config.output_dir else nullcontext(None)
    try:
        with output as staging:
            for schema in schemas:
                path = table_file(config.input_dir, schema.name)
                if path is None:
                    if schema is not use_case.oracle:  # a bring-your-own set has no oracle
                        summaries[schema.name] = TableSummary(table=schema.name)
                        issues.append(
                            Issue(
                                severity="error",
                                table=schema.name,
                                check="missing_table",
                                message=f"no {schema.name}.parquet or {schema.name}.csv in "
                                f"{config.input_dir}",
                            )
                        )
                    continue
                ok_so_far = not any(i.severity == "error" for i in issues)
                result = check_table(
                    schema,
                    path,
                    config.check_options(),
                    (reference or {}).get("tables", {}).get(schema.name),
                    staging if ok_so_far else None,
                )
                results[schema.name], summaries[schema.name] = result, result.summary
                issues += result.issues
                if result.statistics is not None:
                    statistics["tables"][schema.name] = result.statistics
            issues += _manifest_issues(config, summaries)
            if reference is not None:
                drift = _drift(results, reference, config)
                issues += [
                    Issue(
                        severity="warning",
                        table=d.table,
                        column=d.column,
                        check="drift",
                        message="; ".join(d.reasons),
                    )
                    for d in drift
                    if d.flagged
                ]
            if any(i.severity == "error" for i in issues):
                raise _Rejected
            if staging is not None:
                write_json_atomic(staging / "statistics.json", statistics)
                for name in SIDE_FILES:
                    if (config.input_dir / name).is_file():
                        shutil.copy2(config.input_dir / name, staging / name)
                statistics_path = config.output_dir / "statistics.json"  # type: ignore[operator]
    except _Rejected:
        pass

    errors = [i for i in issues if i.severity == "error"]
    report = ValidationReport(
        use_case=use_case.name,
        ok=not errors,
        input_dir=config.input_dir,
        output_dir=config.output_dir,
        report_dir=config.report_dir,
        reference_stats=config.reference_stats,
        created_at=created_at,
        seconds=round(time.perf_counter() - started, 3),
        tables=summaries,
        errors=errors,
        warnings=[i for i in issues if i.severity == "warning"],
        drift=drift,
        statistics=statistics,
        json_path=config.report_dir / "report.json",
        markdown_path=config.report_dir / "report.md",
        statistics_path=statistics_path,
    )
    write_json_atomic(report.json_path, report.model_dump(mode="json"))
    write_text_atomic(report.markdown_path, render_markdown(report, use_case))
    log.info(
        "%s: %s (%d errors, %d warnings) in %.1fs; report %s",
        use_case.name,
        "valid" if report.ok else "INVALID",
        len(report.errors),
        len(report.warnings),
        report.seconds,
        report.markdown_path,
    )
    return report


# --------------------------------------------------------------------------------------------
# Command line


def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    input_dir: Annotated[
        Path,
        typer.Option(
            "--input", help="Directory with one file per table: <table>.parquet or <table>.csv."
        ),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="Where the validated tables (Parquet) and statistics.json go; replaced "
            "atomically, and only when the data is valid. Omit to only check.",
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Where report.json and report.md go (default: reports/validation/<use case>).",
        ),
    ] = None,
    reference_stats: Annotated[
        Path | None,
        typer.Option(
            "--reference-stats",
            help="statistics.json of an earlier validated set: drift against it is reported.",
        ),
    ] = None,
    example_rows: Annotated[
        int, typer.Option(min=1, max=100, help="Example rows shown per problem.")
    ] = 5,
) -> None:
    """Validate a raw data set against the use case's schemas; write it, validated, or nothing.

    Exit codes: 0 valid, 1 invalid (see the report), 2 usage error, 3 input not found.
    """
    from perucast.logs import setup_logging

    setup_logging()
    try:
        config = ValidateConfig(
            use_case=use_case,
            input_dir=input_dir,
            output_dir=output_dir,
            report_dir=report_dir,
            reference_stats=reference_stats,
            example_rows=example_rows,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        report = validate(config)
    except InputNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND) from None
    typer.echo(report.summary())
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.DATA_INVALID)


app = typer.Typer(add_completion=False, help=__doc__)
app.command()(cli)

if __name__ == "__main__":
    app()
