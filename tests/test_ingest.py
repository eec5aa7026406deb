"""The ingest step: from a directory, and from a DVC repository at a git revision (real git, real
DVC, a local directory remote), with exit code 3 for whatever is not there."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from factories import run_tool, tool_env, write_dataset
from typer.testing import CliRunner

from components.ingest import IngestConfig, SourceNotFoundError, ingest
from components.validate import ValidateConfig, validate
from perucast.cli import app
from perucast.exitcodes import ExitCode

FISH_FILES = ["satellite.parquet", "sonar.parquet", "stock.parquet"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# From a directory


def test_ingest_from_a_directory_then_validate(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    write_dataset("crop_demand", drop, "csv", oracle=True)
    (drop / "manifest.json").write_text('{"use_case": "crop_demand"}\n')
    (drop / "notes.txt").write_text("not a table\n")
    out = tmp_path / "ingested"

    result = ingest(IngestConfig(use_case="crop_demand", path=drop, output_dir=out))

    assert result.tables == ["historical_demand", "weather", "market_trends", "oracle"]
    copied = sorted(p.name for p in out.iterdir())
    assert copied == sorted([f"{t}.csv" for t in result.tables] + ["manifest.json", "ingest.json"])
    record = json.loads((out / "ingest.json").read_text())
    assert record["source"] == {"kind": "path", "path": str(drop.resolve())}
    assert record["commit"] is None
    for name, entry in record["files"].items():
        assert (out / name).read_bytes() == (drop / name).read_bytes()
        assert entry["md5"] == _md5(drop / name)
        assert entry["bytes"] == (drop / name).stat().st_size

    # ingest.json travels with the data into the validated set (provenance).
    report = validate(
        ValidateConfig(
            use_case="crop_demand",
            input_dir=out,
            output_dir=tmp_path / "validated",
            report_dir=tmp_path / "report",
        )
    )
    assert report.ok, report.summary()
    assert (tmp_path / "validated" / "ingest.json").read_bytes() == (
        out / "ingest.json"
    ).read_bytes()


def test_missing_directory_or_table_exits_3_and_writes_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ingested"
    base = ["data", "ingest", "--use-case", "fish_stock", "--out", str(out)]

    result = runner.invoke(app, [*base, "--path", str(tmp_path / "nowhere")])
    assert result.exit_code == ExitCode.INPUT_NOT_FOUND
    assert "source directory not found" in result.output
    assert not out.exists()

    drop = tmp_path / "drop"
    write_dataset("fish_stock", drop)
    (drop / "sonar.parquet").unlink()
    out.mkdir()
    (out / "previous.txt").write_text("kept\n")
    result = runner.invoke(app, [*base, "--path", str(drop)])
    assert result.exit_code == ExitCode.INPUT_NOT_FOUND
    assert "table 'sonar' not found" in result.output
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


def test_source_options_are_checked(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["data", "ingest", "--use-case", "crop_demand", "--out", str(tmp_path / "o")]
    both = runner.invoke(app, [*base, "--path", str(tmp_path), "--dvc-repo", "."])
    assert both.exit_code == ExitCode.USAGE
    neither = runner.invoke(app, base)
    assert neither.exit_code == ExitCode.USAGE
    with pytest.raises(ValueError, match="would replace the source"):
        IngestConfig(use_case="crop_demand", path=tmp_path / "a", output_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# From DVC at a git revision


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A git + DVC repository with two versions of a fish_stock data set, pushed to a local
    remote, then the local cache deleted: every read at a revision must come from the remote."""
    base = tmp_path_factory.mktemp("dvc")
    root, remote = base / "repo", base / "remote"
    root.mkdir()
    data = root / "data" / "raw" / "fish_stock"
    run_tool(root, "git", "init", "-q", "-b", "main")
    run_tool(root, "dvc", "init", "-q")
    run_tool(root, "dvc", "remote", "add", "-d", "store", str(remote))
    versions = {}
    for tag, seed in (("v1", 1), ("v2", 2)):
        if data.exists():
            shutil.rmtree(data)
        write_dataset("fish_stock", data, seed=seed)
        run_tool(root, "dvc", "add", "-q", "data/raw/fish_stock")
        run_tool(root, "git", "add", "-A")
        run_tool(root, "git", "commit", "-q", "-m", f"data {tag}")
        run_tool(root, "git", "tag", tag)
        run_tool(root, "dvc", "push", "-q")
        commit = run_tool(root, "git", "rev-parse", "HEAD").stdout.strip()
        versions[tag] = {
            "commit": commit,
            "bytes": {f: (data / f).read_bytes() for f in FISH_FILES},
        }
    assert versions["v1"]["bytes"] != versions["v2"]["bytes"]
    shutil.rmtree(root / ".dvc" / "cache")
    return {"root": root, "remote": remote, **versions}


def test_dvc_ingest_at_a_tag_reads_that_version_from_the_remote(
    dvc_repo: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    root: Path = dvc_repo["root"]
    assert not (root / ".dvc" / "cache").exists()  # only the remote has the data
    out = tmp_path / "v1"
    result = ingest(
        IngestConfig(
            use_case="fish_stock",
            output_dir=out,
            dvc_repo=str(root),
            dvc_rev="v1",
            dvc_path="data/raw/fish_stock",
        )
    )
    v1 = dvc_repo["v1"]
    assert result.commit == v1["commit"]
    assert result.tables == ["satellite", "sonar", "stock"]  # no oracle in this set: fine
    for name, data in v1["bytes"].items():
        assert (out / name).read_bytes() == data  # the first version, not the workspace's
    record = json.loads((out / "ingest.json").read_text())
    assert record["source"] == {
        "kind": "dvc",
        "repo": str(root.resolve()),
        "path": "data/raw/fish_stock",
        "rev": "v1",
        "commit": v1["commit"],
    }
    assert record["requested_rev"] == "v1"
    assert record["files"]["stock.parquet"]["md5"] == _md5(out / "stock.parquet")


def test_dvc_ingest_cli_at_head_and_exit_codes(
    dvc_repo: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    root = str(dvc_repo["root"])
    runner = CliRunner()
    out = tmp_path / "head"
    base = ["data", "ingest", "--use-case", "fish_stock", "--dvc-repo", root]

    head = runner.invoke(app, [*base, "--dvc-path", "data/raw/fish_stock", "--out", str(out)])
    assert head.exit_code == ExitCode.OK, head.output
    assert dvc_repo["v2"]["commit"][:12] in head.output
    for name, data in dvc_repo["v2"]["bytes"].items():
        assert (out / name).read_bytes() == data

    unknown = runner.invoke(
        app,
        [*base, "--dvc-rev", "v9", "--dvc-path", "data/raw/fish_stock", "--out", str(out / "x")],
    )
    assert unknown.exit_code == ExitCode.INPUT_NOT_FOUND
    assert "unknown git revision 'v9'" in unknown.output
    untracked = runner.invoke(
        app, [*base, "--dvc-rev", "v1", "--dvc-path", "data/raw/nope", "--out", str(out / "x")]
    )
    assert untracked.exit_code == ExitCode.INPUT_NOT_FOUND
    assert "no directory data/raw/nope" in untracked.output
    assert not (out / "x").exists()


def test_step_cli_runs_as_a_module_with_exit_3(dvc_repo: dict, tmp_path: Path) -> None:
    """``python -m components.ingest`` as pods run it: a missing table is exit code 3."""
    cmd = [sys.executable, "-m", "components.ingest", "--use-case", "crop_demand"]
    cmd += ["--dvc-repo", str(dvc_repo["root"]), "--dvc-rev", "v1"]
    cmd += ["--dvc-path", "data/raw/fish_stock", "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=tool_env())
    assert proc.returncode == ExitCode.INPUT_NOT_FOUND, proc.stdout + proc.stderr
    assert "table 'historical_demand' not found" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_unreadable_data_is_source_not_found(dvc_repo: dict, tmp_path: Path) -> None:
    """Data in neither the cache nor the remote (the remote moved away) is exit 3, not a crash."""
    remote: Path = dvc_repo["remote"]
    moved = remote.with_name("remote-moved")
    remote.rename(moved)
    try:
        with pytest.raises(SourceNotFoundError, match="cannot read"):
            ingest(
                IngestConfig(
                    use_case="fish_stock",
                    output_dir=tmp_path / "o",
                    dvc_repo=str(dvc_repo["root"]),
                    dvc_rev="v1",
                    dvc_path="data/raw/fish_stock",
                )
            )
    finally:
        moved.rename(remote)
    assert not (tmp_path / "o").exists()
