"""Render a use case's raw table schemas for people (terminal table, Markdown) and machines."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from models.base import TableSchema, UseCase


def schema_dict(use_case: UseCase) -> dict[str, Any]:
    """The schemas as plain data (the ``--format json`` output)."""

    def table(t: TableSchema) -> dict[str, Any]:
        return {
            "name": t.name,
            "description": t.description,
            "keys": list(t.keys),
            "time_column": t.time_column,
            "frequency": t.frequency,
            "columns": [
                {
                    "name": c.name,
                    "type": c.dtype,
                    "unit": c.unit,
                    "min": c.min,
                    "max": c.max,
                    "allowed": list(c.allowed) if c.allowed else None,
                    "max_null_share": c.max_null_share,
                    "description": c.description,
                }
                for c in t.columns
            ],
        }

    return {
        "use_case": use_case.name,
        "title": use_case.title,
        "target": {"table": use_case.target.table, "column": use_case.target.column},
        "tables": [table(t) for t in (*use_case.tables, use_case.oracle)],
    }


def _cadence(t: TableSchema) -> str:
    if t.frequency == "inferred":
        return "; cadence set by the data set (daily, 8-day or monthly composites)"
    if t.frequency:
        return f"; one row per series every {t.frequency}"
    return "; irregular in time"


def _key_mark(t: TableSchema, column: str) -> str:
    return "key" if column in t.keys else ""


def print_schema_table(use_case: UseCase, console: Console | None = None) -> None:
    """Print one rich table per raw table (the default ``perucast data schema`` output)."""
    console = console or Console()
    console.print(f"[bold]{use_case.name}[/bold]: {use_case.title}")
    console.print(f"target: {use_case.target.table}.{use_case.target.column}\n")
    for t in (*use_case.tables, use_case.oracle):
        freq = _cadence(t)
        grid = Table(
            title=f"{t.name} — {t.description}",
            caption=f"keys: {', '.join(t.keys)}{freq}",
            title_justify="left",
        )
        for header in ("column", "type", "unit", "allowed", "nulls", "key", "description"):
            grid.add_column(header, overflow="fold")
        for c in t.columns:
            grid.add_row(
                c.name,
                c.dtype,
                c.unit,
                c.range_text(),
                f"≤{c.max_null_share:.0%}" if c.max_null_share else "none",
                _key_mark(t, c.name),
                c.description,
            )
        console.print(grid)
        console.print()


def schema_markdown(use_case: UseCase) -> str:
    """The schemas as Markdown tables (used in the README's 'bring your own data')."""
    lines = [f"### {use_case.name}: {use_case.title}", ""]
    for t in (*use_case.tables, use_case.oracle):
        lines += [
            f"**`{t.name}`** — {t.description}. Keys: {', '.join(f'`{k}`' for k in t.keys)}"
            + _cadence(t)
            + ".",
            "",
            "| column | type | unit | allowed | nulls | description |",
            "|---|---|---|---|---|---|",
        ]
        for c in t.columns:
            nulls = f"≤{c.max_null_share:.0%}" if c.max_null_share else "none"
            cells = [f"`{c.name}`", c.dtype, c.unit, c.range_text(), nulls, c.description]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def schema_json(use_case: UseCase) -> str:
    return json.dumps(schema_dict(use_case), indent=2, default=str)
