"""The ``perucast`` command line: one entry point for people.

Exit codes (``perucast.exitcodes.ExitCode``): 0 ok, 1 data invalid, 2 usage error,
3 input not found.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from components import generate as generate_step
from components import ingest as ingest_step
from components import preprocess as preprocess_step
from components import validate as validate_step
from models import USE_CASE_NAMES, get_use_case
from perucast import __version__
from perucast.exitcodes import ExitCode
from pipelines import cli as pipeline_cli

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
app.add_typer(pipeline_cli.app, name="pipeline")
app.command("monitor")(pipeline_cli.monitor)


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


# --- serving -----------------------------------------------------------------------------------


def model_directories(repository: Path) -> dict[str, list[int]]:
    """The models of a repository: each subdirectory holding numeric versions, by name."""
    from perucast.export import versions

    found = {}
    for child in sorted(repository.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            numbers = versions(child)
            if numbers:
                found[child.name] = numbers
    return found


def model_server_config_text(repository: Path, names: list[str]) -> str:
    """A text-format ``tensorflow.serving.ModelServerConfig`` serving ``names`` of a repository."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name in names:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = str((repository / name).resolve())
        entry.model_platform = "tensorflow"
    return text_format.MessageToString(config)


@app.command("serve")
def serve(
    model_repository: Annotated[
        Path,
        typer.Option(
            "--model-repository",
            help="Directory with one subdirectory per model (<name>/<version>/saved_model.pb).",
        ),
    ],
    port: Annotated[int, typer.Option(help="gRPC port.", min=0, max=65535)] = 8500,
    rest_port: Annotated[
        int, typer.Option("--rest-port", help="HTTP/REST port; 0 disables it.", min=0, max=65535)
    ] = 8501,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Batch concurrent requests.")
    ] = False,
    processes: Annotated[
        int, typer.Option(help="Server processes sharing the ports.", min=1, max=64)
    ] = 1,
    poll_seconds: Annotated[
        int,
        typer.Option(
            "--poll-seconds",
            help="Seconds between scans for new model versions; 0 scans once.",
            min=0,
        ),
    ] = 1,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model", help="Serve only this model (repeat for several); default: every model."
        ),
    ] = None,
    ssl_config: Annotated[
        Path | None,
        typer.Option(
            "--ssl-config",
            help="Text-format tensorflow.serving.SSLConfig: serve gRPC over (mutual) TLS.",
        ),
    ] = None,
) -> None:
    """Serve a model repository with perucast-model-server (TF Serving's API) in the foreground.

    Every subdirectory holding numbered versions is a model named after it. Ctrl-C or SIGTERM
    drains requests in flight and stops. Exit codes: 0 stopped cleanly, 1 server failure,
    2 usage error, 3 repository or model not found.
    """
    import shutil
    import tempfile

    if not model_repository.is_dir():
        typer.echo(f"error: model repository {model_repository} is not a directory", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND)
    found = model_directories(model_repository)
    names = list(dict.fromkeys(models)) if models else list(found)
    unknown = [name for name in names if name not in found]
    if unknown or not names:
        what = f"models {unknown}" if unknown else "no model"
        typer.echo(
            f"error: {what} with numbered versions under {model_repository} "
            f"(found: {', '.join(found) or 'none'})",
            err=True,
        )
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND)
    if ssl_config is not None and not ssl_config.is_file():
        typer.echo(f"error: SSL config {ssl_config} not found", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND)
    if rest_port and rest_port == port:
        raise typer.BadParameter("must differ from --port", param_hint="--rest-port")

    workdir = Path(tempfile.mkdtemp(prefix="perucast-serve-"))
    try:
        config_file = workdir / "models.config"
        config_file.write_text(model_server_config_text(model_repository, names))
        flags = [
            f"--port={port}",
            f"--rest_api_port={rest_port}",
            f"--model_config_file={config_file}",
            f"--file_system_poll_wait_seconds={poll_seconds}",
            f"--enable_batching={'true' if batching else 'false'}",
            f"--num_server_processes={processes}",
        ]
        if ssl_config is not None:
            flags.append(f"--ssl_config_file={ssl_config.resolve()}")
        for name in names:
            versions_text = ", ".join(str(v) for v in found[name])
            typer.echo(f"serving {name} (versions {versions_text}) on gRPC port {port}", err=True)
        from serving.server import main as server_main

        code = server_main(flags)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raise typer.Exit(code)


def _read_features(path: Path, rows: int | None):
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".parquet" or path.is_dir():
        frame = pd.read_parquet(path)
    elif suffix in (".csv", ".gz"):
        frame = pd.read_csv(path)
    else:
        raise typer.BadParameter("must be a .csv or .parquet file", param_hint="--features")
    return frame.head(rows) if rows is not None else frame


def _print_forecast(frame, title: str, show: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=None)
    for column in frame.columns:
        numeric = column in ("horizon", "p10", "p50", "p90")
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.head(show).itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            if column in ("p10", "p50", "p90"):
                cells.append(f"{value:,.2f}")
            elif hasattr(value, "date") and column in ("origin", "target_time"):
                cells.append(str(value.date()))
            else:
                cells.append(str(value))
        table.add_row(*cells)
    if len(frame) > show:
        table.caption = f"first {show} of {len(frame)} rows (--show, --out for all)"
    Console().print(table)


@app.command("predict")
def predict(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    features: Annotated[
        Path, typer.Option(help="Raw feature rows: a .csv or .parquet file (one column per input).")
    ],
    target: Annotated[str, typer.Option(help="host:port of the model server's gRPC API.")] = (
        "localhost:8500"
    ),
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="Model name (default: the use case).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Model version (default: the latest).", min=1)
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Version label, e.g. stable (instead of --version).")
    ] = None,
    rows: Annotated[
        int | None, typer.Option(help="Forecast only the first N feature rows.", min=1)
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the long forecast frame to this CSV file.")
    ] = None,
    show: Annotated[int, typer.Option(help="Table rows printed.", min=0)] = 50,
    timeout: Annotated[float, typer.Option(help="Deadline of each call, in seconds.")] = 30.0,
    ca_cert: Annotated[
        Path | None, typer.Option("--ca-cert", help="PEM of the CA of the server (TLS).")
    ] = None,
    client_cert: Annotated[
        Path | None, typer.Option("--client-cert", help="PEM client certificate (mutual TLS).")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option("--client-key", help="PEM key of --client-cert.")
    ] = None,
) -> None:
    """Forecast rows of raw features with a served model and print P10/P50/P90 per horizon.

    Columns the model does not take (e.g. targets) are ignored. Exit codes: 0 ok, 1 the
    features do not fit the model or the server failed (its message is printed), 2 usage
    error, 3 features file not found.
    """
    if use_case not in USE_CASE_NAMES:
        raise typer.BadParameter(
            f"unknown use case {use_case!r}; known: {', '.join(USE_CASE_NAMES)}",
            param_hint="--use-case",
        )
    if version is not None and label is not None:
        raise typer.BadParameter("give --version or --label, not both", param_hint="--label")
    if not features.exists():
        typer.echo(f"error: features file {features} not found", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND)
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the gRPC stubs import TensorFlow
    from serving.client import ForecastClient, ServingClientError, TLSOptions

    tls = None
    if ca_cert or client_cert or client_key:
        try:
            tls = TLSOptions.from_files(ca_cert, client_cert, client_key)
        except (OSError, ValueError) as err:
            raise typer.BadParameter(str(err), param_hint="--ca-cert/--client-cert") from None
    try:
        frame = _read_features(features, rows)
    except (OSError, ValueError) as err:
        typer.echo(f"error: cannot read {features}: {err}", err=True)
        raise typer.Exit(ExitCode.DATA_INVALID) from None
    try:
        with ForecastClient(
            target,
            use_case=use_case,
            model_name=model_name,
            version=version,
            label=label,
            timeout_s=timeout,
            tls=tls,
        ) as client:
            forecast = client.predict(frame, ignore_extra=True)
    except ServingClientError as err:
        typer.echo(f"error: the model server answered {err.code.name}: {err.details}", err=True)
        raise typer.Exit(ExitCode.DATA_INVALID) from None
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.DATA_INVALID) from None
    long = forecast.to_frame()
    spec = forecast.model_spec
    _print_forecast(
        long, f"{use_case}: {spec.name} version {spec.version} ({len(forecast)} rows)", show
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        long.to_csv(out, index=False)
        typer.echo(f"wrote {len(long)} rows to {out}", err=True)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
