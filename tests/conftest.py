"""Shared, expensive fixtures: tiny generated data sets, made once per test session (worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import get_use_case
from models.base import GeneratorConfig, Scale

TEST_SEED = 7


def _generate(tmp_path_factory: pytest.TempPathFactory, name: str, seed: int = TEST_SEED) -> Path:
    out = tmp_path_factory.mktemp(f"{name}-raw") / "data"
    get_use_case(name).generate(GeneratorConfig(seed=seed, scale=Scale.TINY), out)
    return out


@pytest.fixture(scope="session")
def crop_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with the tiny crop demand data set (seed 7, Parquet)."""
    return _generate(tmp_path_factory, "crop_demand")


@pytest.fixture(scope="session")
def fish_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with the tiny fish stock data set (seed 7, Parquet)."""
    return _generate(tmp_path_factory, "fish_stock")


@pytest.fixture(scope="session")
def spark():
    """The one SparkSession of a test worker (local[2], small heap, no UI)."""
    from perucast.spark import SparkConfig, get_spark

    session = get_spark(
        SparkConfig(
            master="local[2]", driver_memory="1g", shuffle_partitions=4, app_name="perucast-tests"
        )
    )
    yield session
    session.stop()


def _features(tmp_path_factory: pytest.TempPathFactory, spark, raw: Path, name: str) -> Path:
    from components.preprocess import PreprocessConfig, preprocess

    out = tmp_path_factory.mktemp(f"{name}-features") / "features"
    preprocess(PreprocessConfig(use_case=name, input_dir=raw, output_dir=out), spark)
    return out


@pytest.fixture(scope="session")
def crop_features(tmp_path_factory: pytest.TempPathFactory, spark, crop_tiny: Path) -> Path:
    """Preprocessed tiny crop demand data (split.json, statistics.json, features/split=*)."""
    return _features(tmp_path_factory, spark, crop_tiny, "crop_demand")


@pytest.fixture(scope="session")
def fish_features(tmp_path_factory: pytest.TempPathFactory, spark, fish_tiny: Path) -> Path:
    """Preprocessed tiny fish stock data (split.json, statistics.json, features/split=*)."""
    return _features(tmp_path_factory, spark, fish_tiny, "fish_stock")
