"""Management advice per zone from the biomass quantile forecasts.

For the forecast of the month before a season opens (the survey month the quota is set from),
one row per zone gives:

* **Next-season biomass**: the P50 and the 80% interval (P10–P90), tonnes.
* **Probability below the limit reference point**: ``P(B < limit)`` under the piecewise-linear
  distribution through P10/P50/P90 (``perucast.quantiles.quantile_function``: linear between the
  quantiles, linear tails continued from the outer pairs, clipped at 0). The stock-wide limit is
  ``limit_fraction × SPAWNING_RESERVE_T``; the default fraction 1.0 makes the limit the spawning
  reserve (~5 Mt, DOMAIN.md): below it the harvest control rule allows no fishing, so the number
  reads as the probability of a closed season. Lower fractions (e.g. 0.5, ~2.5 Mt, the El Niño
  collapse levels) give a stricter, conservation-style limit.
* **Recommended quota** from the harvest control rule
  ``quota = EXPLOITATION_RATE × max(B_P50 − reserve, 0)``: a fixed share of the median biomass
  above the spawning reserve, zero at or below it. The constants are the generator's
  (``models.fish_stock.generator``). The rule is more precautionary than the generator's
  simulated management ``min(rate × B, B − reserve)``: it never exceeds it.
* **Juvenile alert**: the zone's juvenile share (fish < 12 cm, from the latest survey) above the
  generator's ``JUVENILE_LIMIT`` (strictly above, as the generator cancels a season).

The reserve and the limit are set for the whole north-central stock, while the forecasts are per
zone: they are split among the zones in proportion to each zone's P50 biomass (or to given
``zone_shares``), so the zone quotas add up to the rule applied to the whole stock's P50.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from models.fish_stock.management import EXPLOITATION_RATE, JUVENILE_LIMIT, SPAWNING_RESERVE_T
from perucast.quantiles import QUANTILE_COLUMNS, QUANTILE_LEVELS, quantile_cdf

ADVICE_COLUMNS = (
    "zone",
    "biomass_p10_t",
    "biomass_p50_t",
    "biomass_p90_t",
    "reserve_t",
    "limit_t",
    "prob_below_limit",
    "quota_t",
    "juvenile_share",
    "juvenile_alert",
)


def harvest_quota(
    biomass_t: np.ndarray | float,
    reserve_t: np.ndarray | float = SPAWNING_RESERVE_T,
    exploitation_rate: float = EXPLOITATION_RATE,
) -> np.ndarray:
    """The harvest control rule: ``exploitation_rate × max(biomass − reserve, 0)``, tonnes."""
    return exploitation_rate * np.maximum(np.asarray(biomass_t, dtype=float) - reserve_t, 0.0)


def stock_advice(
    forecasts: pd.DataFrame,
    *,
    limit_fraction: float = 1.0,
    reserve_t: float = SPAWNING_RESERVE_T,
    exploitation_rate: float = EXPLOITATION_RATE,
    juvenile_limit: float = JUVENILE_LIMIT,
    zone_shares: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Next-season biomass, risk, quota and juvenile alert per zone.

    Args:
        forecasts: One row per zone with ``zone``, ``p10``, ``p50``, ``p90`` (biomass, tonnes)
            and optionally ``juvenile_share`` (0–1; NaN or absent: unknown, no alert).
        limit_fraction: Limit reference point as a fraction of the reserve, > 0.
        reserve_t: Spawning reserve of the whole stock, tonnes.
        exploitation_rate: Share of the biomass above the reserve taken, in (0, 1].
        juvenile_limit: Juvenile share above which the alert is raised.
        zone_shares: Zone -> share of the reserve and limit (normalised to sum 1); default: in
            proportion to the zones' P50 biomass.

    Returns:
        One row per zone with ``ADVICE_COLUMNS``.

    Raises:
        ValueError: on missing columns, duplicate zones, crossed or NaN quantiles, or parameters
            out of range.
    """
    missing = [c for c in ("zone", *QUANTILE_COLUMNS) if c not in forecasts.columns]
    if missing:
        raise ValueError(f"forecasts lack columns {missing}")
    if forecasts["zone"].duplicated().any():
        raise ValueError("forecasts need one row per zone (pick the horizon before calling)")
    if limit_fraction <= 0:
        raise ValueError(f"limit_fraction must be > 0, got {limit_fraction}")
    if not 0 < exploitation_rate <= 1:
        raise ValueError(f"exploitation_rate must be in (0, 1], got {exploitation_rate}")
    if reserve_t < 0:
        raise ValueError(f"reserve_t must be >= 0, got {reserve_t}")

    zones = forecasts["zone"].astype(str).to_numpy()
    values = forecasts[list(QUANTILE_COLUMNS)].to_numpy(dtype=float)
    if zone_shares is None:
        weight = values[:, 1]
    else:
        unknown = sorted(set(zones) - set(zone_shares))
        if unknown:
            raise ValueError(f"zone_shares lack zones {unknown}")
        weight = np.array([float(zone_shares[z]) for z in zones])
    if np.any(weight < 0) or not np.sum(weight) > 0:
        raise ValueError("zone weights must be >= 0 with a positive sum")
    share = weight / weight.sum()

    zone_reserve = reserve_t * share
    zone_limit = limit_fraction * zone_reserve
    # P(B < limit): the CDF just below the limit, i.e. excluding any point mass at it.
    below = quantile_cdf(QUANTILE_LEVELS, values, np.nextafter(zone_limit, -np.inf))
    if "juvenile_share" in forecasts.columns:
        juvenile = forecasts["juvenile_share"].to_numpy(dtype=float)
    else:
        juvenile = np.full(len(zones), np.nan)

    return pd.DataFrame(
        {
            "zone": zones,
            "biomass_p10_t": values[:, 0],
            "biomass_p50_t": values[:, 1],
            "biomass_p90_t": values[:, 2],
            "reserve_t": zone_reserve,
            "limit_t": zone_limit,
            "prob_below_limit": below,
            "quota_t": harvest_quota(values[:, 1], zone_reserve, exploitation_rate),
            "juvenile_share": juvenile,
            "juvenile_alert": np.nan_to_num(juvenile, nan=-np.inf) > juvenile_limit,
        },
        columns=list(ADVICE_COLUMNS),
    )
