"""Seeded synthetic anchoveta data: stock dynamics, satellite grid and acoustic surveys.

Everything is driven by the real Niño 1+2 anomaly (``models.enso``) and by a zone-level ocean
(a coastal SST anomaly and a trade-wind anomaly per zone) that both the stock and the satellite
see, so satellite and sonar signals carry information about the biomass.

* ``stock`` and ``oracle``: a monthly surplus-production simulation of the biomass in three
  coastal zones, 1960–2025, identical at every scale. Warm anomalies cut production, kill fish
  and push them south; two fishing seasons a year take a quota set from the assessed biomass
  (boom-era overfishing up to 1972, a 5 Mt spawning reserve afterwards, seasons cancelled for
  juveniles once acoustic surveys exist). ``biomass_tonnes`` is the assessed biomass, drawn with
  mean-unbiased noise around the true biomass; the oracle holds the true biomass.
* ``satellite``: SST, SST anomaly, chlorophyll-a and wind on an ocean grid off Peru from 1998
  (monthly 1° cells at ``tiny``, 8-day 1/3° at ``small``, daily 1/6° from 2006 at ``full``),
  written chunk by chunk.
* ``sonar``: two acoustic surveys a year from 1983; NASC per EDSU on transects perpendicular to
  the coast, proportional to the zone biomass; mean length and juvenile fraction per EDSU.

Random numbers come from independent ``numpy`` streams seeded with ``[seed, purpose, ...]``, so
a table's values do not depend on which other tables were written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.special import gammaincinv, ndtr, ndtri

from models.base import FileFormat, GeneratorConfig, Scale
from models.enso import nino12_monthly
from models.fish_stock.management import EXPLOITATION_RATE, JUVENILE_LIMIT, SPAWNING_RESERVE_T
from models.fish_stock.schema import ORACLE, SATELLITE, SEASONS, SONAR, STOCK, ZONES
from perucast.io import TableWriter
from perucast.progress import progress

# --- Time span -------------------------------------------------------------------------------
STOCK_FIRST_YEAR = 1960
LAST_YEAR = 2025
SURVEY_FIRST_YEAR = 1983  # acoustic surveys (and the juvenile rule) start here
SATELLITE_FIRST_YEAR = 1998  # ocean-colour era

# --- Management (public: tests and later steps check against it) -----------------------------
BOOM_LAST_YEAR = 1972  # until then: no reserve and heavy fishing (landings ~12 Mt a year)
BOOM_EXPLOITATION_RATE = 0.50
FIRST_SEASON_MONTHS = (4, 5, 6, 7)
SECOND_SEASON_MONTHS = (11, 12, 1)
# Months whose assessment is an acoustic survey (summer Feb–Mar, winter-spring Sep–Oct): the
# quota of the season opening the month after is computed from it.
SURVEY_MONTHS = (3, 10)
# Share of a season's landings per month: the fleet fishes hardest right after the opening.
_FIRST_WEIGHTS = np.array([0.34, 0.30, 0.22, 0.14])
_SECOND_WEIGHTS = np.array([0.45, 0.35, 0.20])

# --- Zones -----------------------------------------------------------------------------------
ZONE_NORTH_EDGE = -9.0  # north: lat > -9.0 (Paita–Chimbote and the far north)
ZONE_SOUTH_EDGE = -13.7  # centre: down to -13.7 (Chimbote–Pisco); south: Pisco–Ilo
_ZONE_SHARE = np.array([0.42, 0.43, 0.15])  # usual split of the stock
_ZONE_ENSO_GAIN = np.array([1.15, 1.0, 0.8])  # coastal SST anomaly per °C of Niño 1+2
_ZONE_WARM_SHIFT = np.array([-0.30, 0.0, 0.35])  # log share change per °C of Niño 1+2 > 0
_ZONE_FLEET = np.array([1.0, 1.0, 0.6])  # fleet effort per tonne of fish (less in the south)

# --- Stock dynamics (monthly) ----------------------------------------------------------------
_CARRYING_CAPACITY_T = 12.0e6
_BOOM_CAPACITY_FACTOR = 1.5  # the cool "anchovy regime" before 1972–73 carried more fish
_REGIME_END = 1973.0  # the regime shift runs over the two years before this
_PRODUCTION_RATE = 0.22  # at low density, before the seasonal cycle
_WIND_PRODUCTION = 0.12  # log production per m/s of trade-wind anomaly (upwelling)
_WARM_PRODUCTION_CUT = 0.55  # log production cut per °C of coastal anomaly above +0.5
_COLD_PRODUCTION = 0.10  # log production gain per °C of cold anomaly (La Niña)
_WARM_MORTALITY = 0.14  # extra mortality per °C of coastal anomaly above the threshold
_HOT_THRESHOLD = 0.8  # °C of coastal anomaly where warm-water deaths start
_HOT_CAP = 2.5  # °C above the threshold beyond which mortality stops rising
_REFUGE_T = 2.5e6  # stock at which half the fish find cold coastal refuges from warm water
_WARM_REACH = 0.3  # log catch shortfall per °C of warm anomaly (fish deeper, out of reach)
_MIGRATION = 0.3  # share of the stock redistributing among zones per month
_PROCESS_SD = 0.04
_MIN_ZONE_T = 2.0e4

# --- Assessment noise ------------------------------------------------------------------------
# The survey months' assessment is the acoustic survey (relative sd 0.15); the months between
# are model-based updates, much less precise. Their sd is calibrated so that the oracle's MASE
# against seasonal naive over the last two years is ~0.6 (mean 0.60, 0.53–0.67 over seeds 0–49,
# perucast.datasets.oracle_mase): that is as close as any forecast can get.
SURVEY_NOISE_SD = 0.15
ASSESSMENT_NOISE_SD = 0.42
NOISE_LEVEL_WEIGHT = 0.3  # error sd follows the current biomass (1) or the zone's mean (0)

# --- Geography -------------------------------------------------------------------------------
# Coastline (lat, lon) from Tumbes to Arica, north to south.
COAST = np.array(
    [
        (-3.40, -80.30), (-3.60, -80.50), (-4.10, -81.10), (-4.60, -81.30), (-5.10, -81.15),
        (-5.80, -81.15), (-6.20, -80.90), (-6.80, -79.95), (-7.70, -79.45), (-8.20, -78.98),
        (-9.10, -78.60), (-10.10, -78.15), (-11.10, -77.62), (-12.05, -77.15), (-12.50, -76.80),
        (-13.70, -76.22), (-14.40, -76.05), (-15.35, -75.20), (-16.20, -73.70), (-17.00, -72.05),
        (-17.65, -71.35), (-18.30, -70.40), (-19.00, -70.30),
    ]
)  # fmt: skip
# Upwelling centres: Paita, Chimbote, Callao, Pisco, San Juan de Marcona.
UPWELLING_LATS = np.array([-5.1, -9.1, -12.05, -13.9, -15.3])
SURVEY_SOUTH_END = -18.3  # surveys stop at the Chilean border
KM_PER_DEG = 111.2
KM_PER_NMI = 1.852
GRID_MAX_KM = 600.0


@dataclass(frozen=True)
class CompositeNoise:
    """Noise of one satellite composite (longer composites average more scenes).

    Attributes:
        sst: Per-cell SST noise, °C.
        chl: Per-cell log10 chlorophyll noise.
        wind: Per-cell wind noise, m/s.
        zone_sst: Zone-wide weather on top of the monthly ocean, °C.
        zone_wind: Zone-wide wind weather, m/s.
        cloud: Mean share of chlorophyll values lost to clouds.
    """

    sst: float
    chl: float
    wind: float
    zone_sst: float
    zone_wind: float
    cloud: float


@dataclass(frozen=True)
class SatelliteLayout:
    step_deg: float
    cadence: str  # "monthly", "8day" or "daily"
    first_year: int
    noise: CompositeNoise


SATELLITE_LAYOUTS: dict[Scale, SatelliteLayout] = {
    Scale.TINY: SatelliteLayout(
        1.0, "monthly", SATELLITE_FIRST_YEAR, CompositeNoise(0.15, 0.18, 0.35, 0.08, 0.2, 0.06)
    ),
    Scale.SMALL: SatelliteLayout(
        1 / 3, "8day", SATELLITE_FIRST_YEAR, CompositeNoise(0.25, 0.25, 0.7, 0.15, 0.45, 0.09)
    ),
    Scale.FULL: SatelliteLayout(
        1 / 6, "daily", 2006, CompositeNoise(0.4, 0.32, 1.2, 0.25, 0.9, 0.13)
    ),
}


@dataclass(frozen=True)
class SonarLayout:
    spacing_nmi: float  # between transects
    edsu_nmi: float  # length of one elementary distance unit
    extent_nmi: tuple[float, float]  # offshore length of a transect, drawn per transect


SONAR_LAYOUTS: dict[Scale, SonarLayout] = {
    Scale.TINY: SonarLayout(60.0, 5.0, (40.0, 60.0)),
    Scale.SMALL: SonarLayout(30.0, 2.0, (60.0, 100.0)),
    Scale.FULL: SonarLayout(15.0, 1.0, (60.0, 100.0)),
}

_STREAMS = {
    "env": 1,
    "stock": 2,
    "assessment": 3,
    "survey": 4,
    "grid": 5,
    "satellite": 6,
    "sonar": 7,
}
_ZONE_NAMES = pa.array(ZONES)
_SEASON_NAMES = pa.array(SEASONS)  # first, second, closed: codes 0, 1, 2
_CLOSED = 2


def _rng(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """An independent random stream per purpose (and per chunk or survey)."""
    return np.random.default_rng([seed, _STREAMS[purpose], *extra])


def _expit(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def zone_of_lat(lat: np.ndarray) -> np.ndarray:
    """Zone index (0 north, 1 centre, 2 south, as in ``ZONES``) of latitudes."""
    lat = np.asarray(lat)
    zone = np.where(lat > ZONE_NORTH_EDGE, 0, np.where(lat > ZONE_SOUTH_EDGE, 1, 2))
    return zone.astype(np.int8)


def season_quota(assessed_t: float, year: int) -> float:
    """Quota of a season for the whole stock, from the assessed biomass before it opens.

    Up to ``BOOM_LAST_YEAR`` the fleet took a large share of whatever was there; afterwards the
    quota keeps ``SPAWNING_RESERVE_T`` in the sea and takes at most ``EXPLOITATION_RATE``.
    (A season is also cancelled, quota 0, when its survey finds too many juveniles.)
    """
    if year <= BOOM_LAST_YEAR:
        return float(np.floor(BOOM_EXPLOITATION_RATE * assessed_t))
    allowed = min(EXPLOITATION_RATE * assessed_t, assessed_t - SPAWNING_RESERVE_T)
    return float(np.floor(max(0.0, allowed)))


# --- Stock simulation ------------------------------------------------------------------------


@dataclass
class StockSim:
    """The monthly simulation every table is drawn from (arrays are month × zone)."""

    months: pd.DatetimeIndex
    nino: np.ndarray  # Niño 1+2 anomaly, °C
    sst_resid: np.ndarray  # zone SST anomaly not explained by Niño 1+2, °C
    wind_anom: np.ndarray  # zone trade-wind anomaly, m/s
    biomass: np.ndarray  # true biomass, t
    assessed: np.ndarray  # assessed biomass, t
    catch: np.ndarray  # landings, t
    season: np.ndarray  # 0 first, 1 second, 2 closed
    quota: np.ndarray  # quota of the current season, t (whole stock)
    juvenile: np.ndarray  # share of fish < 12 cm, in numbers
    surveys: pd.DataFrame  # one row per survey × zone (see _survey_rows)


def _environment(seed: int, n: int, nino: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zone SST residual and wind anomaly: AR(1) processes shared by stock and satellite."""
    rng = _rng(seed, "env")
    # Neighbouring zones share part of their weather.
    shocks = 0.75 * rng.standard_normal((2, n, len(ZONES))) + 0.66 * rng.standard_normal((2, n, 1))
    sst = np.zeros((n, len(ZONES)))
    wind = np.zeros((n, len(ZONES)))
    for t in range(1, n):
        sst[t] = 0.7 * sst[t - 1] + 0.22 * shocks[0, t]
        wind[t] = 0.5 * wind[t - 1] + 0.55 * shocks[1, t]
    # Trade winds slacken a little in El Niño.
    return sst, wind - 0.15 * nino[:, None]


def _season_codes(month_num: np.ndarray) -> np.ndarray:
    season = np.full(month_num.shape, _CLOSED, dtype=np.int8)
    season[np.isin(month_num, FIRST_SEASON_MONTHS)] = 0
    season[np.isin(month_num, SECOND_SEASON_MONTHS)] = 1
    return season


def simulate_stock(seed: int) -> StockSim:
    """Run the monthly stock simulation 1960–2025 (the same at every scale)."""
    enso = nino12_monthly(LAST_YEAR, seed, first_year=STOCK_FIRST_YEAR)
    months = pd.DatetimeIndex(enso["month"])
    nino = enso["anomaly_c"].to_numpy()
    n, nz = len(months), len(ZONES)
    month_num = months.month.to_numpy()
    years = months.year.to_numpy()
    sst_resid, wind = _environment(seed, n, nino)
    zone_anom = nino[:, None] * _ZONE_ENSO_GAIN[None, :] + sst_resid

    rng = _rng(seed, "stock")
    eps = _PROCESS_SD * rng.standard_normal((n, nz))
    process = np.zeros((n, nz))
    for t in range(1, n):
        process[t] = 0.5 * process[t - 1] + eps[t]
    season_draw = rng.uniform(size=n)
    assess_z = _assessment_draws(seed, month_num)
    survey_rng = _rng(seed, "survey")

    year_frac = years + (month_num - 1) / 12
    regime = np.clip((_REGIME_END - year_frac) / 2.0, 0.0, 1.0)
    capacity = _CARRYING_CAPACITY_T * (1.0 + (_BOOM_CAPACITY_FACTOR - 1.0) * regime)
    # Recruits enter the stock in the austral summer.
    prod_season = 1.0 + 0.55 * np.cos(2 * np.pi * (month_num - 2) / 12)

    biomass = np.zeros((n, nz))
    assessed = np.zeros((n, nz))
    catch = np.zeros((n, nz))
    juvenile = np.zeros((n, nz))
    quota = np.zeros(n)
    realised = np.zeros(n)  # share of the quota the fleet lands this season
    season = _season_codes(month_num)
    biomass[0] = 12.0e6 * _ZONE_SHARE
    rel_prod = np.full(nz, 0.05)  # recent production per tonne of stock: the young fish
    surveys: list[dict[str, object]] = []
    survey_juvenile: dict[tuple[int, int], float] = {}

    for t in range(n):
        b = biomass[t]
        m, y = month_num[t], years[t]
        warm = np.maximum(zone_anom[t] - 0.5, 0.0)
        # Survey months are assessed now (quotas need them); the rest after the run.
        if m in SURVEY_MONTHS:
            sd = SURVEY_NOISE_SD
            assessed[t] = np.round(b * np.exp(sd * assess_z[t] - 0.5 * sd**2))
            if y >= SURVEY_FIRST_YEAR:
                number = SURVEY_MONTHS.index(m) + 1
                rows = _survey_rows(survey_rng, t, y, number, assessed[t], juvenile, zone_anom)
                surveys.extend(rows)
                survey_juvenile[(y, number)] = float(np.mean([r["juvenile"] for r in rows]))

        # An opening month fixes the season's quota from the survey month before it.
        if m in (FIRST_SEASON_MONTHS[0], SECOND_SEASON_MONTHS[0]) or t == 0:
            number = 1 if m in FIRST_SEASON_MONTHS else 2
            basis = assessed[t - 1].sum() if t > 0 else b.sum()
            too_young = survey_juvenile.get((y, number), 0.0) > JUVENILE_LIMIT
            quota[t] = 0.0 if too_young else season_quota(basis, y)
            boom = y <= BOOM_LAST_YEAR
            realised[t] = 0.95 + 0.05 * season_draw[t] if boom else 0.8 + 0.15 * season_draw[t]
        elif season[t] != _CLOSED:
            quota[t], realised[t] = quota[t - 1], realised[t - 1]

        if season[t] != _CLOSED and quota[t] > 0:
            if season[t] == 0:
                weight = _FIRST_WEIGHTS[FIRST_SEASON_MONTHS.index(m)]
            else:
                weight = _SECOND_WEIGHTS[SECOND_SEASON_MONTHS.index(m)]
            # Warm water sends fish deep, out of a managed fleet's reach; the boom-era fleet
            # kept fishing the crowded coastal refuges.
            reach = 1.0 if y <= BOOM_LAST_YEAR else np.exp(-_WARM_REACH * warm.mean())
            fishable = b * _ZONE_FLEET
            wanted = quota[t] * realised[t] * weight * reach * fishable / fishable.sum()
            catch[t] = np.floor(np.minimum(wanted, 0.45 * b))

        # Surplus production: logistic on the whole stock, modulated by each zone's ocean.
        cold = np.clip(-zone_anom[t], 0.0, 2.0)
        rate = (
            _PRODUCTION_RATE
            * prod_season[t]
            * np.exp(
                _WIND_PRODUCTION * wind[t] - _WARM_PRODUCTION_CUT * warm + _COLD_PRODUCTION * cold
            )
        )
        production = rate * b * (1.0 - b.sum() / capacity[t])
        rel_prod = 0.6 * rel_prod + 0.4 * np.maximum(production, 0.0) / np.maximum(b, 1.0)
        juvenile[t] = _juvenile_share(rel_prod, warm)
        if t == n - 1:
            break
        # Warm-water deaths; survivors crowd into cold coastal refuges, so a small stock loses
        # a smaller share.
        hot = np.clip(zone_anom[t] - _HOT_THRESHOLD, 0.0, _HOT_CAP)
        refuge = b.sum() / (b.sum() + _REFUGE_T)
        survive = np.exp(-_WARM_MORTALITY * hot * refuge)
        nxt = (b + production - catch[t]) * survive * np.exp(process[t] - 0.5 * _PROCESS_SD**2)
        nxt = np.maximum(nxt, _MIN_ZONE_T)
        # Warm water pushes the fish south.
        share = _ZONE_SHARE * np.exp(_ZONE_WARM_SHIFT * max(nino[t], 0.0))
        nxt = (1 - _MIGRATION) * nxt + _MIGRATION * share / share.sum() * nxt.sum()
        biomass[t + 1] = nxt

    between = ~np.isin(month_num, SURVEY_MONTHS)
    assessed[between] = _assess(biomass, assess_z)[between]
    return StockSim(
        months=months,
        nino=nino,
        sst_resid=sst_resid,
        wind_anom=wind,
        biomass=biomass,
        assessed=assessed,
        catch=catch,
        season=season,
        quota=quota,
        juvenile=juvenile,
        surveys=pd.DataFrame(surveys),
    )


def _juvenile_share(rel_prod: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """Share of fish < 12 cm: high after strong recruitment into a depleted stock, and in warm
    water (the adults go deep and south)."""
    return np.minimum(_expit(-3.6 + 18.0 * (rel_prod - 0.06) + 0.9 * warm), 0.9)


def _assessment_draws(seed: int, month_num: np.ndarray) -> np.ndarray:
    """Standard normal assessment errors (month × zone), stratified within each year.

    Each year's between-survey months take their sizes from ten equal-probability strata of
    the normal distribution in random order (a Latin hypercube) with random signs: every draw
    is still N(0, 1) with mean zero whatever came before, but a two-year window cannot be
    unusually quiet or loud by chance, which keeps the oracle's MASE near its calibration.
    """
    rng = _rng(seed, "assessment")
    years, nz = month_num.size // 12, len(ZONES)
    out = np.empty((years, 12, nz))
    survey = np.isin(np.arange(1, 13), SURVEY_MONTHS)
    for mask in (~survey, survey):
        k = int(mask.sum())
        strata = np.broadcast_to(np.arange(k)[None, :, None], (years, k, nz))
        u = (rng.permuted(strata, axis=1) + rng.uniform(size=(years, k, nz))) / k
        sign = np.where(rng.uniform(size=(years, k, nz)) < 0.5, -1.0, 1.0)
        out[:, mask, :] = sign * ndtri(0.5 + 0.5 * u)
    return out.reshape(-1, nz)


def _assess(truth: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Between-survey assessments: gamma errors with mean ``truth`` (so the oracle is the best
    forecast) and an sd blending the current and the zone's mean biomass (a depleted stock is
    measured no better in tonnes than a healthy one)."""
    ref = truth.mean(axis=0, keepdims=True)
    level = np.maximum(truth, 1.0)
    w = NOISE_LEVEL_WEIGHT
    spread = np.maximum(ASSESSMENT_NOISE_SD * (w * level + (1 - w) * ref), 1.0)
    shape = (level / spread) ** 2
    return np.round(gammaincinv(shape, ndtr(z)) * spread**2 / level)


def _survey_rows(
    rng: np.random.Generator,
    t: int,
    year: int,
    number: int,
    estimate: np.ndarray,
    juvenile: np.ndarray,
    zone_anom: np.ndarray,
) -> list[dict[str, object]]:
    """Survey-level results per zone, the same at every scale (sonar rows are drawn around
    them). ``estimate`` is the zone biomass the survey measures: that month's assessment."""
    if number == 1:  # summer survey, February–March
        start = np.datetime64(f"{year}-02-01") + int(rng.integers(3, 20))
    else:  # winter-spring survey, September–October
        start = np.datetime64(f"{year}-08-20") + int(rng.integers(0, 30))
    duration = int(rng.integers(35, 46))
    window = zone_anom[t - 1 : t + 1].mean(axis=0)
    juv_true = juvenile[t - 1]
    juv = _expit(_logit(juv_true) + 0.25 * rng.standard_normal(len(ZONES)))
    # Adults are smaller in bad years: poor growth in warm water, young fish maturing early.
    adult_cm = (
        14.4
        - 0.35 * np.maximum(window - 0.5, 0.0)
        - 4.0 * np.maximum(juv_true - 0.05, 0.0)
        + 0.2 * rng.standard_normal(len(ZONES))
    )
    return [
        {
            "survey_id": f"{year}-{number}",
            "start": start,
            "duration": duration,
            "zone": z,
            "biomass_t": float(estimate[z]),
            "juvenile": float(np.round(min(juv[z], 0.9), 4)),
            "adult_length_cm": float(np.clip(adult_cm[z], 11.5, 16.5)),
            "sst_anom": float(window[z]),
        }
        for z in range(len(ZONES))
    ]


def _write_stock(sim: StockSim, directory: Path, fmt: FileFormat) -> dict[str, int]:
    nz = len(ZONES)
    month = pa.array(np.repeat(sim.months.to_numpy().astype("datetime64[D]"), nz), pa.date32())
    zone = _ZONE_NAMES.take(pa.array(np.tile(np.arange(nz, dtype=np.int8), len(sim.months))))
    stock = pa.table(
        {
            "month": month,
            "zone": zone,
            "biomass_tonnes": sim.assessed.ravel(),
            "catch_tonnes": sim.catch.ravel(),
            "season": _SEASON_NAMES.take(pa.array(np.repeat(sim.season, nz))),
            "season_quota_tonnes": np.repeat(sim.quota, nz),
            "nino12_anomaly_c": np.repeat(np.round(sim.nino, 4), nz),
        }
    )
    oracle = pa.table({"month": month, "zone": zone, "expected": np.round(sim.biomass.ravel())})
    rows = {}
    for schema, table in ((STOCK, stock), (ORACLE, oracle)):
        with TableWriter(schema, directory, fmt) as writer:
            writer.write(table)
        rows[schema.name] = writer.rows
    return rows


# --- Geography -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Coast:
    lat: np.ndarray
    lon: np.ndarray
    arc_km: np.ndarray  # distance along the coast from its north end


def _coast(points: int = 4000) -> _Coast:
    idx = np.linspace(0, len(COAST) - 1, points)
    lat = np.interp(idx, np.arange(len(COAST)), COAST[:, 0])
    lon = np.interp(idx, np.arange(len(COAST)), COAST[:, 1])
    dy = np.diff(lat) * KM_PER_DEG
    dx = np.diff(lon) * KM_PER_DEG * np.cos(np.radians(0.5 * (lat[1:] + lat[:-1])))
    return _Coast(lat, lon, np.concatenate([[0.0], np.cumsum(np.hypot(dx, dy))]))


def _distance_to_coast_km(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    coast = _coast(1000)
    out = np.empty(lat.shape)
    for lo in range(0, lat.size, 512):  # bounded memory on fine grids
        sl = slice(lo, lo + 512)
        dy = (lat[sl, None] - coast.lat[None, :]) * KM_PER_DEG
        dx = (lon[sl, None] - coast.lon[None, :]) * KM_PER_DEG
        dx *= np.cos(np.radians(lat[sl]))[:, None]
        out[sl] = np.sqrt(dx**2 + dy**2).min(axis=1)
    return out


@dataclass(frozen=True)
class SatelliteGrid:
    """Ocean grid cells and the parameters of their climatology."""

    cell_id: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    zone: np.ndarray
    dist_km: np.ndarray  # to the coast
    coastal: np.ndarray  # 1 at the coast, ~0 beyond 300 km
    upwelling: np.ndarray  # coastal × near an upwelling centre, 0–1
    sst_mean: np.ndarray  # annual mean SST, °C
    sst_amp: np.ndarray  # seasonal amplitude, °C
    enso_gain: np.ndarray  # SST anomaly per °C of Niño 1+2
    chl_mean: np.ndarray  # log10 chlorophyll-a, mg/m³
    wind_mean: np.ndarray  # m/s

    @property
    def size(self) -> int:
        return int(self.cell_id.size)


def satellite_grid(scale: Scale, seed: int) -> SatelliteGrid:
    """Ocean cells of 3°S–18°S, 70°W–84°W within ``GRID_MAX_KM`` of the coast.

    ``cell_id`` is ``1000 × row + column`` of the scale's grid (rows from 3°S southwards,
    columns from 84°W eastwards), so it never changes between runs or seeds.
    """
    step = SATELLITE_LAYOUTS[Scale(scale)].step_deg
    rows, cols = np.arange(round(15 / step)), np.arange(round(14 / step))
    i_lat, i_lon = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    lat = -3.0 - (i_lat + 0.5) * step
    lon = -84.0 + (i_lon + 0.5) * step
    dist = _distance_to_coast_km(lat, lon)
    west_of_coast = lon < np.interp(lat, COAST[::-1, 0], COAST[::-1, 1])
    keep = west_of_coast & (dist <= GRID_MAX_KM)
    i_lat, i_lon, lat, lon, dist = i_lat[keep], i_lon[keep], lat[keep], lon[keep], dist[keep]

    coastal = np.exp(-dist / 90.0)
    near_centre = np.minimum(
        np.exp(-(((lat[:, None] - UPWELLING_LATS[None, :]) / 0.7) ** 2)).sum(axis=1), 1.0
    )
    offshore = 1.0 - np.exp(-dist / 250.0)
    rng = _rng(seed, "grid")
    # Cold upwelled water at the coast, warmer offshore and to the north, and the equatorial
    # front north of Paita.
    sst_mean = (
        16.6
        + 0.35 * np.maximum(lat + 12.0, 0.0)
        - 0.05 * np.maximum(-12.0 - lat, 0.0)
        + 4.5 * offshore
        + 3.5 * _expit((lat + 4.2) / 0.35)
        - 1.0 * coastal * near_centre
        + 0.2 * rng.standard_normal(lat.size)
    )
    # El Niño warms the coast and the north most.
    enso_gain = (0.6 + 0.45 * np.exp(-dist / 150.0)) * (0.8 + 0.4 * _expit((lat + 9.0) / 1.5))
    chl_mean = (
        -0.85
        + coastal * (0.9 + 0.75 * near_centre)
        + 0.15 * _expit((lat + 4.0) / 0.5)  # river run-off into the Gulf of Guayaquil
        + 0.1 * rng.standard_normal(lat.size)
    )
    wind_mean = (
        5.6 + 1.6 * offshore + 0.8 * near_centre * coastal + 0.3 * rng.standard_normal(lat.size)
    )
    return SatelliteGrid(
        cell_id=(i_lat * 1000 + i_lon).astype(np.int32),
        lat=np.round(lat, 4),
        lon=np.round(lon, 4),
        zone=zone_of_lat(lat),
        dist_km=dist,
        coastal=coastal,
        upwelling=coastal * near_centre,
        sst_mean=sst_mean,
        sst_amp=2.0 + 0.6 * offshore,
        enso_gain=enso_gain,
        chl_mean=chl_mean,
        wind_mean=wind_mean,
    )


# --- Satellite -------------------------------------------------------------------------------


def satellite_dates(scale: Scale) -> tuple[np.ndarray, np.ndarray]:
    """First day (``datetime64[D]``) and length in days of every composite at ``scale``.

    Monthly composites start on the 1st; 8-day composites run back to back from 1 January of
    the first year (a constant cadence, not restarted each year); daily is every day.
    """
    layout = SATELLITE_LAYOUTS[Scale(scale)]
    first = np.datetime64(f"{layout.first_year}-01-01", "D")
    end = np.datetime64(f"{LAST_YEAR + 1}-01-01", "D")
    if layout.cadence == "monthly":
        months = np.arange(first.astype("datetime64[M]"), end.astype("datetime64[M]"))
        starts = months.astype("datetime64[D]")
        return starts, ((months + 1).astype("datetime64[D]") - starts).astype(int)
    step = 8 if layout.cadence == "8day" else 1
    starts = np.arange(first, end, step)
    return starts, np.minimum(step, (end - starts).astype(int))


def _chunks(scale: Scale, starts: np.ndarray) -> list[np.ndarray]:
    """Composite indices per written chunk: a calendar month of days, else a year."""
    unit = (
        "datetime64[M]" if SATELLITE_LAYOUTS[Scale(scale)].cadence == "daily" else "datetime64[Y]"
    )
    key = starts.astype(unit).astype(np.int64)
    return np.split(np.arange(starts.size), np.flatnonzero(np.diff(key)) + 1)


@dataclass(frozen=True)
class _Drivers:
    """The simulation's monthly ocean, interpolated between mid-months (as enso.anomaly_at)."""

    mid_month: np.ndarray  # days since the epoch
    nino: np.ndarray
    sst_resid: np.ndarray
    wind_anom: np.ndarray

    @classmethod
    def of(cls, sim: StockSim) -> _Drivers:
        mid = (sim.months.to_numpy().astype("datetime64[D]") + 14).astype(np.int64)
        return cls(mid, sim.nino, sim.sst_resid, sim.wind_anom)

    def at(self, days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = days.astype(np.int64)
        zones = range(len(ZONES))
        return (
            np.interp(x, self.mid_month, self.nino),
            np.column_stack([np.interp(x, self.mid_month, self.sst_resid[:, z]) for z in zones]),
            np.column_stack([np.interp(x, self.mid_month, self.wind_anom[:, z]) for z in zones]),
        )


def _satellite_chunk(
    drivers: _Drivers,
    grid: SatelliteGrid,
    starts: np.ndarray,
    days: np.ndarray,
    noise: CompositeNoise,
    rng: np.random.Generator,
) -> pa.Table:
    """All cells × composites of one chunk, vectorised (composites × cells arrays)."""
    n_d, n_c = starts.size, grid.size
    mid = starts + (days // 2).astype("timedelta64[D]")
    doy = (mid - mid.astype("datetime64[Y]")).astype(np.float64)[:, None]
    nino, zone_sst, zone_wind = drivers.at(mid)
    zone_sst = zone_sst + noise.zone_sst * rng.standard_normal(zone_sst.shape)
    zone_wind = zone_wind + noise.zone_wind * rng.standard_normal(zone_wind.shape)
    near = 0.4 + 0.6 * grid.coastal[None, :]  # the zone's ocean shows most at the coast

    # SST: warmest in late February; the anomaly is El Niño plus the zone's own ocean.
    clim = np.round(grid.sst_mean + grid.sst_amp * np.cos(2 * np.pi * (doy - 50) / 365.25), 2)
    anom = (
        nino[:, None] * grid.enso_gain
        + zone_sst[:, grid.zone] * near
        + noise.sst * rng.standard_normal((n_d, n_c))
    )
    sst = np.clip(np.round(clim + anom, 2), 10.5, 32.5)

    # Trade winds peak in the austral winter (August).
    winter = np.cos(2 * np.pi * (doy - 230) / 365.25)
    wind_anom = zone_wind[:, grid.zone]
    wind = grid.wind_mean + 1.0 * winter + wind_anom + noise.wind * rng.standard_normal(sst.shape)

    # Chlorophyll: summer bloom at the coast, more with upwelling winds, less in warm water.
    log_chl = (
        grid.chl_mean
        + 0.2 * np.cos(2 * np.pi * (doy - 45) / 365.25) * grid.coastal
        + (0.07 * wind_anom - 0.12 * np.maximum(anom, 0.0) + 0.04 * np.clip(-anom, 0, 2)) * near
        + noise.chl * rng.standard_normal(sst.shape)
    )
    chl = np.clip(np.round(10.0**log_chl, 3), 0.02, 80.0)
    # Winter stratocumulus hides the coastal ocean most.
    p_cloud = noise.cloud * (1.0 + 0.6 * winter) * (0.8 + 0.4 * grid.coastal)
    cloudy = rng.uniform(size=sst.shape) < p_cloud

    return pa.table(
        {
            "date": pa.array(np.repeat(starts, n_c), pa.date32()),
            "cell_id": np.tile(grid.cell_id, n_d),
            "lat": np.tile(grid.lat, n_d),
            "lon": np.tile(grid.lon, n_d),
            "zone": _ZONE_NAMES.take(pa.array(np.tile(grid.zone, n_d))),
            "sst_c": sst.ravel(),
            "sst_anomaly_c": np.round(sst - clim, 2).ravel(),
            "chlorophyll_mg_m3": pa.array(chl.ravel(), mask=cloudy.ravel()),
            "wind_speed_m_s": np.clip(np.round(wind, 2), 0.1, 25.0).ravel(),
        }
    )


def _write_satellite(sim: StockSim, config: GeneratorConfig, directory: Path) -> int:
    scale = Scale(config.scale)
    grid = satellite_grid(scale, config.seed)
    starts, days = satellite_dates(scale)
    noise = SATELLITE_LAYOUTS[scale].noise
    drivers = _Drivers.of(sim)
    chunks = _chunks(scale, starts)
    # One chunk at a time: memory stays bounded at a month of daily rows (~100k).
    with (
        TableWriter(SATELLITE, directory, config.format) as writer,
        progress(f"satellite rows ({scale.value}, {grid.size} cells)", len(chunks)) as bar,
    ):
        for i, idx in enumerate(chunks):
            rng = _rng(config.seed, "satellite", i)
            writer.write(_satellite_chunk(drivers, grid, starts[idx], days[idx], noise, rng))
            bar.advance()
    return writer.rows


# --- Sonar -----------------------------------------------------------------------------------


def _transects(spacing_nmi: float) -> pd.DataFrame:
    """Transect origins on the coast, every ``spacing_nmi`` within each zone, numbered north
    to south, with the offshore unit vector (``east``, ``north``) perpendicular to the coast."""
    coast = _coast()
    zone = zone_of_lat(coast.lat)
    end_km = np.interp(SURVEY_SOUTH_END, coast.lat[::-1], coast.arc_km[::-1])
    step = spacing_nmi * KM_PER_NMI
    rows = []
    for z in range(len(ZONES)):
        arc = coast.arc_km[zone == z]
        for s in np.arange(arc.min() + step / 2, min(arc.max(), end_km), step):
            lat0 = np.interp(s, coast.arc_km, coast.lat)
            lon0 = np.interp(s, coast.arc_km, coast.lon)
            ahead = np.interp([s - 10.0, s + 10.0], coast.arc_km, coast.lat)
            ahead_lon = np.interp([s - 10.0, s + 10.0], coast.arc_km, coast.lon)
            ty = (ahead[1] - ahead[0]) * KM_PER_DEG
            tx = (ahead_lon[1] - ahead_lon[0]) * KM_PER_DEG * np.cos(np.radians(lat0))
            norm = np.hypot(tx, ty)
            # Walking south along the coast, (ty, -tx) points out to sea (west).
            rows.append((z, lat0, lon0, ty / norm, -tx / norm))
    out = pd.DataFrame(rows, columns=["zone", "lat0", "lon0", "east", "north"])
    out["transect"] = np.arange(1, len(out) + 1, dtype=np.int32)
    return out


def fish_weight_g(length_cm: np.ndarray) -> np.ndarray:
    """Anchoveta weight at length."""
    return 0.0042 * np.asarray(length_cm) ** 3.2


def backscatter_m2(length_cm: np.ndarray) -> np.ndarray:
    """Spherical scattering cross-section of one fish (TS = 20 log10 L − 71.9 dB)."""
    return 4 * np.pi * 10 ** ((20 * np.log10(length_cm) - 71.9) / 10)


def _scale_to_mean(raw: np.ndarray, target: float, cap: float = 0.98) -> np.ndarray:
    """Positive values proportional to ``raw`` with mean ``target`` and none above ``cap``."""
    out = raw * target / raw.mean()
    for _ in range(20):  # hand what the cap cuts off to the others
        over = out > cap
        if not over.any():
            break
        excess = (out[over] - cap).sum()
        out[over] = cap
        out[~over] += excess * out[~over] / out[~over].sum()
    return np.minimum(out, cap)


def _survey_edsus(
    survey: pd.DataFrame, transects: pd.DataFrame, layout: SonarLayout, rng: np.random.Generator
) -> pa.Table:
    """Every EDSU of one survey (``survey`` holds its three zone rows)."""
    info = survey.set_index("zone").sort_index()
    n_tr = len(transects)
    extent = rng.uniform(*layout.extent_nmi, n_tr)
    n_edsu = np.maximum(np.round(extent / layout.edsu_nmi).astype(int), 3)
    tr = np.repeat(np.arange(n_tr), n_edsu)
    edsu = (np.arange(tr.size) - np.repeat(np.cumsum(n_edsu) - n_edsu, n_edsu) + 1).astype(np.int32)
    dist = (edsu - 0.5) * layout.edsu_nmi  # nmi offshore
    zone = transects["zone"].to_numpy()[tr]
    lat0 = transects["lat0"].to_numpy()[tr]
    lat = lat0 + transects["north"].to_numpy()[tr] * dist * KM_PER_NMI / KM_PER_DEG
    lon = transects["lon0"].to_numpy()[tr] + transects["east"].to_numpy()[
        tr
    ] * dist * KM_PER_NMI / (KM_PER_DEG * np.cos(np.radians(lat0)))
    # The ship runs the transects north to south over the survey's days.
    day = np.floor(tr * int(info["duration"].iloc[0]) / n_tr).astype(int)
    date = np.datetime64(info["start"].iloc[0], "D") + day.astype("timedelta64[D]")

    # Juveniles sit nearer the coast; each zone's mean is the survey's estimate.
    raw = np.exp(0.5 * rng.standard_normal(tr.size) - 0.4 * dist / 30.0)
    juv = np.empty(tr.size)
    for z in range(len(ZONES)):
        juv[zone == z] = _scale_to_mean(raw[zone == z], info["juvenile"].iloc[z])
    adult_cm = info["adult_length_cm"].to_numpy()[zone]
    length = juv * 9.5 + (1 - juv) * adult_cm + 0.25 * rng.standard_normal(tr.size)
    length = np.clip(length, 6.0, 18.5)

    # Fish hug the coast (more so in warm water) in patchy schools.
    warm = np.maximum(info["sst_anom"].to_numpy() - 0.5, 0.0)[zone]
    scale_nmi = 28.0 * np.exp(-0.25 * warm)
    present = rng.uniform(size=tr.size) < 0.1 + 0.65 * np.exp(-dist / (1.5 * scale_nmi))
    weight = np.exp(-dist / scale_nmi) * present * np.exp(1.2 * rng.standard_normal(tr.size))
    area = layout.edsu_nmi * layout.spacing_nmi  # nmi² one EDSU stands for
    density = np.zeros(tr.size)  # t/nmi², summing to the zone's survey biomass
    for z in range(len(ZONES)):
        sel = zone == z
        total = weight[sel].sum() * area
        if total > 0:
            density[sel] = weight[sel] * info["biomass_t"].iloc[z] / total
    nasc = density * 1e6 / fish_weight_g(length) * backscatter_m2(length)
    # Plankton and noise where there are no fish.
    nasc += np.where(present, 0.0, 0.8 * np.exp(rng.standard_normal(tr.size)))
    return pa.table(
        {
            "survey_id": pa.array([survey["survey_id"].iloc[0]] * tr.size),
            "date": pa.array(date, pa.date32()),
            "zone": _ZONE_NAMES.take(pa.array(zone.astype(np.int8))),
            "transect": transects["transect"].to_numpy()[tr],
            "edsu": edsu,
            "lat": np.round(lat, 4),
            "lon": np.round(lon, 4),
            "nasc_m2_nmi2": np.round(np.minimum(nasc, 9.9e5), 2),
            "mean_length_cm": np.round(length, 2),
            "juvenile_fraction": np.round(juv, 4),
        }
    )


def _write_sonar(sim: StockSim, config: GeneratorConfig, directory: Path) -> int:
    layout = SONAR_LAYOUTS[Scale(config.scale)]
    transects = _transects(layout.spacing_nmi)
    with TableWriter(SONAR, directory, config.format) as writer:
        for i, (_, survey) in enumerate(sim.surveys.groupby("survey_id", sort=False)):
            writer.write(_survey_edsus(survey, transects, layout, _rng(config.seed, "sonar", i)))
    return writer.rows


# --- Entry point -----------------------------------------------------------------------------


def write_synthetic(config: GeneratorConfig, directory: Path) -> dict[str, int]:
    """Write ``satellite``, ``sonar``, ``stock`` and ``oracle`` into ``directory``.

    Returns:
        Rows written per table.
    """
    directory = Path(directory)
    sim = simulate_stock(config.seed)
    rows = _write_stock(sim, directory, config.format)
    rows["sonar"] = _write_sonar(sim, config, directory)
    rows["satellite"] = _write_satellite(sim, config, directory)
    return {name: rows[name] for name in ("satellite", "sonar", "stock", "oracle")}
