"""The validation report: its data model (``report.json``) and its Markdown (``report.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.base import TableSchema, UseCase


def plural(n: int, word: str) -> str:
    """``1 error``, ``3 errors``."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


class Issue(BaseModel):
    """One problem found: an error fails validation, a warning does not.

    ``examples`` are rows of the file: ``row`` is the 0-based position in the table, ``line`` the
    line in a CSV file (the header is line 1), then the row's key values and the offending value.
    """

    severity: Literal["error", "warning"]
    table: str | None = None
    column: str | None = None
    check: str
    message: str
    count: int | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list)

    def one_line(self) -> str:
        where = ".".join(p for p in (self.table, self.column) if p) or "data set"
        return f"{self.severity} {where} [{self.check}]: {self.message}"


class TableSummary(BaseModel):
    """What was found in one table file."""

    table: str
    file: str | None = None
    format: str | None = None
    bytes: int | None = None
    rows: int | None = None
    columns: list[str] = Field(default_factory=list)
    duplicate_keys: int | None = None
    series: int | None = None
    series_with_gaps: int | None = None
    missing_periods: int | None = None
    cadence: str | None = None
    seconds: float = 0.0


class DriftResult(BaseModel):
    """Drift of one column against the reference statistics."""

    table: str
    column: str
    kind: Literal["numeric", "categorical"]
    mean_shift_sd: float | None = None
    psi: float | None = None
    max_share_change: float | None = None
    category: str | None = None
    null_share_change: float | None = None
    flagged: bool = False
    reasons: list[str] = Field(default_factory=list)


class ValidationReport(BaseModel):
    """The outcome of a validation: ``ok``, the problems, per-table summaries and statistics."""

    use_case: str
    ok: bool
    input_dir: Path
    output_dir: Path | None
    report_dir: Path
    reference_stats: Path | None = None
    created_at: str
    seconds: float
    tables: dict[str, TableSummary]
    errors: list[Issue]
    warnings: list[Issue]
    drift: list[DriftResult] = Field(default_factory=list)
    statistics: dict[str, Any]
    json_path: Path
    markdown_path: Path
    statistics_path: Path | None = None

    def issues(self, check: str | None = None, table: str | None = None) -> list[Issue]:
        """Errors and warnings, optionally only of one check and/or table."""
        return [
            i
            for i in (*self.errors, *self.warnings)
            if (check is None or i.check == check) and (table is None or i.table == table)
        ]

    def summary(self, limit: int = 20) -> str:
        """A few lines for the terminal: the verdict, then each problem on one line."""
        rows = sum(t.rows or 0 for t in self.tables.values())
        verdict = "valid" if self.ok else "INVALID"
        lines = [
            f"{self.use_case}: {verdict} — {len(self.tables)} tables, {rows:,} rows, "
            f"{plural(len(self.errors), 'error')}, {plural(len(self.warnings), 'warning')}"
        ]
        issues = [*self.errors, *self.warnings]
        lines += [f"  {issue.one_line()}" for issue in issues[:limit]]
        if len(issues) > limit:
            lines.append(f"  … and {len(issues) - limit} more in the report")
        if self.ok and self.output_dir is not None:
            lines.append(f"validated data: {self.output_dir}")
        elif not self.ok and self.output_dir is not None:
            lines.append(f"nothing was written to {self.output_dir}")
        lines.append(f"report: {self.markdown_path}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Markdown


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN
            return "NaN"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def _examples(examples: list[dict[str, Any]]) -> list[str]:
    if not examples:
        return []
    header: list[str] = []
    for example in examples:
        header += [k for k in example if k not in header]
    return ["", *_table(header, [[e.get(h) for h in header] for e in examples])]


def _issues(title: str, issues: list[Issue]) -> list[str]:
    out = [f"## {title} ({len(issues)})", ""]
    if not issues:
        return [*out, "None.", ""]
    for n, issue in enumerate(issues, 1):
        where = ".".join(p for p in (issue.table, issue.column) if p) or "data set"
        out += [f"{n}. **{where}** `{issue.check}`: {issue.message}"]
        out += ["   " + line for line in _examples(issue.examples)]
        out.append("")
    return out


def missing_share(stats: dict[str, Any]) -> float | None:
    """Share of null or NaN values in a column's statistics."""
    missing = stats.get("nulls", 0) + stats.get("nans", 0)
    total = stats.get("count", 0) + missing
    return missing / total if total else None


def _column_rows(schema: TableSchema | None, stats: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, s in stats.get("columns", {}).items():
        col = None
        if schema is not None and name in schema.column_names:
            col = schema.column(name)
        share = missing_share(s)
        q = s.get("quantiles", {})
        rows.append(
            [
                name,
                col.dtype if col else "",
                s.get("count"),
                s.get("nulls", 0) + s.get("nans", 0),
                f"{share:.1%}" if share is not None else "",
                s.get("min"),
                s.get("max"),
                s.get("mean"),
                s.get("std"),
                q.get("0.5"),
                s.get("distinct"),
                col.range_text() if col else "",
            ]
        )
    return rows


def render_markdown(report: ValidationReport, use_case: UseCase | None = None) -> str:
    """The report for people: verdict, problems with example rows, tables, statistics, drift."""
    verdict = "**VALID**" if report.ok else "**INVALID**"
    out = [
        f"# Validation of {report.use_case}",
        "",
        f"{verdict}: {plural(len(report.errors), 'error')}, "
        f"{plural(len(report.warnings), 'warning')}.",
        "",
        f"- input: `{report.input_dir}`",
    ]
    if report.output_dir is not None:
        written = "written" if report.ok else "nothing written: the data is invalid"
        out.append(f"- output: `{report.output_dir}` ({written})")
    if report.reference_stats is not None:
        out.append(f"- drift reference: `{report.reference_stats}`")
    out += [f"- validated {report.created_at} in {report.seconds:.1f}s", ""]
    out += _issues("Errors", report.errors)
    out += _issues("Warnings", report.warnings)

    out += ["## Tables", ""]
    out += _table(
        ["table", "file", "rows", "duplicate keys", "series", "series with gaps", "cadence"],
        [
            [
                t.table,
                t.file or "missing",
                t.rows,
                t.duplicate_keys,
                t.series,
                t.series_with_gaps,
                t.cadence,
            ]
            for t in report.tables.values()
        ],
    )
    out.append("")
    sample = report.statistics.get("sample_rows")
    for name, stats in report.statistics.get("tables", {}).items():
        schema = None
        if use_case is not None:
            try:
                schema = use_case.table(name)
            except KeyError:
                schema = None
        out += [f"### {name}", ""]
        time = stats.get("time")
        if time:
            out += [
                f"{stats.get('rows', 0):,} rows; {time['column']} from {time['first']} to "
                f"{time['last']} ({time['periods']} distinct values).",
                "",
            ]
        else:
            out += [f"{stats.get('rows', 0):,} rows.", ""]
        out += _table(
            [
                "column",
                "type",
                "count",
                "missing",
                "missing %",
                "min",
                "max",
                "mean",
                "std",
                "median",
                "distinct",
                "allowed",
            ],
            _column_rows(schema, stats),
        )
        out.append("")
    if sample:
        out += [
            f"Count, missing, min, max, mean and std are exact. Quantiles (median) are exact for "
            f"tables of at most {sample:,} rows, otherwise computed on a uniform sample of "
            f"{sample:,} rows.",
            "",
        ]

    if report.drift:
        out += ["## Drift against the reference", ""]
        out += _table(
            ["table", "column", "mean shift (ref. SD)", "PSI", "largest share change", "flagged"],
            [
                [
                    d.table,
                    d.column,
                    d.mean_shift_sd,
                    d.psi,
                    (
                        f"{d.max_share_change:.1%} ({d.category})"
                        if d.max_share_change is not None
                        else None
                    ),
                    "; ".join(d.reasons) if d.flagged else "no",
                ]
                for d in report.drift
            ],
        )
        out.append("")
    return "\n".join(out) + "\n"
