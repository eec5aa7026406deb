"""Raw table schemas of the anchoveta stock use case (zone × month, satellite grid, surveys)."""

from __future__ import annotations

from models.base import Column, TableSchema

# North-central and southern stock areas, split along the coast.
ZONES: tuple[str, ...] = ("north", "centre", "south")  # Paita–Chimbote, Chimbote–Pisco, Pisco–Ilo
SEASONS: tuple[str, ...] = ("first", "second", "closed")

ZONE = Column("zone", "string", description="Fishing zone", allowed=ZONES)

SATELLITE = TableSchema(
    name="satellite",
    description="Ocean colour and temperature of one grid cell on one date (composite)",
    columns=(
        Column("date", "date", description="First day of the composite", min="1980-01-01",
               max="2035-12-31"),
        Column("cell_id", "int32", description="Grid cell", min=0, max=1_000_000),
        Column("lat", "float64", unit="°", description="Cell centre latitude", min=-19.0,
               max=-2.0),
        Column("lon", "float64", unit="°", description="Cell centre longitude", min=-85.0,
               max=-69.0),
        ZONE,
        Column("sst_c", "float64", unit="°C", description="Sea-surface temperature", min=10.0,
               max=33.0),
        Column("sst_anomaly_c", "float64", unit="°C",
               description="SST minus the cell's climatology", min=-8.0, max=10.0),
        Column("chlorophyll_mg_m3", "float64", unit="mg/m³",
               description="Chlorophyll-a (missing under clouds)", min=0.01, max=100.0,
               max_null_share=0.25),
        Column("wind_speed_m_s", "float64", unit="m/s", description="Surface wind speed",
               min=0.0, max=30.0),
    ),
    keys=("date", "cell_id"),
    time_column="date",
    frequency="inferred",
    series_keys=("cell_id",),
)  # fmt: skip

SONAR = TableSchema(
    name="sonar",
    description="Acoustic survey record of one elementary distance unit (EDSU) on a transect",
    columns=(
        Column("survey_id", "string", description="Survey, e.g. 1998-1 (first of 1998)"),
        Column("date", "date", description="Date the EDSU was sampled", min="1960-01-01",
               max="2035-12-31"),
        ZONE,
        Column("transect", "int32", description="Transect number within the survey", min=0,
               max=10_000),
        Column("edsu", "int32", description="Elementary distance unit along the transect",
               min=0, max=10_000),
        Column("lat", "float64", unit="°", description="EDSU latitude (transects run offshore)",
               min=-20.5, max=-2.0),
        Column("lon", "float64", unit="°", description="EDSU longitude", min=-85.0, max=-69.0),
        Column("nasc_m2_nmi2", "float64", unit="m²/nmi²",
               description="Nautical area scattering coefficient", min=0.0, max=1.0e6),
        Column("mean_length_cm", "float64", unit="cm", description="Mean anchoveta length",
               min=2.0, max=20.0),
        Column("juvenile_fraction", "float64", unit="1",
               description="Share of fish shorter than 12 cm", min=0.0, max=1.0),
    ),
    keys=("survey_id", "zone", "transect", "edsu"),
    time_column="date",
    frequency=None,
)  # fmt: skip

STOCK = TableSchema(
    name="stock",
    description="Monthly stock assessment and landings of one zone",
    columns=(
        Column("month", "date", description="First day of the month", min="1960-01-01",
               max="2035-12-31"),
        ZONE,
        Column("biomass_tonnes", "float64", unit="t",
               description="Assessed anchoveta biomass (the forecast target)", min=0.0,
               max=3.0e7),
        Column("catch_tonnes", "float64", unit="t", description="Landings", min=0.0, max=5.0e6),
        Column("season", "string", description="Fishing season the month belongs to",
               allowed=SEASONS),
        Column("season_quota_tonnes", "float64", unit="t",
               description="Quota of the current season for the whole stock (0 when closed)",
               min=0.0, max=1.5e7),
        Column("nino12_anomaly_c", "float64", unit="°C", description="Niño 1+2 SST anomaly",
               min=-5.0, max=8.0),
    ),
    keys=("month", "zone"),
    time_column="month",
    frequency="MS",
    series_keys=("zone",),
)  # fmt: skip

ORACLE = TableSchema(
    name="oracle",
    description="Noise-free expected biomass the generator drew biomass_tonnes from",
    columns=(
        Column("month", "date", description="First day of the month", min="1960-01-01",
               max="2035-12-31"),
        ZONE,
        Column("expected", "float64", unit="t", description="Expected biomass", min=0.0,
               max=3.0e7),
    ),
    keys=("month", "zone"),
    time_column="month",
    frequency="MS",
    series_keys=("zone",),
)  # fmt: skip

TABLES = (SATELLITE, SONAR, STOCK)
