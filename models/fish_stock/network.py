"""How the anchoveta stock features enter the shared forecasting network (``models.network``)."""

from __future__ import annotations

from models.fish_stock.features import BIOMASS_LAGS, CATCH_LAGS, CATCH_ROLL_MONTHS, TARGET
from models.network import NetworkSpec

NETWORK = NetworkSpec(
    # Biomass and its lags: scaled by the zone's series.
    level_columns=(TARGET, *(f"biomass_lag{k}" for k in BIOMASS_LAGS)),
    # Catches and quotas are zero in closed seasons and millions of tonnes in open ones;
    # acoustic backscatter and chlorophyll are skewed.
    log_columns=(
        "catch_tonnes",
        *(f"catch_lag{k}" for k in CATCH_LAGS),
        f"catch_roll{CATCH_ROLL_MONTHS}",
        "season_quota_tonnes",
        "sonar_nasc_mean",
        "sat_chl_mean",
        "sat_chl_std",
        "sat_chl_p10",
        "sat_chl_p50",
        "sat_chl_p90",
    ),
    embedding_dims={"zone": 2, "season": 2},
    # Few hundred training rows (zone × month): a small network, more dropout.
    hidden_units=(32, 16),
    dropout=0.2,
)
