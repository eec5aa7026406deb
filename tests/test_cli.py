"""The ``perucast`` command line: help everywhere, schemas, and exit codes scripts can rely on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models import get_use_case
from perucast.cli import app
from perucast.exitcodes import ExitCode

runner = CliRunner()
PERUCAST = shutil.which("perucast", path=str(Path(sys.executable).parent)) or "perucast"


def test_console_script_is_installed_and_shows_help() -> None:
    proc = subprocess.run([PERUCAST, "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "data" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["data", "--help"],
        ["data", "schema", "--help"],
        ["data", "generate", "--help"],
        ["data", "validate", "--help"],
        ["data", "ingest", "--help"],
        ["data", "preprocess", "--help"],
        ["serve", "--help"],
        ["predict", "--help"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.OK, result.output
    assert "Usage" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == ExitCode.OK
    assert result.output.startswith("perucast ")


@pytest.mark.parametrize("use_case", ["crop_demand", "fish_stock"])
def test_schema_table_names_every_table_column_and_unit(use_case: str) -> None:
    result = runner.invoke(app, ["data", "schema", use_case], env={"COLUMNS": "200"})
    assert result.exit_code == ExitCode.OK, result.output
    uc = get_use_case(use_case)
    for table in (*uc.tables, uc.oracle):
        assert table.name in result.output
        for column in table.columns:
            assert column.name in result.output
            if column.unit:
                assert column.unit in result.output


def test_schema_json_round_trips_the_schema() -> None:
    result = runner.invoke(app, ["data", "schema", "fish_stock", "--format", "json"])
    assert result.exit_code == ExitCode.OK
    payload = json.loads(result.output)
    uc = get_use_case("fish_stock")
    assert [t["name"] for t in payload["tables"]] == [*uc.table_names, "oracle"]
    stock = next(t for t in payload["tables"] if t["name"] == "stock")
    assert stock["keys"] == ["month", "zone"]
    biomass = next(c for c in stock["columns"] if c["name"] == "biomass_tonnes")
    assert (biomass["type"], biomass["unit"]) == ("float64", "t")


def test_schema_markdown_has_a_table_per_raw_table() -> None:
    result = runner.invoke(app, ["data", "schema", "crop_demand", "--format", "markdown"])
    assert result.exit_code == ExitCode.OK
    assert result.output.count("| column | type | unit |") == 4  # 3 raw tables + oracle


def test_unknown_use_case_is_a_usage_error() -> None:
    result = runner.invoke(app, ["data", "schema", "bananas"])
    assert result.exit_code == ExitCode.USAGE
    assert "unknown use case 'bananas'" in result.output


def test_generate_writes_the_data_set_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    result = runner.invoke(
        app,
        [
            "data",
            "generate",
            "--use-case",
            "fish_stock",
            "--scale",
            "tiny",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == ExitCode.OK, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == {"seed": 3, "scale": "tiny"}
    assert set(manifest["rows"]) == {"satellite", "sonar", "stock", "oracle"}
    for table, rows in manifest["rows"].items():
        assert rows > 0
        assert (out / f"{table}.parquet").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    # typer names the option but does not echo a rejected number back: expect "--seed".
    [(["--scale", "huge"], "huge"), (["--seed", "-1"], "--seed"), (["--use-case", "x"], "unknown")],
)
def test_generate_rejects_bad_options_with_usage_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    base = {"--use-case": "crop_demand", "--scale": "tiny", "--out": str(tmp_path / "o")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [part for pair in base.items() for part in pair]
    result = runner.invoke(app, ["data", "generate", *flat])
    assert result.exit_code == ExitCode.USAGE
    assert message in result.output
    assert not (tmp_path / "o").exists()


def test_step_cli_runs_as_a_module(tmp_path: Path) -> None:
    """dvc.yaml and the pods call ``python -m components.<step>``: check one for real."""
    out = tmp_path / "raw"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.generate",
            "--use-case",
            "crop_demand",
            "--scale",
            "tiny",
            "--out",
            str(out),
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PERUCAST_LOG": "WARNING"},
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert (out / "historical_demand.csv").is_file()
    assert "rows" in proc.stdout


def test_make_help_documents_the_readme_targets() -> None:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["make", "-s", "help"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    documented = {line.split()[0] for line in plain.splitlines()[1:] if line.strip()}
    assert {"install", "demo", "test", "bench", "lint"} <= documented, plain
