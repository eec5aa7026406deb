"""Raw table schemas of the crop demand use case (weekly, region × crop)."""

from __future__ import annotations

from models.base import Column, TableSchema

# Peru's 24 departments plus the constitutional province of Callao, as ASCII keys.
REGIONS: tuple[str, ...] = (
    "amazonas", "ancash", "apurimac", "arequipa", "ayacucho", "cajamarca", "callao", "cusco",
    "huancavelica", "huanuco", "ica", "junin", "la_libertad", "lambayeque", "lima", "loreto",
    "madre_de_dios", "moquegua", "pasco", "piura", "puno", "san_martin", "tacna", "tumbes",
    "ucayali",
)  # fmt: skip

CROPS: tuple[str, ...] = (
    "potato", "rice", "banana", "yellow_maize", "cassava", "grape", "avocado", "onion", "mango",
    "asparagus", "coffee", "quinoa", "lemon",
)  # fmt: skip

WEEK = Column(
    "week_start", "date", description="Monday that starts the ISO week",
    min="1980-01-07", max="2035-12-31",
)  # fmt: skip
REGION = Column("region", "string", description="Department (or Callao)", allowed=REGIONS)
CROP = Column("crop", "string", description="Crop", allowed=CROPS)

HISTORICAL_DEMAND = TableSchema(
    name="historical_demand",
    description="Weekly demand and market supply of one crop in one region",
    columns=(
        WEEK,
        REGION,
        CROP,
        Column(
            "demand_tonnes", "float64", unit="t",
            description="Wholesale sales for consumption in the region (the forecast target)",
            min=0.0, max=2.0e6,
        ),
        Column(
            "supply_tonnes", "float64", unit="t",
            description="Harvest from the region reaching wholesale markets",
            min=0.0, max=2.0e6,
        ),
    ),
    keys=("week_start", "region", "crop"),
    time_column="week_start",
    frequency="W-MON",
    series_keys=("region", "crop"),
)  # fmt: skip

WEATHER = TableSchema(
    name="weather",
    description="Weekly weather of one region and the Niño 1+2 anomaly of that week",
    columns=(
        WEEK,
        REGION,
        Column("temp_mean_c", "float64", unit="°C", description="Mean air temperature",
               min=-15.0, max=40.0),
        Column("precip_mm", "float64", unit="mm", description="Weekly precipitation",
               min=0.0, max=1500.0),
        Column("nino12_anomaly_c", "float64", unit="°C",
               description="Niño 1+2 SST anomaly (same for every region in a week)",
               min=-5.0, max=8.0),
    ),
    keys=("week_start", "region"),
    time_column="week_start",
    frequency="W-MON",
    series_keys=("region",),
)  # fmt: skip

MARKET_TRENDS = TableSchema(
    name="market_trends",
    description="Weekly wholesale price of one crop in one region and the exchange rate",
    columns=(
        WEEK,
        REGION,
        CROP,
        Column("price_pen_per_kg", "float64", unit="PEN/kg", description="Wholesale price",
               min=0.01, max=500.0),
        Column("usd_pen", "float64", unit="PEN/USD",
               description="Exchange rate (same for every row in a week)", min=1.5, max=8.0),
    ),
    keys=("week_start", "region", "crop"),
    time_column="week_start",
    frequency="W-MON",
    series_keys=("region", "crop"),
)  # fmt: skip

ORACLE = TableSchema(
    name="oracle",
    description="Noise-free expected demand the generator drew demand_tonnes from",
    columns=(
        WEEK,
        REGION,
        CROP,
        Column("expected", "float64", unit="t", description="Expected weekly demand",
               min=0.0, max=2.0e6),
    ),
    keys=("week_start", "region", "crop"),
    time_column="week_start",
    frequency="W-MON",
    series_keys=("region", "crop"),
)  # fmt: skip

TABLES = (HISTORICAL_DEMAND, WEATHER, MARKET_TRENDS)
