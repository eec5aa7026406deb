"""The repository is a DVC project: its pipeline reproduces on a fresh checkout, and the default
remote (a local directory) pushes and pulls without any set-up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from configobj import ConfigObj
from factories import run_tool

REPO = Path(__file__).resolve().parents[1]
COPIED = ["models", "components", "perucast", "dvc.yaml", "params.yaml", ".dvcignore", ".dvc"]


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
    params["train"].update(workers=1, epochs=2, batch_size=256)
    params["evaluate"].update(stride=4, baselines="seasonal_naive,ets")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run_tool(root, "git", "init", "-q", "-b", "main")
    run_tool(root, "git", "add", "-A")
    run_tool(root, "git", "commit", "-q", "-m", "checkout")
    return root


def test_dvc_repro_runs_every_stage_then_is_up_to_date(fresh_checkout: Path) -> None:
    root = fresh_checkout
    proc = run_tool(root, "dvc", "repro")
    stages = {
        f"{step}@{use_case}"
        for step in ("generate", "validate", "preprocess", "train", "evaluate")
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
    model = root / "artifacts" / "model_repository" / "crop_demand" / "1" / "saved_model.pb"
    assert model.exists()
    shown = run_tool(root, "dvc", "metrics", "show").stdout
    assert "network.mase" in shown and "seasonal_naive.mase" in shown, shown
    again = run_tool(root, "dvc", "repro")
    assert "didn't change" in again.stdout or "up to date" in again.stdout.lower()

    # The default remote works without set-up: push, lose everything, pull it back.
    run_tool(root, "git", "add", "-A")
    run_tool(root, "git", "commit", "-q", "-m", "data")
    run_tool(root, "dvc", "push")
    before = validated.read_bytes()
    shutil.rmtree(root / "data")
    shutil.rmtree(root / ".dvc" / "cache")
    run_tool(root, "dvc", "pull")
    assert validated.read_bytes() == before
    status = run_tool(root, "dvc", "status")
    assert "up to date" in status.stdout.lower()
