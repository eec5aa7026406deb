"""The repository is a DVC project: its pipeline reproduces on a fresh checkout, and the default
remote (a local directory) pushes and pulls without any set-up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from configobj import ConfigObj

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPIED = ["models", "components", "perucast", "dvc.yaml", "params.yaml", ".dvcignore", ".dvc"]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "PERUCAST_LOG": "WARNING",
        "GIT_AUTHOR_NAME": "perucast-test",
        "GIT_AUTHOR_EMAIL": "test@perucast.invalid",
        "GIT_COMMITTER_NAME": "perucast-test",
        "GIT_COMMITTER_EMAIL": "test@perucast.invalid",
    }


def _run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_repo_config_has_a_default_local_remote_and_no_analytics() -> None:
    # DVC writes its config with configobj (sections like ['remote "name"']): read it the same way.
    config = ConfigObj(str(REPO / ".dvc" / "config"))
    default = config["core"]["remote"]
    url = config[f'remote "{default}"']["url"]
    assert "://" not in url, "the default remote must work on a fresh clone without credentials"
    assert config["core"]["analytics"] == "false"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(params["use_cases"]) == {"crop_demand", "fish_stock"}


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC checkout of the project's pipeline code, with the data scale set to tiny."""
    root = tmp_path_factory.mktemp("checkout") / "perucast"
    root.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "cache", "tmp")
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=ignore)
        else:
            shutil.copy2(src, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["scale"] = "tiny"
    params["spark"] = {"master": "local[2]", "driver_memory": "1g"}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _run(root, "git", "init", "-q", "-b", "main")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-q", "-m", "checkout")
    return root


def test_dvc_repro_runs_every_stage_then_is_up_to_date(fresh_checkout: Path) -> None:
    root = fresh_checkout
    proc = _run(root, "dvc", "repro")
    stages = {
        f"{step}@{use_case}"
        for step in ("generate", "validate", "preprocess")
        for use_case in ("crop_demand", "fish_stock")
    }
    for stage in stages:
        assert f"'{stage}'" in proc.stdout, proc.stdout
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == stages
    features = root / "data" / "features" / "crop_demand"
    assert json.loads((features / "report.json").read_text())["rows"]["train"] > 0
    validated = root / "data" / "validated" / "fish_stock" / "stock.parquet"
    assert pq.read_metadata(validated).num_rows > 0
    again = _run(root, "dvc", "repro")
    assert "didn't change" in again.stdout or "up to date" in again.stdout.lower()

    # The default remote works without set-up: push, lose everything, pull it back.
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-q", "-m", "data")
    _run(root, "dvc", "push")
    before = validated.read_bytes()
    shutil.rmtree(root / "data")
    shutil.rmtree(root / ".dvc" / "cache")
    _run(root, "dvc", "pull")
    assert validated.read_bytes() == before
    status = _run(root, "dvc", "status")
    assert "up to date" in status.stdout.lower()
