"""How the crop demand features enter the shared forecasting network (``models.network``)."""

from __future__ import annotations

from models.crop_demand.features import DEMAND_LAGS, DEMAND_WINDOWS, PRECIP_LAGS, TARGET
from models.network import NetworkSpec

NETWORK = NetworkSpec(
    # Demand and its lags and rolling means: scaled by the region × crop series.
    level_columns=(
        TARGET,
        *(f"demand_lag_{k}" for k in DEMAND_LAGS),
        *(f"demand_mean_{n}" for n in DEMAND_WINDOWS),
    ),
    spread_columns=tuple(f"demand_std_{n}" for n in DEMAND_WINDOWS),
    # Supply follows the producing regions (orders of magnitude apart), rain is skewed.
    log_columns=(
        "supply_tonnes",
        "supply_lag_1",
        "supply_mean_4",
        "price_pen_per_kg",
        "precip_mm",
        *(f"precip_lag_{k}" for k in PRECIP_LAGS),
        "precip_sum_4",
    ),
    embedding_dims={"region": 6, "crop": 6},
    hidden_units=(128, 64),
    dropout=0.1,
)
