"""How the crop demand features enter the shared forecasting network (``models.network``)."""

from __future__ import annotations

from models.crop_demand.features import DEMAND_WINDOWS, PRECIP_LAGS, SEASON_WEEKS, TARGET
from models.network import NetworkSpec

NETWORK = NetworkSpec(
    # Demand and its lags (every lag a horizon may add) and rolling means: scaled by the
    # region × crop series.
    level_columns=(
        TARGET,
        *(f"demand_lag_{k}" for k in range(1, SEASON_WEEKS + 1)),
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
    seasonal_lag=("demand_lag_{k}", SEASON_WEEKS),
    season_phase=("week_sin", "week_cos", SEASON_WEEKS),
    level_column="demand_mean_52",
    # Demand grows with the population: relative to the last year's mean, test years look
    # like training years; scaled by the training mean they would not.
    scale_by="level",
    hidden_units=(128, 64),
    dropout=0.1,
)
