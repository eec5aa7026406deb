"""The ENSO driver of both simulators: the real Niño 1+2 sea-surface temperature.

``statsmodels.datasets.elnino`` ships the monthly Niño 1+2 SST (0–10°S, 80–90°W, right off Peru)
for 1950–2010. We turn it into anomalies against the 1950–2010 monthly climatology and, where a
simulation needs later years, extend it with a seasonal autoregressive model fitted to the
observed anomalies (AR on lags 1, 2, 3 and 12 with a residual spread per calendar month, because
ENSO anomalies are largest in the austral summer). The observed part is the same for every seed;
the extension is drawn from the seed.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

OBSERVED_FIRST_YEAR = 1950
OBSERVED_LAST_YEAR = 2010
AR_LAGS = (1, 2, 3, 12)
# Strong El Niño onsets visible in the observed series (first month with anomaly >= +1 °C).
STRONG_EL_NINO_YEARS = (1957, 1972, 1982, 1997)


@cache
def _observed() -> pd.DataFrame:
    import statsmodels.api as sm  # heavy: import on first use only

    raw = sm.datasets.elnino.load_pandas().data
    months = raw.columns[1:]
    long = raw.melt(id_vars="YEAR", value_vars=list(months), var_name="mon", value_name="sst_c")
    long["month_num"] = long["mon"].map({m: i + 1 for i, m in enumerate(months)})
    long["month"] = pd.to_datetime(
        {"year": long["YEAR"].astype(int), "month": long["month_num"], "day": 1}
    )
    long = long.sort_values("month").reset_index(drop=True)
    clim = long.groupby("month_num")["sst_c"].transform("mean")
    long["anomaly_c"] = long["sst_c"] - clim
    long["climatology_c"] = clim
    long["source"] = "observed"
    return long[["month", "month_num", "sst_c", "climatology_c", "anomaly_c", "source"]]


@cache
def _fitted_ar() -> tuple[np.ndarray, np.ndarray]:
    """Least-squares AR coefficients (intercept first) and residual sd per calendar month."""
    anomaly = _observed()["anomaly_c"].to_numpy()
    p = max(AR_LAGS)
    y = anomaly[p:]
    design = np.column_stack([np.ones_like(y)] + [anomaly[p - lag : -lag] for lag in AR_LAGS])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    month_idx = np.arange(p, anomaly.size) % 12
    sd = np.array([resid[month_idx == m].std(ddof=len(coef)) for m in range(12)])
    return coef, sd


def nino12_monthly(
    last_year: int = 2025, seed: int = 0, first_year: int = OBSERVED_FIRST_YEAR
) -> pd.DataFrame:
    """Monthly Niño 1+2 SST and anomaly from ``first_year`` to the end of ``last_year``.

    Args:
        last_year: Last calendar year to cover; years after 2010 are simulated.
        seed: Seed of the simulated extension (the observed years do not depend on it).
        first_year: First calendar year (>= 1950).

    Returns:
        Columns ``month`` (first day, Timestamp), ``month_num``, ``sst_c``, ``climatology_c``,
        ``anomaly_c`` and ``source`` (``observed`` or ``simulated``).
    """
    if first_year < OBSERVED_FIRST_YEAR:
        raise ValueError(f"Niño 1+2 observations start in {OBSERVED_FIRST_YEAR}, not {first_year}")
    obs = _observed()
    frames = [obs]
    if last_year > OBSERVED_LAST_YEAR:
        coef, sd = _fitted_ar()
        rng = np.random.default_rng([seed, 1950])
        history = list(obs["anomaly_c"].to_numpy())
        months = pd.date_range(f"{OBSERVED_LAST_YEAR + 1}-01-01", f"{last_year}-12-01", freq="MS")
        values = []
        for month in months:
            lagged = [history[-lag] for lag in AR_LAGS]
            mean = coef[0] + float(np.dot(coef[1:], lagged))
            value = mean + sd[month.month - 1] * rng.standard_normal()
            history.append(value)
            values.append(value)
        clim = obs.groupby("month_num")["climatology_c"].first()
        ext = pd.DataFrame({"month": months, "month_num": months.month, "anomaly_c": values})
        ext["climatology_c"] = ext["month_num"].map(clim).to_numpy()
        ext["sst_c"] = ext["climatology_c"] + ext["anomaly_c"]
        ext["source"] = "simulated"
        frames.append(ext[obs.columns])
    out = pd.concat(frames, ignore_index=True)
    mask = (out["month"].dt.year >= first_year) & (out["month"].dt.year <= last_year)
    return out.loc[mask].reset_index(drop=True)


def anomaly_at(dates: pd.DatetimeIndex | np.ndarray, monthly: pd.DataFrame) -> np.ndarray:
    """Niño 1+2 anomaly at arbitrary dates, linearly interpolated between mid-months."""
    dates = pd.DatetimeIndex(dates)
    mid = (
        (monthly["month"] + pd.Timedelta(days=14))
        .to_numpy()
        .astype("datetime64[D]")
        .astype(np.int64)
    )
    x = dates.to_numpy().astype("datetime64[D]").astype(np.int64)
    return np.interp(x, mid, monthly["anomaly_c"].to_numpy())
