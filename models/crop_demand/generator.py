"""Seeded synthetic generator of weekly crop demand, supply, prices and weather in Peru.

The simulation runs week by week over 25 regions and up to 13 crops, calibrated to the orders of
magnitude in ``DOMAIN.md``:

* **Weather** per region: seasonal temperature and precipitation by climate zone, and the real
  Niño 1+2 anomaly (``models.enso``; simulated from the seed after 2010). El Niño costero brings
  heavy rain to the north coast (Tumbes, Piura, Lambayeque, La Libertad) and drought to the
  southern altiplano.
* **Supply** (harvest reaching markets) by producing region: national production trend × regional
  share × harvest calendar × slow yield shocks × lumpy weekly arrivals × flood damage. Flood damage
  follows heavy rain with a per-crop memory and hits rice, mango and lemon hardest.
* **Prices**: the national price falls as national supply rises above its trend (so prices follow
  the harvest calendar and spike when El Niño destroys a harvest), export/import crops follow the
  exchange rate, and regional prices add transport markups and local noise. Prices carry a smooth
  price level (2.5 %/yr after 2001, 6 %/yr in the 1990s; the 1980s hyperinflation is not
  modelled, so pre-1991 prices are Nuevo Sol equivalents).
* **Demand** per region: national consumption trend × population share × regional taste ×
  seasonality (harvest availability for perishable fruit, Semana Santa, Fiestas Patrias,
  Christmas, New Year, school holidays) × own-price elasticity (−0.25 to −0.55) × cross-price
  substitution × slow regional drifts. The oracle table holds this expected demand; the observed
  ``demand_tonnes`` multiplies it by persistent, heavy-tailed noise.

Everything at the region × crop level is generated one calendar year at a time, with the state of
every autoregressive process carried between years, so memory stays at about one year of rows.
Only the small per-week and per-region-week drivers (ENSO, exchange rate, weather) are computed for
the whole period up front.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from dateutil.easter import easter

from models.base import GeneratorConfig, Scale
from models.crop_demand import schema
from models.enso import anomaly_at, nino12_monthly
from perucast.io import TableWriter
from perucast.progress import progress

WEEKS_PER_YEAR = 365.25 / 7

# First and last Monday of each scale.
PERIODS: dict[Scale, tuple[str, str]] = {
    Scale.TINY: ("1995-01-02", "2001-12-31"),
    Scale.SMALL: ("1996-01-01", "2025-12-29"),
    Scale.FULL: ("1981-01-05", "2025-12-29"),
}
# Tiny keeps the staples and the crops El Niño hits, so tests see every mechanism.
TINY_CROPS: tuple[str, ...] = ("potato", "rice", "avocado", "mango", "lemon")
NORTH_COAST: tuple[str, ...] = ("tumbes", "piura", "lambayeque", "la_libertad")


class _Region(NamedTuple):
    pop_m: float  # population 2020, millions
    drift: float  # population growth relative to the national rate, per year
    zone: str  # coast_north, coast_central, coast_south, highlands, selva, amazon
    temp_c: float  # annual mean air temperature
    temp_amp: float  # seasonal half-range (warmest mid-February)
    precip_mm: float  # annual precipitation
    conc: float  # concentration of the rainy season (von Mises kappa)
    peak_doy: int  # day of year of the rain peak
    shape: float  # gamma shape of weekly rain: small is spiky and mostly dry
    nino_temp: float  # °C per °C of Niño 1+2 anomaly
    nino_rain: float  # El Niño rain, mm/week per unit of (anomaly - 0.8)^1.5 at the wet peak
    nino_dry: float  # 1 where El Niño brings drought (southern altiplano)
    remote: float  # log price markup of crops brought in from elsewhere


REGION_TABLE: dict[str, _Region] = {
    "amazonas": _Region(0.43, -0.002, "selva", 20.5, 1.0, 1300, 0.8, 60, 1.5, 0.2, 0, 0, 0.10),
    "ancash": _Region(1.18, -0.002, "highlands", 13.5, 1.2, 750, 1.6, 45, 1.0, 0.4, 0, 0, 0.03),
    "apurimac": _Region(0.43, -0.004, "highlands", 13.0, 1.5, 800, 1.6, 45, 1.0, 0.25, 0, 1, 0.05),
    "arequipa": _Region(1.50, 0.003, "coast_south", 15.0, 1.5, 100, 2.2, 40, 0.5, 0.4, 0, 1, 0.02),
    "ayacucho": _Region(0.67, -0.003, "highlands", 14.0, 1.5, 650, 1.7, 45, 1.0, 0.25, 0, 1, 0.04),
    "cajamarca": _Region(1.45, -0.006, "highlands", 14.5, 0.8, 750, 1.3, 60, 1.0, 0.35, 0, 0, 0.04),
    "callao": _Region(1.13, 0.004, "coast_central", 19.0, 3.5, 10, 1.0, 210, 0.2, 0.6, 0, 0, 0.0),
    "cusco": _Region(1.36, -0.002, "highlands", 11.5, 1.5, 750, 1.7, 30, 1.0, 0.25, 0, 1, 0.04),
    "huancavelica": _Region(0.37, -0.008, "highlands", 9, 1.5, 800, 1.6, 45, 1, 0.25, 0, 1, 0.05),
    "huanuco": _Region(0.76, -0.002, "highlands", 14.0, 1.0, 650, 1.3, 45, 1.0, 0.25, 0, 0, 0.04),
    "ica": _Region(0.98, 0.002, "coast_central", 21.5, 4.0, 5, 1.0, 45, 0.2, 0.5, 0, 0, 0.02),
    "junin": _Region(1.36, -0.001, "highlands", 11.5, 1.5, 750, 1.5, 45, 1.0, 0.25, 0, 0, 0.02),
    "la_libertad": _Region(2.02, 0.003, "coast_north", 20, 3, 25, 2.0, 60, 0.3, 0.7, 8, 0, 0.02),
    "lambayeque": _Region(1.31, 0.001, "coast_north", 22.5, 3, 35, 2.2, 70, 0.3, 0.8, 16, 0, 0.03),
    "lima": _Region(10.63, 0.004, "coast_central", 19.5, 3.5, 15, 1.0, 210, 0.2, 0.6, 0, 0, 0.0),
    "loreto": _Region(1.03, 0.0, "amazon", 27.0, 0.7, 2800, 0.4, 75, 2.0, 0.1, 0, 0, 0.35),
    "madre_de_dios": _Region(0.17, 0.02, "amazon", 25.5, 1.5, 2300, 0.7, 30, 1.8, 0.1, 0, 0, 0.25),
    "moquegua": _Region(0.19, 0.0, "coast_south", 17.5, 2.5, 30, 2.0, 40, 0.3, 0.4, 0, 1, 0.05),
    "pasco": _Region(0.27, -0.006, "highlands", 6.0, 1.0, 950, 1.4, 45, 1.0, 0.2, 0, 0, 0.05),
    "piura": _Region(2.05, 0.001, "coast_north", 24.5, 3.0, 60, 2.5, 75, 0.3, 0.8, 26, 0, 0.03),
    "puno": _Region(1.24, -0.004, "highlands", 8.5, 2.0, 700, 1.8, 30, 1.0, 0.2, 0, 1, 0.08),
    "san_martin": _Region(0.90, 0.003, "selva", 26.0, 1.0, 1400, 0.6, 75, 1.5, 0.15, 0, 0, 0.06),
    "tacna": _Region(0.37, 0.002, "coast_south", 18.0, 4.0, 20, 1.0, 45, 0.3, 0.4, 0, 1, 0.05),
    "tumbes": _Region(0.25, 0.006, "coast_north", 25.5, 2.0, 250, 2.5, 60, 0.4, 0.8, 32, 0, 0.06),
    "ucayali": _Region(0.59, 0.008, "amazon", 26.5, 1.0, 2100, 0.6, 75, 2.0, 0.1, 0, 0, 0.15),
}  # fmt: skip


class _Crop(NamedTuple):
    prod_mt: float  # national production 2020, Mt
    prod_growth: float  # production trend, per year
    demand_mt: float  # domestic consumption 2020, Mt (export crops: far below production)
    pc_growth: float  # per-capita consumption trend, per year
    price: float  # wholesale price in Lima 2020, PEN/kg
    elasticity: float  # own-price elasticity of demand (log-log)
    flex: float  # price flexibility: -dlog price / dlog national supply
    buffer: float  # storage and imports, in mean weekly supplies: damps the price response
    usd_pass: float  # export (or import) parity: dlog price / dlog usd_pen
    avail: float  # how much demand follows the harvest season (perishable fruit)
    seas_amp: float  # other seasonal demand (summer ceviche, winter soups), log amplitude
    seas_peak: int  # day of year of that peak
    damage: float  # supply loss per unit of flood damage
    damage_hl: float  # half-life of flood damage, weeks (orchards take longer)
    harvest: tuple[float, ...]  # national harvest calendar, January..December


CROP_TABLE: dict[str, _Crop] = {
    "potato": _Crop(5.5, 0.028, 4.4, 0.012, 1.3, -0.30, 0.70, 0.30, 0.0, 0.15, 0.04, 200, 0.4, 6,
                    (0.5, 0.6, 0.9, 1.6, 2.0, 1.7, 1.0, 0.6, 0.5, 0.5, 0.5, 0.5)),
    "rice": _Crop(3.4, 0.035, 2.4, 0.008, 3.3, -0.25, 0.80, 0.40, 0.1, 0.05, 0.0, 1, 1.3, 12,
                  (0.6, 0.6, 0.8, 1.2, 1.6, 1.6, 1.3, 0.9, 0.8, 0.7, 0.6, 0.6)),
    "banana": _Crop(2.3, 0.025, 1.9, 0.005, 1.4, -0.40, 0.40, 0.20, 0.0, 0.1, 0.03, 30, 0.4, 6,
                    (1.1, 1.1, 1.1, 1.05, 1.0, 0.95, 0.9, 0.9, 0.95, 1.0, 1.0, 1.05)),
    "yellow_maize": _Crop(1.3, 0.025, 1.6, 0.02, 1.2, -0.30, 0.30, 0.60, 0.4, 0.0, 0.0, 1, 0.4,
                          6, (0.7, 0.7, 0.8, 0.9, 1.1, 1.3, 1.4, 1.3, 1.1, 0.9, 0.8, 0.7)),
    "cassava": _Crop(1.2, 0.02, 1.1, 0.0, 1.1, -0.35, 0.40, 0.20, 0.0, 0.1, 0.0, 1, 0.4, 6,
                     (1.0, 1.0, 1.05, 1.05, 1.0, 1.0, 1.0, 0.95, 0.95, 1.0, 1.0, 1.0)),
    "grape": _Crop(0.9, 0.055, 0.30, 0.02, 4.5, -0.55, 0.50, 0.15, 0.5, 0.5, 0.0, 1, 0.4, 8,
                   (1.9, 2.0, 1.5, 0.9, 0.5, 0.35, 0.3, 0.3, 0.45, 0.8, 1.4, 1.8)),
    "avocado": _Crop(0.8, 0.07, 0.25, 0.035, 6.5, -0.50, 0.50, 0.20, 0.5, 0.35, 0.0, 1, 0.4, 8,
                     (0.4, 0.4, 0.7, 1.3, 1.8, 1.9, 1.7, 1.3, 0.9, 0.6, 0.5, 0.5)),
    "onion": _Crop(0.7, 0.03, 0.55, 0.01, 1.6, -0.30, 0.70, 0.50, 0.0, 0.1, 0.0, 1, 0.4, 6,
                   (1.1, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 1.0, 1.1, 1.1, 1.1, 1.1)),
    "mango": _Crop(0.5, 0.04, 0.20, 0.015, 2.8, -0.50, 0.60, 0.15, 0.4, 0.6, 0.0, 1, 1.4, 16,
                   (2.2, 2.0, 1.0, 0.3, 0.1, 0.05, 0.05, 0.05, 0.1, 0.6, 1.8, 2.4)),
    "asparagus": _Crop(0.35, 0.04, 0.03, 0.02, 7.0, -0.50, 0.30, 0.20, 0.7, 0.2, 0.0, 1, 0.4, 6,
                       (0.8, 0.8, 0.9, 0.9, 0.9, 0.9, 1.0, 1.1, 1.2, 1.2, 1.2, 1.0)),
    "coffee": _Crop(0.35, 0.03, 0.04, 0.03, 12.5, -0.35, 0.25, 1.0, 0.8, 0.0, 0.05, 200, 0.4, 6,
                    (0.2, 0.2, 0.4, 0.9, 1.6, 2.0, 2.0, 1.7, 1.1, 0.6, 0.3, 0.2)),
    "quinoa": _Crop(0.1, 0.035, 0.05, 0.03, 7.5, -0.45, 0.40, 1.0, 0.5, 0.1, 0.05, 200, 0.4, 6,
                    (0.4, 0.4, 0.8, 1.8, 2.3, 1.8, 0.9, 0.6, 0.5, 0.5, 0.5, 0.5)),
    "lemon": _Crop(0.3, 0.02, 0.27, 0.01, 3.0, -0.30, 1.10, 0.15, 0.0, 0.25, 0.10, 30, 1.4, 14,
                   (1.5, 1.6, 1.5, 1.3, 1.0, 0.8, 0.6, 0.55, 0.6, 0.8, 1.0, 1.3)),
}  # fmt: skip

# Share of national production by region (normalised per crop; unlisted regions grow none).
PRODUCTION: dict[str, dict[str, float]] = {
    "potato": {"puno": 13, "huanuco": 12, "cusco": 8, "cajamarca": 7, "la_libertad": 9,
               "junin": 9, "apurimac": 8, "ayacucho": 6, "huancavelica": 5, "arequipa": 6,
               "pasco": 3, "ancash": 4, "amazonas": 2, "lima": 4, "piura": 1, "lambayeque": 1,
               "moquegua": 0.5, "tacna": 0.5, "ica": 1},
    "rice": {"san_martin": 24, "piura": 17, "lambayeque": 14, "amazonas": 12, "arequipa": 8,
             "la_libertad": 6, "cajamarca": 6, "tumbes": 4, "loreto": 4, "ucayali": 2,
             "madre_de_dios": 0.5, "ancash": 2, "huanuco": 1},
    "banana": {"loreto": 13, "ucayali": 13, "san_martin": 15, "piura": 10, "junin": 10,
               "huanuco": 7, "amazonas": 6, "cusco": 5, "madre_de_dios": 3, "tumbes": 5,
               "cajamarca": 4, "pasco": 4, "ayacucho": 3, "puno": 1},
    "yellow_maize": {"la_libertad": 13, "san_martin": 15, "lima": 10, "ica": 7, "lambayeque": 6,
                     "piura": 6, "loreto": 7, "cajamarca": 5, "ucayali": 5, "huanuco": 4,
                     "ancash": 6, "amazonas": 4, "madre_de_dios": 3, "junin": 2},
    "cassava": {"loreto": 14, "ucayali": 9, "san_martin": 9, "junin": 10, "amazonas": 10,
                "huanuco": 6, "cusco": 5, "pasco": 5, "cajamarca": 5, "madre_de_dios": 3,
                "ayacucho": 3, "piura": 3, "lambayeque": 2, "lima": 3, "tumbes": 1, "puno": 2},
    "grape": {"ica": 45, "piura": 25, "lima": 10, "la_libertad": 6, "arequipa": 6,
              "lambayeque": 3, "tacna": 3, "moquegua": 2},
    "avocado": {"la_libertad": 28, "lima": 15, "ica": 12, "junin": 8, "ancash": 7,
                "arequipa": 5, "lambayeque": 6, "piura": 5, "ayacucho": 4, "cusco": 3,
                "moquegua": 2, "apurimac": 3, "huancavelica": 1, "cajamarca": 1},
    "onion": {"arequipa": 60, "ica": 10, "lima": 8, "tacna": 6, "la_libertad": 5,
              "lambayeque": 3, "piura": 2, "junin": 2, "ayacucho": 2, "moquegua": 1,
              "apurimac": 1},
    "mango": {"piura": 70, "lambayeque": 12, "ancash": 5, "la_libertad": 3, "cajamarca": 3,
              "ica": 2, "lima": 2, "tumbes": 1, "san_martin": 2},
    "asparagus": {"la_libertad": 52, "ica": 38, "lima": 6, "lambayeque": 2, "ancash": 2},
    "coffee": {"junin": 22, "san_martin": 22, "cajamarca": 18, "amazonas": 10, "cusco": 10,
               "pasco": 5, "puno": 4, "huanuco": 3, "piura": 3, "ayacucho": 2,
               "madre_de_dios": 0.5},
    "quinoa": {"puno": 50, "ayacucho": 15, "apurimac": 8, "cusco": 7, "junin": 6,
               "arequipa": 8, "huancavelica": 3, "la_libertad": 2, "huanuco": 1},
    "lemon": {"piura": 60, "tumbes": 7, "lambayeque": 8, "san_martin": 5, "loreto": 5,
              "ucayali": 4, "junin": 3, "la_libertad": 3, "ica": 2, "lima": 2, "cajamarca": 1},
}  # fmt: skip

# Harvest calendar shifts (days later than the national calendar) where a region differs.
HARVEST_SHIFT: dict[tuple[str, str], float] = {
    ("piura", "grape"): -75,  # Piura grapes: October–December, before Ica
    ("arequipa", "rice"): -45,  # Arequipa rice: March–May
    ("lima", "potato"): 110,  # coastal potato: winter harvest
    ("ica", "potato"): 110,
    ("arequipa", "potato"): 60,
    ("junin", "avocado"): -90,  # Fuerte avocado of the central selva: January–April
    ("lambayeque", "mango"): 15,
    ("ancash", "mango"): 30,
}

# Per-capita consumption relative to the national mean, by zone (region overrides win).
TASTE: dict[str, dict[str, float]] = {
    "potato": {"coast_north": 0.8, "coast_central": 0.9, "coast_south": 1.0, "highlands": 1.5,
               "selva": 0.6, "amazon": 0.45},
    "rice": {"coast_north": 1.25, "coast_central": 1.05, "coast_south": 1.0, "highlands": 0.75,
             "selva": 1.35, "amazon": 1.4},
    "banana": {"coast_north": 0.8, "coast_central": 0.7, "coast_south": 0.7, "highlands": 0.7,
               "selva": 2.0, "amazon": 3.0},
    "yellow_maize": {"coast_north": 1.2, "coast_central": 1.3, "coast_south": 1.2,
                     "highlands": 0.5, "selva": 0.8, "amazon": 0.6},
    "cassava": {"coast_north": 0.5, "coast_central": 0.5, "coast_south": 0.5, "highlands": 0.6,
                "selva": 2.5, "amazon": 4.0},
    "grape": {"coast_north": 1.1, "coast_central": 1.25, "coast_south": 1.2, "highlands": 0.7,
              "selva": 0.6, "amazon": 0.6},
    "avocado": {"coast_north": 1.1, "coast_central": 1.25, "coast_south": 1.1, "highlands": 0.8,
                "selva": 0.7, "amazon": 0.5},
    "onion": {"highlands": 0.9},
    "mango": {"coast_north": 1.4, "coast_central": 1.1, "coast_south": 0.9, "highlands": 0.6,
              "selva": 0.8, "amazon": 0.6},
    "asparagus": {"coast_north": 0.8, "coast_central": 1.4, "coast_south": 0.8,
                  "highlands": 0.4, "selva": 0.4, "amazon": 0.4},
    "coffee": {"coast_central": 1.1, "highlands": 0.8, "selva": 1.3, "amazon": 0.8},
    "quinoa": {"coast_north": 0.7, "coast_central": 0.8, "coast_south": 1.0, "highlands": 1.5,
               "selva": 0.4, "amazon": 0.3, "puno": 4.0},
    "lemon": {"coast_north": 1.3, "coast_central": 1.2, "coast_south": 1.0, "highlands": 0.7,
              "selva": 0.8, "amazon": 0.8},
}  # fmt: skip

# Share of food bought through wholesale markets rather than grown and eaten at home
# (subsistence farming is common in the highlands and the Amazon; Lima buys everything).
MARKET_RELIANCE: dict[str, float] = {
    "coast_north": 1.0, "coast_central": 1.0, "coast_south": 1.0, "highlands": 0.85,
    "selva": 0.9, "amazon": 0.9, "lima": 1.1, "callao": 1.1,
}  # fmt: skip

# Cross-price elasticities: demand of the key crop rises with the price of the listed crops.
SUBSTITUTES: dict[str, dict[str, float]] = {
    "rice": {"potato": 0.10, "cassava": 0.05},
    "potato": {"rice": 0.12, "cassava": 0.03},
    "cassava": {"rice": 0.10, "potato": 0.05},
    "banana": {"rice": 0.05, "mango": 0.05},
    "quinoa": {"rice": 0.05},
    "mango": {"grape": 0.08, "banana": 0.03},
    "grape": {"mango": 0.08},
    "avocado": {"mango": 0.03},
}

# Calendar bumps (log demand) over each holiday's shopping window, spread over the weeks it covers.
HOLIDAYS: dict[str, dict[str, float]] = {
    "semana_santa": {"lemon": 0.25, "onion": 0.15, "potato": 0.06, "rice": 0.06, "avocado": 0.08,
                     "cassava": 0.06, "banana": 0.03},
    "fiestas_patrias": {"potato": 0.08, "rice": 0.06, "onion": 0.06, "avocado": 0.08,
                        "yellow_maize": 0.05, "cassava": 0.05, "lemon": 0.05},
    "christmas": {"grape": 0.15, "potato": 0.08, "rice": 0.06, "onion": 0.06, "avocado": 0.10,
                  "mango": 0.12, "coffee": 0.08},
    "new_year": {"grape": 0.35, "lemon": 0.05, "potato": 0.05, "rice": 0.04, "mango": 0.08,
                 "avocado": 0.05},
    "school_holidays": {"rice": -0.04, "potato": -0.03, "cassava": -0.03, "banana": -0.02},
}  # fmt: skip

# Exchange rate anchors (PEN per USD, annual means; a seeded drift is added around them).
USD_PEN_ANCHORS: dict[int, float] = {
    1981: 2.80, 1995: 2.85, 1998: 2.93, 2000: 3.49, 2003: 3.48, 2006: 3.27, 2008: 2.92,
    2011: 2.75, 2013: 2.70, 2015: 3.19, 2017: 3.26, 2020: 3.49, 2022: 3.83, 2024: 3.75,
    2026: 3.70,
}  # fmt: skip
USD_PEN_REF = 3.2
# National population, millions (INEI orders of magnitude).
POPULATION_ANCHORS: dict[int, float] = {
    1980: 17.3, 1990: 21.8, 2000: 26.0, 2010: 29.4, 2020: 33.0, 2026: 34.6,
}  # fmt: skip
# Log price level relative to 2020: 2.5 %/yr after 2001, 6 %/yr 1991–2001, 2 %/yr before.
PRICE_LEVEL_ANCHORS: dict[float, float] = {
    1980.0: -1.295,
    1991.0: -1.075,
    2001.0: -0.475,
    2020.0: 0.0,
    2027.0: 0.175,
}

# Noise of the observed demand around the oracle, and the slow drifts the oracle knows about.
# The oracle MASE divides errors in the last two years by the seasonal-naive error over the whole
# history, in tonnes; a growing series thus looks noisier the longer its history. The noise sd is
# set per crop and scale from the demand trend so the oracle MASE stays near TARGET_MASE
# (YOY_VARIATION: the typical year-on-year change of expected demand, calibrated by runs).
TARGET_MASE = 0.55
YOY_VARIATION = 0.13
DEMAND_NOISE_PHI = 0.3
DEMAND_NOISE_DF = 5
SERIES_LEVEL_SD, SERIES_LEVEL_PHI = 0.10, 0.99
ECONOMY_SD, ECONOMY_PHI = 0.05, 0.995

# Random streams, one per purpose, so adding draws to one mechanism leaves the others alone.
_STREAMS = {
    "usd": 1, "temp": 2, "rain": 3, "nino_rain": 4, "yield": 5, "yield_nat": 6, "arrivals": 7,
    "price_nat": 8, "price_reg": 9, "economy": 10, "level": 11, "noise": 12,
}  # fmt: skip


def _rng(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[purpose]])


class _AR1:
    """Stationary AR(1) processes with marginal sd ``sd``, drawn chunk by chunk.

    The state is carried between chunks, so a series is continuous across calendar years while
    only one year is held in memory.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        phi: float | np.ndarray,
        sd: float | np.ndarray,
        shape: tuple[int, ...],
        df: float | None = None,
    ) -> None:
        self.rng, self.shape, self.df = rng, shape, df
        self.phi = np.broadcast_to(np.asarray(phi, dtype=float), shape)
        self.innov_sd = np.asarray(sd, dtype=float) * np.sqrt(1.0 - self.phi**2)
        self.state = np.asarray(sd, dtype=float) * self._unit((1, *shape))[0]

    def _unit(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.df is None:
            return self.rng.standard_normal(shape)
        # Student t scaled to unit variance: the occasional outlier week real series have.
        return self.rng.standard_t(self.df, shape) / math.sqrt(self.df / (self.df - 2))

    def next(self, n: int) -> np.ndarray:
        innov = self._unit((n, *self.shape)) * self.innov_sd
        out = np.empty_like(innov)
        x = self.state
        for t in range(n):  # loop over weeks only; every series is updated at once
            x = self.phi * x + innov[t]
            out[t] = x
        self.state = x
        return out


def _periodic_interp(doy: np.ndarray, monthly: tuple[float, ...]) -> np.ndarray:
    """Monthly values (placed mid-month) interpolated periodically to days of the year."""
    mid = np.array(
        [15.5, 45.0, 74.5, 105.0, 135.5, 166.0, 196.5, 227.5, 258.0, 288.5, 319.0, 349.5]
    )
    return np.interp(doy, mid, np.asarray(monthly, dtype=float), period=365.25)


def _window_days(week_start: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Days of the windows [first, last] (inclusive) that fall in each week.

    Args:
        week_start: Mondays as day numbers, shape (n,).
        first: First day of each window (one per year), shape (k,).
        last: Last day of each window, shape (k,).

    Returns:
        Shape (n, k).
    """
    ws = week_start[:, None]
    return np.clip(np.minimum(ws + 6, last[None]) - np.maximum(ws, first[None]) + 1, 0, None)


class _Plan:
    """Everything fixed by the scale: weeks, regions, crops and the static parameter arrays."""

    def __init__(self, scale: Scale) -> None:
        first, last = PERIODS[scale]
        self.weeks = pd.date_range(first, last, freq="W-MON")
        self.regions = schema.REGIONS
        self.crops = TINY_CROPS if scale is Scale.TINY else schema.CROPS
        self.crops = tuple(c for c in schema.CROPS if c in self.crops)  # schema order
        n_r, n_c = len(self.regions), len(self.crops)
        reg = [REGION_TABLE[r] for r in self.regions]
        crop = [CROP_TABLE[c] for c in self.crops]

        mid = self.weeks + pd.Timedelta(days=3)  # Thursday: the week's centre
        self.day = self.weeks.to_numpy().astype("datetime64[D]").astype(np.int64)
        self.doy = mid.day_of_year.to_numpy()
        self.tyear = mid.year.to_numpy() + (self.doy - 0.5) / (365.25 + mid.is_leap_year)
        self.year = self.weeks.year.to_numpy()

        def col(rows: list[NamedTuple], field: str) -> np.ndarray:
            return np.array([getattr(x, field) for x in rows], dtype=float)

        self.reg = {f: col(reg, f) for f in _Region._fields if f != "zone"}
        self.crop = {f: col(crop, f) for f in _Crop._fields if f != "harvest"}
        zones = [x.zone for x in reg]

        share = np.zeros((n_r, n_c))
        taste = np.ones((n_r, n_c))
        for j, c in enumerate(self.crops):
            for i, r in enumerate(self.regions):
                share[i, j] = PRODUCTION[c].get(r, 0.0)
                reliance = MARKET_RELIANCE.get(r, MARKET_RELIANCE[zones[i]])
                taste[i, j] = reliance * TASTE[c].get(r, TASTE[c].get(zones[i], 1.0))
        self.share = share / share.sum(axis=0, keepdims=True)
        self.taste = taste

        # Producing regions buy their own harvest cheaper; remote ones pay for transport.
        local = np.minimum(1.0, self.share / 0.08)
        self.markup = np.exp(self.reg["remote"][:, None] * (1 - local) - 0.12 * local)

        # Harvest calendar per region and crop on a day-of-year grid (mean 1 over the year);
        # tropical regions harvest more evenly.
        grid = np.arange(1, 367, dtype=float)
        flat = np.array([0.4 if z in ("selva", "amazon") else 1.0 for z in zones])
        harvest = np.empty((grid.size, n_r, n_c))
        for j, c in enumerate(self.crops):
            shift = np.array([HARVEST_SHIFT.get((r, c), 0.0) for r in self.regions])
            prof = _periodic_interp(grid[:, None] - shift[None], CROP_TABLE[c].harvest)
            prof = prof ** flat[None]
            harvest[:, :, j] = prof / prof[:365].mean(axis=0, keepdims=True)
        self.harvest = harvest  # (366, R, C)
        national = np.einsum("drc,rc->dc", harvest, self.share)
        # Perishable fruit is eaten when it is in season (log availability, mean zero).
        log_avail = np.log(national + 0.05)
        self.avail = self.crop["avail"][None] * (log_avail - log_avail[:365].mean(axis=0))
        self.seasonal = self.crop["seas_amp"][None] * np.cos(
            2 * np.pi * (grid[:, None] - self.crop["seas_peak"][None]) / 365.25
        )

        cross = np.zeros((n_c, n_c))
        for j, c in enumerate(self.crops):
            for other, value in SUBSTITUTES.get(c, {}).items():
                if other in self.crops:
                    cross[j, self.crops.index(other)] = value
        self.cross = cross

        self.holidays = self._holiday_effects()  # (n_weeks, C)

    def _holiday_effects(self) -> np.ndarray:
        years = np.arange(self.year.min() - 1, self.year.max() + 2)

        def days(dates: list) -> np.ndarray:
            return np.array(dates, dtype="datetime64[D]").astype(np.int64)

        def fixed(month: int, day: int) -> np.ndarray:
            return days([f"{y}-{month:02d}-{day:02d}" for y in years])

        good_friday = days([easter(int(y)) for y in years]) - 2
        windows = {
            # Holy Week shopping up to Good Friday (fish, ceviche, vegetables).
            "semana_santa": (good_friday - 4, good_friday),
            "fiestas_patrias": (fixed(7, 22), fixed(7, 29)),
            "christmas": (fixed(12, 18), fixed(12, 24)),
            "new_year": (fixed(12, 26), fixed(12, 31)),
            "school_holidays": (fixed(1, 1), fixed(3, 10)),
        }
        effect = np.zeros((self.day.size, len(self.crops)))
        for name, (first, last) in windows.items():
            days_in = _window_days(self.day, first, last)
            if name == "school_holidays":  # a level while it lasts: share of the week
                share = days_in.sum(axis=1) / 7
            else:  # a one-off bump, split between the weeks its shopping window covers
                share = (days_in / (last - first + 1)[None]).sum(axis=1)
            bumps = np.array([HOLIDAYS[name].get(c, 0.0) for c in self.crops])
            effect += share[:, None] * bumps[None]
        return effect


class _Drivers:
    """Whole-period drivers: ENSO, exchange rate, population shares, price level and weather."""

    def __init__(self, plan: _Plan, seed: int) -> None:
        n, n_r = plan.day.size, len(plan.regions)
        mid = plan.weeks + pd.Timedelta(days=3)
        monthly = nino12_monthly(int(plan.year.max()), seed=seed, first_year=1950)
        self.nino = np.clip(anomaly_at(mid, monthly), -4.9, 7.9)

        usd_years = np.array(list(USD_PEN_ANCHORS), dtype=float)
        usd_log = np.interp(plan.tyear, usd_years, np.log(list(USD_PEN_ANCHORS.values())))
        drift = _AR1(_rng(seed, "usd"), 0.985, 0.035, ()).next(n)
        self.usd = np.clip(np.exp(usd_log + drift), 1.6, 7.9)

        years = np.array(list(POPULATION_ANCHORS), dtype=float)
        self.population = np.interp(plan.tyear, years, list(POPULATION_ANCHORS.values()))
        weight = plan.reg["pop_m"][None] * np.exp(
            plan.reg["drift"][None] * (plan.tyear[:, None] - 2020)
        )
        self.pop_share = weight / weight.sum(axis=1, keepdims=True)  # (n, R)

        self.log_price_level = np.interp(
            plan.tyear, list(PRICE_LEVEL_ANCHORS), list(PRICE_LEVEL_ANCHORS.values())
        )

        r = plan.reg
        angle = 2 * np.pi * plan.doy[:, None] / 365.25
        temp_noise = _AR1(_rng(seed, "temp"), 0.6, 0.7, (n_r,)).next(n)
        temp = (
            r["temp_c"][None]
            + r["temp_amp"][None] * np.cos(angle - 2 * np.pi * 45 / 365.25)
            + r["nino_temp"][None] * self.nino[:, None]
            + temp_noise
        )
        self.temp = np.clip(temp, -14.9, 39.9)

        # Climatological weekly rain: a von Mises rainy season with mean 1 over the year.
        kappa = r["conc"][None]
        season = np.exp(kappa * np.cos(angle - 2 * np.pi * r["peak_doy"][None] / 365.25))
        clim = r["precip_mm"][None] / WEEKS_PER_YEAR * season / np.i0(kappa)
        # El Niño dries the southern altiplano ...
        dry = np.exp(-0.15 * r["nino_dry"][None] * np.clip(self.nino[:, None], 0, None))
        rain_rng = _rng(seed, "rain")
        shape = np.broadcast_to(r["shape"][None], clim.shape)
        rain = clim * dry * rain_rng.gamma(shape, 1.0 / shape)
        # ... and floods the north coast in the wet season (December–April).
        wet = np.exp(2.0 * (np.cos(angle - 2 * np.pi * 60 / 365.25) - 1.0))
        strength = np.clip(self.nino[:, None] - 0.8, 0, None) ** 1.5
        nino_rng = _rng(seed, "nino_rain")
        storms = r["nino_rain"][None] * strength * wet * nino_rng.gamma(2.0, 0.5, clim.shape)
        self.precip = np.clip(rain + storms, 0.0, 1490.0)
        # Flood intensity: rain far above the usual for that week destroys fields and cuts roads.
        self.flood = np.log1p(np.clip(self.precip - 3 * clim - 10.0, 0, None) / 20.0)
        self.drought = r["nino_dry"][None] * np.clip(self.nino[:, None], 0, None)  # (n, R)


def _noise_sd(plan: _Plan, drv: _Drivers) -> np.ndarray:
    """Demand noise sd per crop that puts the oracle MASE near ``TARGET_MASE``.

    With relative noise sd s and a typical relative year-on-year change v of expected demand,
    MASE ≈ L·s/√(2s² + v²), where L is the mean trend level of the last two years over that of
    the history before them. Solving for s gives the noise for this crop's growth and this
    scale's period.
    """
    cutoff = plan.weeks[-1] - pd.DateOffset(years=2)
    test = plan.weeks > cutoff
    trend = drv.population[:, None] * np.exp(
        plan.crop["pc_growth"][None] * (plan.tyear[:, None] - 2020)
    )
    ratio = trend[test].mean(axis=0) / trend[~test].mean(axis=0)
    m = np.minimum(TARGET_MASE / ratio, 0.6)
    return YOY_VARIATION * m / np.sqrt(1 - 2 * m**2)


# Supply shocks: slow regional yield, slow national yield, lumpy weekly arrivals (log sd, phi).
YIELD_LOCAL = (0.10, 0.985)
YIELD_NATIONAL = (0.05, 0.985)
ARRIVALS = (0.15, 0.4)
# Price noise: national (weather abroad, traders' stocks) and regional (log sd, phi). Storable
# staples with imports (rice, maize) are steadier than perishables (onion, lemon).
PRICE_NATIONAL_SD: dict[str, float] = {
    "potato": 0.08, "rice": 0.04, "banana": 0.06, "yellow_maize": 0.05, "cassava": 0.06,
    "grape": 0.08, "avocado": 0.08, "onion": 0.10, "mango": 0.08, "asparagus": 0.06,
    "coffee": 0.08, "quinoa": 0.06, "lemon": 0.10,
}  # fmt: skip
PRICE_NATIONAL_PHI = 0.9
PRICE_REGIONAL = (0.05, 0.6)
DROUGHT_LOSS = 0.08  # log yield loss of rain-fed highland crops per °C of El Niño anomaly
RAINFED = ("potato", "quinoa")


class _Simulation:
    """The region × crop processes, advanced one chunk of weeks at a time."""

    def __init__(self, plan: _Plan, drv: _Drivers, seed: int) -> None:
        self.plan, self.drv = plan, drv
        n_c = len(plan.crops)
        rc = (len(plan.regions), n_c)
        self.yield_local = _AR1(_rng(seed, "yield"), YIELD_LOCAL[1], YIELD_LOCAL[0], rc)
        self.yield_nat = _AR1(_rng(seed, "yield_nat"), YIELD_NATIONAL[1], YIELD_NATIONAL[0], (n_c,))
        self.arrivals = _AR1(_rng(seed, "arrivals"), ARRIVALS[1], ARRIVALS[0], rc)
        self.shock_var = YIELD_LOCAL[0] ** 2 + YIELD_NATIONAL[0] ** 2 + ARRIVALS[0] ** 2
        price_sd = np.array([PRICE_NATIONAL_SD[crop] for crop in plan.crops])
        self.price_nat = _AR1(_rng(seed, "price_nat"), PRICE_NATIONAL_PHI, price_sd, (n_c,))
        self.price_reg = _AR1(_rng(seed, "price_reg"), PRICE_REGIONAL[1], PRICE_REGIONAL[0], rc)
        self.economy = _AR1(_rng(seed, "economy"), ECONOMY_PHI, ECONOMY_SD, (len(plan.regions),))
        self.level = _AR1(_rng(seed, "level"), SERIES_LEVEL_PHI, SERIES_LEVEL_SD, rc)
        self.noise_sd = _noise_sd(plan, drv)
        self.noise = _AR1(_rng(seed, "noise"), DEMAND_NOISE_PHI, self.noise_sd, rc, DEMAND_NOISE_DF)
        self.damage = np.zeros(rc)
        self.damage_keep = 0.5 ** (1.0 / plan.crop["damage_hl"])  # (C,)
        self.rainfed = np.isin(plan.crops, RAINFED).astype(float)

    def _flood_damage(self, flood: np.ndarray) -> np.ndarray:
        """Damage state per region and crop: heavy rain with a per-crop memory, (n, R, C)."""
        keep = self.damage_keep[None]
        out = np.empty((flood.shape[0], *self.damage.shape))
        for k in range(flood.shape[0]):  # loop over weeks; all series at once
            self.damage = keep * self.damage + (1 - keep) * flood[k][:, None]
            out[k] = self.damage
        return out

    def step(self, sl: slice) -> dict[str, np.ndarray]:
        """Supply, price, usd, expected and observed demand for the weeks in ``sl``.

        Returns:
            Arrays of shape (n, R, C), except ``usd`` (n,).
        """
        plan, drv, c = self.plan, self.drv, self.plan.crop
        n = sl.stop - sl.start
        t, doy = plan.tyear[sl], plan.doy[sl]
        years_from_2020 = (t - 2020)[:, None]

        # Supply: production trend × share × calendar × shocks × flood damage × drought.
        weekly_prod = (
            c["prod_mt"][None]
            * 1e6
            / WEEKS_PER_YEAR
            * np.exp(c["prod_growth"][None] * years_from_2020)
        )  # (n, C)
        shocks = self.yield_local.next(n) + self.yield_nat.next(n)[:, None] + self.arrivals.next(n)
        damage = self._flood_damage(drv.flood[sl])
        drought = drv.drought[sl][:, :, None] * self.rainfed[None, None]
        supply = (
            weekly_prod[:, None]
            * plan.share[None]
            * plan.harvest[doy - 1]
            * np.exp(shocks - 0.5 * self.shock_var - c["damage"] * damage - DROUGHT_LOSS * drought)
        )
        supply = np.round(supply, 3)

        # National price: falls as national supply rises above its trend level; buffers (stocks,
        # imports) damp the response; export and import crops follow the exchange rate.
        national = supply.sum(axis=1)  # (n, C)
        buffer = c["buffer"][None] * weekly_prod
        ratio = (national + buffer) / (weekly_prod + buffer)
        usd = drv.usd[sl]
        log_real_nat = (
            -c["flex"][None] * np.log(ratio)
            + self.price_nat.next(n)
            + c["usd_pass"][None] * np.log(usd / USD_PEN_REF)[:, None]
        )
        log_real = log_real_nat[:, None] + self.price_reg.next(n)  # (n, R, C)
        price = (
            c["price"]
            * plan.markup[None]
            * np.exp(drv.log_price_level[sl][:, None, None] + log_real)
        )
        price = np.clip(np.round(price, 2), 0.01, 499.0)

        # Expected demand: consumption trend spread by population and taste, times seasonality,
        # holidays, own and cross price effects (real prices) and slow regional drifts.
        national_demand = (
            c["demand_mt"][None] * 1e6 / WEEKS_PER_YEAR
            * (drv.population[sl] / POPULATION_ANCHORS[2020])[:, None]
            * np.exp(c["pc_growth"][None] * years_from_2020)
        )  # fmt: skip
        weight = drv.pop_share[sl][:, :, None] * plan.taste[None]
        base = national_demand[:, None] * weight / weight.sum(axis=1, keepdims=True)
        calendar = plan.avail[doy - 1] + plan.seasonal[doy - 1] + plan.holidays[sl]
        log_effect = (
            calendar[:, None]
            + c["elasticity"] * log_real
            + (log_real_nat @ plan.cross.T)[:, None]
            + self.economy.next(n)[:, :, None]
            + self.level.next(n)
        )
        expected = base * np.exp(log_effect)
        observed = expected * np.exp(self.noise.next(n) - 0.5 * self.noise_sd**2)
        return {
            "supply": supply,
            "price": price,
            "usd": np.round(usd, 3),
            "expected": np.round(expected, 3),
            "observed": np.round(observed, 3),
        }


def write_synthetic(config: GeneratorConfig, directory: Path) -> dict[str, int]:
    """Write ``historical_demand``, ``weather``, ``market_trends`` and ``oracle``.

    Args:
        config: Seed, scale (tiny: 1995–2001 and five crops; small: 1996–2025; full: 1981–2025)
            and file format.
        directory: Existing directory to write ``<table>.<format>`` files into.

    Returns:
        Rows written per table.
    """
    plan = _Plan(config.scale)
    drv = _Drivers(plan, config.seed)
    sim = _Simulation(plan, drv, config.seed)
    n_r, n_c = len(plan.regions), len(plan.crops)
    regions, crops = np.asarray(plan.regions), np.asarray(plan.crops)
    years = np.unique(plan.year)
    with ExitStack() as stack:
        writers = {
            s.name: stack.enter_context(TableWriter(s, directory, config.format))
            for s in (*schema.TABLES, schema.ORACLE)
        }
        bar = stack.enter_context(progress("crop_demand years", total=years.size))
        for year in years:  # one calendar year per chunk (row group)
            idx = np.flatnonzero(plan.year == year)
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            n = idx.size
            dates = plan.weeks[sl].to_numpy().astype("datetime64[D]")
            writers["weather"].write(
                {
                    "week_start": np.repeat(dates, n_r),
                    "region": np.tile(regions, n),
                    "temp_mean_c": np.round(drv.temp[sl], 1).ravel(),
                    "precip_mm": np.round(drv.precip[sl], 1).ravel(),
                    "nino12_anomaly_c": np.repeat(np.round(drv.nino[sl], 2), n_r),
                }
            )
            out = sim.step(sl)
            keys = {
                "week_start": np.repeat(dates, n_r * n_c),
                "region": np.tile(np.repeat(regions, n_c), n),
                "crop": np.tile(crops, n * n_r),
            }
            writers["historical_demand"].write(
                {
                    **keys,
                    "demand_tonnes": out["observed"].ravel(),
                    "supply_tonnes": out["supply"].ravel(),
                }
            )
            writers["market_trends"].write(
                {
                    **keys,
                    "price_pen_per_kg": out["price"].ravel(),
                    "usd_pen": np.repeat(out["usd"], n_r * n_c),
                }
            )
            writers["oracle"].write({**keys, "expected": out["expected"].ravel()})
            bar.advance()
    return {name: w.rows for name, w in writers.items()}
