"""Weekly crop demand by region and crop."""

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
from models.crop_demand import schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from models.network import NetworkSpec


class CropDemand(UseCase):
    name: ClassVar[str] = "crop_demand"
    title: ClassVar[str] = "Weekly crop demand by region and crop"
    description: ClassVar[str] = (
        "Weekly wholesale demand of 13 crops in Peru's 25 regions, with weather, prices and the "
        "Niño 1+2 anomaly; for farmers, suppliers and market analysts."
    )
    tables: ClassVar[tuple[TableSchema, ...]] = schema.TABLES
    oracle: ClassVar[TableSchema] = schema.ORACLE
    target: ClassVar[TargetSpec] = TargetSpec(
        table="historical_demand",
        column="demand_tonnes",
        time_column="week_start",
        series_keys=("region", "crop"),
        season_length=52,
    )

    target_history_inputs: ClassVar[tuple[str, ...]] = (
        "demand_tonnes",
        "demand_lag_1",
        "demand_lag_2",
    )
    calendar_inputs: ClassVar[tuple[str, ...]] = (
        "week_sin",
        "week_cos",
        "is_semana_santa",
        "is_fiestas_patrias",
        "is_christmas_new_year",
        "fut_holiday_h*",
    )
    period_inputs: ClassVar[tuple[str, ...]] = ("nino12_*", "usd_pen", "usd_logret_4")

    default_horizon: ClassVar[int] = 12  # weeks

    def feature_spec(self, horizon: int) -> FeatureSpec:
        from models.crop_demand.features import feature_spec

        return feature_spec(horizon)

    def build_features(self, tables: Mapping[str, DataFrame], horizon: int) -> FeatureResult:
        from models.crop_demand.features import build_features

        return build_features(tables, horizon)

    def network_spec(self) -> NetworkSpec:
        from models.crop_demand.network import NETWORK

        return NETWORK

    def write_synthetic(self, config: GeneratorConfig, directory: Path) -> dict[str, int]:
        from models.crop_demand.generator import write_synthetic

        return write_synthetic(config, directory)
