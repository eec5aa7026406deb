"""The ``perucast`` command line: one entry point for people.

Exit codes (``perucast.exitcodes.ExitCode``): 0 ok, 1 data invalid, 2 usage error,
3 input not found.
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from components import generate as generate_step
from components import ingest as ingest_step
from components import preprocess as preprocess_step
from components import validate as validate_step
from models import USE_CASE_NAMES, get_use_case
from perucast import __version__
from perucast.exitcodes import ExitCode

app = typer.Typer(
    name="perucast",
    help="Forecasting for Peru's food supply chains: crop demand and anchoveta stock.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Data: generate synthetic sets, ingest, validate, build Spark features, show schemas.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"perucast {__version__}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """perucast: forecasting for Peru's food supply chains."""


class SchemaFormat(enum.StrEnum):
    TABLE = "table"
    MARKDOWN = "markdown"
    JSON = "json"


@data_app.command("schema")
def schema(
    use_case: Annotated[str, typer.Argument(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    fmt: Annotated[SchemaFormat, typer.Option("--format", help="Output format.")] = (
        SchemaFormat.TABLE
    ),
) -> None:
    """Print the raw table schemas of a use case: columns, types, units, keys, allowed ranges."""
    from perucast.schema_view import print_schema_table, schema_json, schema_markdown

    try:
        uc = get_use_case(use_case)
    except KeyError as err:
        raise typer.BadParameter(str(err.args[0]), param_hint="USE_CASE") from None
    if fmt is SchemaFormat.JSON:
        typer.echo(schema_json(uc))
    elif fmt is SchemaFormat.MARKDOWN:
        typer.echo(schema_markdown(uc))
    else:
        print_schema_table(uc)


data_app.command("generate")(generate_step.cli)
data_app.command("ingest")(ingest_step.cli)
data_app.command("validate")(validate_step.cli)
data_app.command("preprocess")(preprocess_step.cli)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
