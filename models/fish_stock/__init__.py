"""Monthly anchoveta stock biomass by fishing zone, from satellite and sonar data."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from models.base import (
    FeatureResult,
    FeatureSpec,
    GeneratorConfig,
    TableSchema,
    TargetSpec,
    UseCase,
)
from models.fish_stock import schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from models.network import NetworkSpec


class FishStock(UseCase):
    name: ClassVar[str] = "fish_stock"
    title: ClassVar[str] = "Anchoveta stock biomass by fishing zone"
    description: ClassVar[str] = (
        "Monthly biomass of the Peruvian anchoveta in three coastal zones, with the satellite "
        "grid (SST, chlorophyll, wind), acoustic surveys and landings; for fishery managers, "
        "conservationists and supply planners."
    )
    tables: ClassVar[tuple[TableSchema, ...]] = schema.TABLES
    oracle: ClassVar[TableSchema] = schema.ORACLE
    target: ClassVar[TargetSpec] = TargetSpec(
        table="stock",
        column="biomass_tonnes",
        time_column="month",
        series_keys=("zone",),
        season_length=12,
    )

    target_history_inputs: ClassVar[tuple[str, ...]] = (
        "biomass_tonnes",
        "biomass_lag1",
        "biomass_lag2",
    )
    # The season follows the calendar too (the fishery's legal seasons by month).
    calendar_inputs: ClassVar[tuple[str, ...]] = ("month_sin", "month_cos", "season")
    period_inputs: ClassVar[tuple[str, ...]] = (
        "nino12_*",
        "season_quota_tonnes",
        "survey_age_months",
    )

    default_horizon: ClassVar[int] = 6  # months

    def feature_spec(self, horizon: int) -> FeatureSpec:
        from models.fish_stock.features import feature_spec

        return feature_spec(horizon)

    def build_features(self, tables: Mapping[str, DataFrame], horizon: int) -> FeatureResult:
        from models.fish_stock.features import build_features

        return build_features(tables, horizon)

    def network_spec(self) -> NetworkSpec:
        from models.fish_stock.network import NETWORK

        return NETWORK

    def write_synthetic(self, config: GeneratorConfig, directory: Path) -> dict[str, int]:
        from models.fish_stock.generator import write_synthetic

        return write_synthetic(config, directory)
