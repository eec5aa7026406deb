"""The validate step: valid data passes whole; every class of bad input is rejected by name.

Most tests run on small hand-built tables (``tests/factories.py``), break one thing and check that
the report names the table, the column and example rows, and that nothing reaches the output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from factories import valid_frame, write_dataset, write_table
from typer.testing import CliRunner

from components.validate import InputNotFoundError, ValidateConfig, validate
from models import get_use_case
from perucast.cli import app
from perucast.exitcodes import ExitCode
from perucast.validation_report import Issue, ValidationReport

CROP = get_use_case("crop_demand")
FISH = get_use_case("fish_stock")
DEMAND = CROP.table("historical_demand")


def _run(input_dir: Path, tmp_path: Path, use_case: str = "crop_demand", **kw) -> ValidationReport:
    return validate(
        ValidateConfig(
            use_case=use_case,
            input_dir=input_dir,
            output_dir=tmp_path / "out",
            report_dir=tmp_path / "report",
            **kw,
        )
    )


def _rejected(
    report: ValidationReport, tmp_path: Path, check: str, table: str, column: str | None = None
) -> Issue:
    """The report fails with ``check`` on ``table``/``column``, and nothing was written."""
    assert not report.ok
    found = [i for i in report.errors if (i.check, i.table, i.column) == (check, table, column)]
    assert found, report.summary()
    issue = found[0]
    assert issue.message
    if column is not None:
        assert column in issue.message
    assert (f"{table}.{column}" if column else table) in issue.one_line()
    # Nothing in the output directory, the report written for both audiences.
    out = tmp_path / "out"
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == ["previous.txt"]
    assert json.loads(report.json_path.read_text())["ok"] is False
    markdown = report.markdown_path.read_text()
    assert "INVALID" in markdown and check in markdown and table in markdown
    return issue


@pytest.fixture
def crop_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    write_dataset("crop_demand", raw)
    return raw


@pytest.fixture
def previous_output(tmp_path: Path) -> Path:
    """An output directory from an earlier run, which a failed validation must leave alone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("earlier validated set\n")
    return out


def _rewrite(
    raw: Path, frame: pd.DataFrame, table: str = "historical_demand", fmt: str = "parquet"
):
    schema = CROP.table(table) if table in CROP.table_names else None
    for old in raw.glob(f"{table}.*"):
        old.unlink()
    return write_table(frame, raw, table, fmt, schema)


# ---------------------------------------------------------------------------------------------
# Valid data


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_valid_set_is_written_with_statistics_and_reports(tmp_path: Path, fmt: str) -> None:
    raw = tmp_path / "raw"
    frames = write_dataset("crop_demand", raw, fmt, oracle=True, series=3, periods=8)
    (raw / "manifest.json").write_text(json.dumps({"use_case": "crop_demand", "rows": {}}))
    report = _run(raw, tmp_path)

    assert report.ok, report.summary()
    assert report.errors == [] and report.warnings == []
    out = tmp_path / "out"
    expected = {f"{t}.parquet" for t in frames} | {"statistics.json", "manifest.json"}
    assert {p.name for p in out.iterdir()} == expected
    for name, frame in frames.items():
        table = pq.read_table(out / f"{name}.parquet")
        assert table.schema.equals(CROP.table(name).arrow_schema())
        pd.testing.assert_frame_equal(table.to_pandas(), frame, check_dtype=False)

    stats = json.loads((out / "statistics.json").read_text())
    assert stats == report.statistics
    demand = frames["historical_demand"]
    entry = stats["tables"]["historical_demand"]
    assert entry["rows"] == len(demand)
    assert entry["time"] == {
        "column": "week_start",
        "first": demand["week_start"].min().isoformat(),
        "last": demand["week_start"].max().isoformat(),
        "periods": 8,
        "frequency": "W-MON",
        "series": 9,
    }
    for column in ("demand_tonnes", "supply_tonnes"):
        got, values = entry["columns"][column], demand[column]
        assert got["count"] == values.count() and got["nulls"] == 0 and got["nans"] == 0
        assert got["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert got["std"] == pytest.approx(values.std(), rel=1e-9)
        assert (got["min"], got["max"]) == (values.min(), values.max())
        for q in ("0.05", "0.5", "0.95"):
            assert got["quantiles"][q] == pytest.approx(values.quantile(float(q)), rel=1e-12)
        assert got["quantiles_exact"] is True
    assert entry["columns"]["region"]["values"] == demand["region"].value_counts().to_dict()

    saved = json.loads(report.json_path.read_text())
    assert saved["ok"] is True
    assert saved["tables"]["weather"]["rows"] == len(frames["weather"])
    markdown = report.markdown_path.read_text()
    assert "**VALID**" in markdown
    for name, frame in frames.items():
        assert f"### {name}" in markdown
        assert f"| {name} | {name}.{fmt} | {len(frame)} |" in markdown


def test_fish_stock_with_allowed_missing_chlorophyll_and_no_oracle(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    satellite = valid_frame(FISH.table("satellite"), series=4, periods=5)
    satellite.loc[::5, "chlorophyll_mg_m3"] = np.nan  # 20 % under clouds: allowed (25 %)
    write_dataset("fish_stock", raw, frames={"satellite": satellite})
    report = _run(raw, tmp_path, use_case="fish_stock")
    assert report.ok, report.summary()
    assert set(report.tables) == {"satellite", "sonar", "stock"}  # no oracle: fine
    chl = report.statistics["tables"]["satellite"]["columns"]["chlorophyll_mg_m3"]
    assert chl["nulls"] + chl["nans"] == satellite["chlorophyll_mg_m3"].isna().sum() == 4
    assert chl["mean"] == pytest.approx(satellite["chlorophyll_mg_m3"].mean())
    assert not (tmp_path / "out" / "oracle.parquet").exists()


def test_small_batches_stream_to_the_same_result(tmp_path: Path) -> None:
    """Statistics merge exactly across batches; the quantile sample stays bounded."""
    raw = tmp_path / "raw"
    frames = write_dataset("crop_demand", raw, series=4, periods=20)  # 320 demand rows
    # Sorted by demand: a sample that kept only the first rows would have a far too low median.
    _rewrite(raw, frames["historical_demand"].sort_values("demand_tonnes", ignore_index=True))
    whole = _run(raw, tmp_path / "a")
    streamed = _run(raw, tmp_path / "b", batch_rows=7, sample_rows=100)
    assert whole.ok and streamed.ok, streamed.summary()
    a = whole.statistics["tables"]["historical_demand"]["columns"]["demand_tonnes"]
    b = streamed.statistics["tables"]["historical_demand"]["columns"]["demand_tonnes"]
    for key in ("count", "min", "max"):
        assert a[key] == b[key]
    assert b["mean"] == pytest.approx(a["mean"], rel=1e-12)
    assert b["std"] == pytest.approx(a["std"], rel=1e-9)
    assert b["quantiles_exact"] is False  # 320 rows > sample of 100
    values = frames["historical_demand"]["demand_tonnes"]
    assert abs(b["quantiles"]["0.5"] - values.median()) < 0.25 * values.std()
    for name in frames:
        assert pq.read_table(tmp_path / "b" / "out" / f"{name}.parquet").equals(
            pq.read_table(tmp_path / "a" / "out" / f"{name}.parquet")
        )


def test_common_variants_of_valid_files_are_accepted(crop_raw: Path, tmp_path: Path) -> None:
    """Parquet written by pandas (timestamp dates, dictionary strings, float32, integers for
    floats) and CSV with a BOM, CRLF line ends, quotes and columns in another order."""
    demand = valid_frame(DEMAND)
    table = pa.table(
        {
            "week_start": pa.array(pd.to_datetime(demand["week_start"])),  # timestamp[ns]
            "region": pa.array(demand["region"]).dictionary_encode(),
            "crop": pa.array(demand["crop"]),
            "demand_tonnes": pa.array(demand["demand_tonnes"], pa.float32()),
            "supply_tonnes": pa.array(demand["supply_tonnes"].round().astype("int64")),
        }
    )
    pq.write_table(table, crop_raw / "historical_demand.parquet")
    weather = valid_frame(CROP.table("weather"))
    text = weather[weather.columns[::-1]].to_csv(index=False, quoting=1, lineterminator="\r\n")
    (crop_raw / "weather.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (crop_raw / "weather.parquet").unlink()
    report = _run(crop_raw, tmp_path)
    assert report.ok, report.summary()
    out = pq.read_table(tmp_path / "out" / "historical_demand.parquet")
    assert out.schema.equals(DEMAND.arrow_schema())
    assert out.column("week_start").to_pylist() == demand["week_start"].tolist()
    assert pq.read_table(tmp_path / "out" / "weather.parquet").to_pandas().equals(weather)

    # A timestamp with a time of day is not a date.
    times = table.column("week_start").to_pylist()
    times[2] += pd.Timedelta(hours=5)
    table = table.set_column(0, "week_start", pa.array(times, pa.timestamp("ns")))
    pq.write_table(table, crop_raw / "historical_demand.parquet")
    again = tmp_path / "again"
    issue = _rejected(_run(crop_raw, again), again, "type", "historical_demand", "week_start")
    assert issue.examples[0]["row"] == 2


def test_success_replaces_an_earlier_output(crop_raw: Path, tmp_path: Path, previous_output):
    report = _run(crop_raw, tmp_path)
    assert report.ok
    assert not (previous_output / "previous.txt").exists()
    assert (previous_output / "historical_demand.parquet").is_file()
    assert report.statistics_path == previous_output / "statistics.json"


# ---------------------------------------------------------------------------------------------
# Rejected input: one test per class


def test_missing_column(crop_raw: Path, tmp_path: Path, previous_output: Path) -> None:
    weather = valid_frame(CROP.table("weather")).drop(columns=["precip_mm"])
    _rewrite(crop_raw, weather, "weather")
    issue = _rejected(_run(crop_raw, tmp_path), tmp_path, "missing_column", "weather", "precip_mm")
    assert "temp_mean_c" in issue.message  # says what the file has instead


def test_extra_column(crop_raw: Path, tmp_path: Path) -> None:
    weather = valid_frame(CROP.table("weather")).assign(humidity_pct=55.0)
    _rewrite(crop_raw, weather, "weather")
    _rejected(_run(crop_raw, tmp_path), tmp_path, "extra_column", "weather", "humidity_pct")


def test_csv_text_in_a_numeric_column(crop_raw: Path, tmp_path: Path) -> None:
    demand = valid_frame(DEMAND).astype({"demand_tonnes": object})
    demand.loc[3, "demand_tonnes"] = "n/d"
    demand.loc[7, "demand_tonnes"] = "1.234,5"
    demand.to_csv(crop_raw / "historical_demand.csv", index=False)
    (crop_raw / "historical_demand.parquet").unlink()
    issue = _rejected(
        _run(crop_raw, tmp_path), tmp_path, "type", "historical_demand", "demand_tonnes"
    )
    assert issue.count == 2 and "float64" in issue.message
    first = issue.examples[0]
    assert (first["row"], first["line"], first["demand_tonnes"]) == (3, 5, "n/d")
    assert first["region"] == demand.loc[3, "region"]  # the row's key, to find it
    assert issue.examples[1]["demand_tonnes"] == "1.234,5"


def test_csv_unparseable_date(crop_raw: Path, tmp_path: Path) -> None:
    demand = valid_frame(DEMAND).astype({"week_start": object})
    demand.loc[2, "week_start"] = "06/01/2020"
    demand.to_csv(crop_raw / "historical_demand.csv", index=False)
    (crop_raw / "historical_demand.parquet").unlink()
    issue = _rejected(_run(crop_raw, tmp_path), tmp_path, "type", "historical_demand", "week_start")
    assert "YYYY-MM-DD" in issue.message
    assert issue.examples[0]["line"] == 4 and issue.examples[0]["week_start"] == "06/01/2020"


def test_parquet_column_of_the_wrong_arrow_type(crop_raw: Path, tmp_path: Path) -> None:
    demand = valid_frame(DEMAND)
    demand["supply_tonnes"] = demand["supply_tonnes"].map(lambda v: f"{v:.1f} t")
    write_table(demand, crop_raw, "historical_demand")  # no schema: strings stay strings
    issue = _rejected(
        _run(crop_raw, tmp_path), tmp_path, "type", "historical_demand", "supply_tonnes"
    )
    assert "string" in issue.message and "float64" in issue.message
    assert issue.examples[0]["supply_tonnes"].endswith(" t")


def test_value_out_of_range(crop_raw: Path, tmp_path: Path) -> None:
    demand = valid_frame(DEMAND)
    demand.loc[1, "demand_tonnes"] = -5.0
    _rewrite(crop_raw, demand)
    issue = _rejected(
        _run(crop_raw, tmp_path), tmp_path, "out_of_range", "historical_demand", "demand_tonnes"
    )
    assert "[0, 2000000]" in issue.message and "-5" in issue.message
    assert issue.examples == [
        {
            "row": 1,
            "week_start": demand.loc[1, "week_start"].isoformat(),
            "region": demand.loc[1, "region"],
            "crop": demand.loc[1, "crop"],
            "demand_tonnes": -5.0,
        }
    ]


def test_value_outside_the_vocabulary(crop_raw: Path, tmp_path: Path) -> None:
    weather = valid_frame(CROP.table("weather"))
    weather.loc[0, "region"] = "Lima"
    _rewrite(crop_raw, weather, "weather")
    issue = _rejected(_run(crop_raw, tmp_path), tmp_path, "vocabulary", "weather", "region")
    assert "'Lima'" in issue.message
    assert issue.examples[0]["row"] == 0 and issue.examples[0]["region"] == "Lima"


def test_nulls_beyond_the_allowed_share(crop_raw: Path, tmp_path: Path) -> None:
    demand = valid_frame(DEMAND).astype({"supply_tonnes": object})
    demand.loc[[2, 5], "supply_tonnes"] = None
    _rewrite(crop_raw, demand)
    issue = _rejected(
        _run(crop_raw, tmp_path), tmp_path, "null_share", "historical_demand", "supply_tonnes"
    )
    assert "2 null" in issue.message and "at most 0%" in issue.message
    assert [e["row"] for e in issue.examples] == [2, 5]


def test_nan_beyond_the_allowed_share(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    satellite = valid_frame(FISH.table("satellite"), series=4, periods=5)
    satellite.loc[::2, "chlorophyll_mg_m3"] = np.nan  # half the cells: more than 25 %
    write_dataset("fish_stock", raw, frames={"satellite": satellite})
    report = _run(raw, tmp_path, use_case="fish_stock")
    issue = _rejected(report, tmp_path, "null_share", "satellite", "chlorophyll_mg_m3")
    assert "10 NaN" in issue.message and "50.0%" in issue.message and "25%" in issue.message


def test_duplicate_keys(crop_raw: Path, tmp_path: Path) -> None:
    demand = valid_frame(DEMAND, periods=10)
    demand = pd.concat([demand, demand.iloc[[4]]], ignore_index=True)
    _rewrite(crop_raw, demand)
    report = _run(crop_raw, tmp_path, batch_rows=8)  # the copy is in another batch
    issue = _rejected(report, tmp_path, "duplicate_keys", "historical_demand")
    assert issue.count == 1
    assert "week_start, region, crop" in issue.message
    assert issue.examples[0]["rows"] == [4, len(demand) - 1]
    assert issue.examples[0]["region"] == demand.loc[4, "region"]


def test_empty_table(crop_raw: Path, tmp_path: Path) -> None:
    _rewrite(crop_raw, valid_frame(CROP.table("weather")).iloc[:0], "weather")
    _rejected(_run(crop_raw, tmp_path), tmp_path, "empty_table", "weather")


def test_missing_table(crop_raw: Path, tmp_path: Path, previous_output: Path) -> None:
    (crop_raw / "market_trends.parquet").unlink()
    issue = _rejected(_run(crop_raw, tmp_path), tmp_path, "missing_table", "market_trends")
    assert "market_trends.parquet or market_trends.csv" in issue.message


def test_truncated_parquet(crop_raw: Path, tmp_path: Path) -> None:
    path = crop_raw / "historical_demand.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    issue = _rejected(_run(crop_raw, tmp_path), tmp_path, "corrupt_file", "historical_demand")
    assert "truncated" in issue.message


@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_csv_with_another_delimiter(crop_raw: Path, tmp_path: Path, delimiter, name) -> None:
    valid_frame(DEMAND).to_csv(crop_raw / "historical_demand.csv", sep=delimiter, index=False)
    (crop_raw / "historical_demand.parquet").unlink()
    issue = _rejected(_run(crop_raw, tmp_path), tmp_path, "delimiter", "historical_demand")
    assert f"separated by {delimiter!r} ({name})" in issue.message


def test_csv_that_is_not_utf8(crop_raw: Path, tmp_path: Path) -> None:
    weather = valid_frame(CROP.table("weather"), periods=30)
    text = weather.to_csv(index=False).replace("amazonas", "amazónas", 1)
    lines_before = text[: text.index("amazónas")].count("\n")
    data = text.encode("latin-1")  # ó as the single byte 0xf3: not UTF-8
    (crop_raw / "weather.csv").write_bytes(data)
    (crop_raw / "weather.parquet").unlink()
    report = _run(crop_raw, tmp_path, batch_rows=10)
    issue = _rejected(report, tmp_path, "encoding", "weather")
    offset = data.index(b"\xf3")
    assert f"byte offset {offset}" in issue.message
    assert f"line {lines_before + 1}" in issue.message and "0xf3" in issue.message
    assert issue.examples[0]["text"].startswith(text.splitlines()[lines_before][:10])


def test_time_off_the_cadence(crop_raw: Path, tmp_path: Path) -> None:
    weather = valid_frame(CROP.table("weather"))
    weather.loc[3, "week_start"] += pd.Timedelta(days=1)  # a Tuesday
    _rewrite(crop_raw, weather, "weather")
    issue = _rejected(_run(crop_raw, tmp_path), tmp_path, "off_grid", "weather", "week_start")
    assert "Mondays" in issue.message and issue.examples[0]["row"] == 3


def test_every_problem_is_reported_at_once(crop_raw: Path, tmp_path: Path) -> None:
    demand = valid_frame(DEMAND)
    demand.loc[0, "demand_tonnes"] = 9e9
    demand.loc[1, "crop"] = "kiwi"
    _rewrite(crop_raw, demand)
    (crop_raw / "weather.parquet").unlink()
    report = _run(crop_raw, tmp_path)
    assert {(i.check, i.table) for i in report.errors} == {
        ("out_of_range", "historical_demand"),
        ("vocabulary", "historical_demand"),
        ("missing_table", "weather"),
    }


# ---------------------------------------------------------------------------------------------
# Warnings: the data passes


def test_time_gaps_are_warnings(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    demand = valid_frame(DEMAND, periods=10)
    weeks = sorted(demand["week_start"].unique())
    lima_rice = (demand["region"] == "amazonas") & (demand["crop"] == "potato")
    demand = demand[~(lima_rice & demand["week_start"].isin(weeks[3:5]))]
    weather = valid_frame(CROP.table("weather"), periods=10)
    weather = weather[weather["week_start"] != weeks[6]]  # a week with no rows at all
    write_dataset("crop_demand", raw, frames={"historical_demand": demand, "weather": weather})
    report = _run(raw, tmp_path)

    assert report.ok, report.summary()
    series_gap = report.issues("time_gaps", "historical_demand")[0]
    assert series_gap.severity == "warning" and series_gap.column == "week_start"
    assert series_gap.count == 2 and "1 of 4 series" in series_gap.message
    example = series_gap.examples[0]
    assert (example["region"], example["crop"], example["missing"]) == ("amazonas", "potato", 2)
    assert example["first_missing"] == f"{weeks[3].isoformat()}, {weeks[4].isoformat()}"
    week_gap = report.issues("time_gaps", "weather")[0]
    assert week_gap.severity == "warning" and weeks[6].isoformat() in week_gap.message
    assert report.tables["historical_demand"].series_with_gaps == 1
    assert "time_gaps" in report.markdown_path.read_text()


def test_inferred_cadence_gap(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    satellite = valid_frame(FISH.table("satellite"), series=3, periods=8)  # 8-day composites
    dates = sorted(satellite["date"].unique())
    satellite = satellite[~((satellite["cell_id"] == 1) & (satellite["date"] == dates[4]))]
    write_dataset("fish_stock", raw, frames={"satellite": satellite})
    report = _run(raw, tmp_path, use_case="fish_stock")
    assert report.ok, report.summary()
    gap = report.issues("time_gaps", "satellite")[0]
    assert "every 8 days (inferred)" in gap.message
    assert gap.examples[0]["cell_id"] == 1 and gap.examples[0]["first_missing"] == str(dates[4])


def test_stray_and_doubled_files_are_warned_about(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    frames = write_dataset("crop_demand", raw)
    (raw / "notes.txt").write_text("not a table")
    write_table(frames["weather"], raw, "weather", "csv", CROP.table("weather"))  # and .parquet
    report = _run(raw, tmp_path)
    assert report.ok, report.summary()
    stray = report.issues("unexpected_file")[0]
    assert "notes.txt" in stray.message and stray.count == 1
    doubled = report.issues("ambiguous_file", "weather")[0]
    assert "weather.parquet and weather.csv" in doubled.message


def test_manifest_row_count_mismatch_is_warned_about(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    frames = write_dataset("crop_demand", raw)
    rows = len(frames["weather"])
    manifest = {"use_case": "crop_demand", "rows": {"weather": rows + 5}}
    (raw / "manifest.json").write_text(json.dumps(manifest))
    report = _run(raw, tmp_path)
    assert report.ok, report.summary()
    warning = report.issues("manifest")[0]
    assert f"says {rows + 5:,} rows, the file has {rows:,}" in warning.message


def test_drift_is_flagged_for_a_shifted_column_only(tmp_path: Path) -> None:
    before = tmp_path / "before"
    frames = write_dataset("crop_demand", before / "raw", series=3, periods=30)
    first = _run(before / "raw", before)
    assert first.ok

    after = tmp_path / "after"
    demand = frames["historical_demand"].copy()
    demand["demand_tonnes"] = (demand["demand_tonnes"] * 0.3).round(3)  # a new unit, say
    write_dataset("crop_demand", after / "raw", frames={**frames, "historical_demand": demand})
    report = _run(after / "raw", after, reference_stats=before / "out" / "statistics.json")

    assert report.ok  # drift warns, it does not fail
    flagged = {(d.table, d.column) for d in report.drift if d.flagged}
    assert flagged == {("historical_demand", "demand_tonnes")}
    warning = report.issues("drift", "historical_demand")[0]
    assert warning.column == "demand_tonnes" and "reference SDs" in warning.message
    steady = next(d for d in report.drift if d.column == "supply_tonnes")
    assert steady.psi == pytest.approx(0.0, abs=1e-9) and steady.mean_shift_sd == 0.0
    compared = {d.column for d in report.drift if d.table == "historical_demand"}
    assert compared == {"demand_tonnes", "supply_tonnes"}  # keys are not compared
    assert "Drift against the reference" in report.markdown_path.read_text()


# ---------------------------------------------------------------------------------------------
# Input not found, configuration


def test_missing_input_or_reference_is_input_not_found(crop_raw: Path, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="input directory not found"):
        _run(tmp_path / "nope", tmp_path)
    with pytest.raises(InputNotFoundError, match="reference statistics not found"):
        _run(crop_raw, tmp_path, reference_stats=tmp_path / "missing.json")
    assert not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


def test_config_rejects_unknown_fields_and_an_output_that_would_replace_the_input(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="extra"):
        ValidateConfig(use_case="crop_demand", input_dir=tmp_path, colour="red")
    with pytest.raises(ValueError, match="would replace the input"):
        ValidateConfig(use_case="crop_demand", input_dir=tmp_path / "a", output_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown use case"):
        ValidateConfig(use_case="bananas", input_dir=tmp_path)
    default = ValidateConfig(use_case="fish_stock", input_dir=tmp_path)
    assert default.report_dir == Path("reports/validation/fish_stock")


def test_step_cli_exit_codes(crop_raw: Path, tmp_path: Path) -> None:
    """``python -m components.validate`` as dvc.yaml runs it: 0 valid, 1 invalid, 3 not found."""

    def run(input_dir: Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "components.validate", "--use-case", "crop_demand"]
        cmd += ["--input", str(input_dir), "--output", str(tmp_path / "out")]
        cmd += ["--report", str(tmp_path / "report")]
        env = {**os.environ, "PERUCAST_LOG": "WARNING"}
        return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)

    ok = run(crop_raw)
    assert ok.returncode == ExitCode.OK, ok.stdout + ok.stderr
    assert "valid" in ok.stdout and (tmp_path / "out" / "statistics.json").is_file()

    bad = tmp_path / "bad"
    shutil.copytree(crop_raw, bad)
    (bad / "weather.parquet").unlink()
    invalid = run(bad)
    assert invalid.returncode == ExitCode.DATA_INVALID
    assert "INVALID" in invalid.stdout and "weather [missing_table]" in invalid.stdout
    assert str(tmp_path / "report" / "report.md") in invalid.stdout
    assert (tmp_path / "out" / "statistics.json").is_file()  # the earlier output is kept

    missing = run(tmp_path / "nowhere")
    assert missing.returncode == ExitCode.INPUT_NOT_FOUND
    assert "input directory not found" in missing.stderr


def test_perucast_data_validate(crop_raw: Path, tmp_path: Path) -> None:
    demand = valid_frame(DEMAND)
    demand.loc[2, "crop"] = "kiwi"
    _rewrite(crop_raw, demand)
    args = ["data", "validate", "--use-case", "crop_demand", "--input", str(crop_raw)]
    args += ["--output", str(tmp_path / "out"), "--report", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == ExitCode.DATA_INVALID, result.output
    assert "historical_demand.crop [vocabulary]" in result.output
    bad_option = CliRunner().invoke(app, [*args, "--example-rows", "0"])
    assert bad_option.exit_code == ExitCode.USAGE


# ---------------------------------------------------------------------------------------------
# The generated data sets (need the generators)


@pytest.mark.parametrize("fixture", ["crop_tiny", "fish_tiny"])
def test_generated_tiny_sets_are_valid(fixture: str, request, tmp_path: Path) -> None:
    raw: Path = request.getfixturevalue(fixture)
    use_case = "crop_demand" if fixture == "crop_tiny" else "fish_stock"
    report = _run(raw, tmp_path, use_case=use_case)
    assert report.ok, report.summary()
    uc = get_use_case(use_case)
    manifest = json.loads((raw / "manifest.json").read_text())
    for name in (*uc.table_names, "oracle"):
        assert report.tables[name].rows == manifest["rows"][name]
        assert (tmp_path / "out" / f"{name}.parquet").is_file()
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert not report.issues("manifest")
