"""Spark feature transform of the anchoveta stock use case: one row per zone × month origin.

Three sources meet on a complete zone × month spine built from the ``stock`` table:

* **Satellite**: the grid is reduced to zone × month in one ``groupBy`` pass (mean, sample
  standard deviation and p10/p50/p90 of SST, SST anomaly and chlorophyll-a; chlorophyll's
  missing share; mean wind; share of warm cells; number of cell observations). No collect, no
  UDF, so it scales to the ~25 million rows of the ``full`` data set on a laptop. Months
  before the satellite era get null satellite features.
* **Sonar**: EDSUs are reduced to one estimate per survey and zone (NASC mean, fish-number
  weighted mean length and juvenile share), dated to the month the whole survey ended, and
  carried forward to every later month until the next survey, with ``survey_age_months``.
* **Stock**: biomass, catch and the Niño 1+2 anomaly at the origin and at fixed lags, 12-month
  rolling catch, season and quota, calendar month as sine and cosine.

``target_h1`` .. ``target_hH`` are the biomass ``h`` months after the origin. A feature at
month t uses data up to the end of month t only; built-in Spark functions and window
functions only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from models.base import FeatureResult, FeatureSpec
from perucast.spark import require_tables

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TIME = "month"
ZONE = "zone"
TARGET = "biomass_tonnes"

# Satellite variables: feature prefix -> raw column.
SAT_VARIABLES: dict[str, str] = {
    "sat_sst": "sst_c",
    "sat_sst_anom": "sst_anomaly_c",
    "sat_chl": "chlorophyll_mg_m3",
}
SAT_QUANTILES: tuple[tuple[str, float], ...] = (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))
# Quantiles are exact by default: Spark's ``percentile`` keeps a count per distinct value, and
# satellite products are stored at a fixed resolution (0.01 °C, 0.001 mg/m³): a zone-month of
# the full data set holds up to 36k values but at most ~3.4k distinct ones. On that data set
# (21.8M rows, 2 cores, 2 GB) it is faster than ``percentile_approx`` (22 s against 35 s) and
# keeps less on the heap. For unrounded inputs use ``exact_quantiles=False``:
# ``percentile_approx`` with this accuracy returns a value whose rank is within n / accuracy
# of the exact one (at most 3 ranks of a zone-month's 36k values).
PERCENTILE_ACCURACY = 10_000
WARM_ANOMALY_C = 1.0  # °C: a cell is "warm" when its SST anomaly is above this
# Composites repeating at least this often (days) are calendar-month composites.
_MONTHLY_CADENCE_DAYS = 28

BIOMASS_LAGS: tuple[int, ...] = (1, 2, 3, 6, 12)
CATCH_LAGS: tuple[int, ...] = (1, 2, 12)
NINO_LAGS: tuple[int, ...] = (1, 2, 3, 6, 12)
CATCH_ROLL_MONTHS = 12

SATELLITE_FEATURES: tuple[str, ...] = (
    *(
        f"{prefix}_{stat}"
        for prefix in SAT_VARIABLES
        for stat in ("mean", "std", *(name for name, _ in SAT_QUANTILES))
    ),
    "sat_chl_missing_share",
    "sat_wind_mean",
    "sat_warm_share",
    "sat_n_obs",
)
SONAR_FEATURES: tuple[str, ...] = (
    "sonar_nasc_mean",
    "sonar_mean_length_cm",
    "sonar_juvenile_share",
    "survey_age_months",
)
STOCK_FEATURES: tuple[str, ...] = (
    TARGET,
    *(f"biomass_lag{k}" for k in BIOMASS_LAGS),
    "catch_tonnes",
    *(f"catch_lag{k}" for k in CATCH_LAGS),
    f"catch_roll{CATCH_ROLL_MONTHS}",
    "season_quota_tonnes",
    "nino12_anomaly_c",
    *(f"nino12_lag{k}" for k in NINO_LAGS),
    "month_sin",
    "month_cos",
)
CATEGORICAL: tuple[str, ...] = (ZONE, "season")
REQUIRED_TABLES: tuple[str, ...] = ("satellite", "sonar", "stock")


def feature_spec(horizon: int) -> FeatureSpec:
    """The columns of the fish stock feature dataset.

    Args:
        horizon: H, the number of months ahead (``target_h1`` .. ``target_hH``).

    Returns:
        The spec: origins are zone × month (``"MS"``), the target is ``biomass_tonnes``.

    Raises:
        ValueError: If ``horizon`` is smaller than 1.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 month, got {horizon}")
    return FeatureSpec(
        time_column=TIME,
        series_keys=(ZONE,),
        period="MS",
        horizon=horizon,
        target=TARGET,
        categorical=CATEGORICAL,
        numeric=(*STOCK_FEATURES, *SATELLITE_FEATURES, *SONAR_FEATURES),
    )


def build_features(
    tables: Mapping[str, DataFrame], horizon: int, *, composite_days: int | None = None
) -> FeatureResult:
    """Build the zone × month feature frame from the raw ``satellite``, ``sonar`` and ``stock``.

    The spine is every month from the first to the last ``stock`` month for every zone of
    ``stock``, so row lags are month lags even if the table has holes (their values are null).
    The small results (satellite zone-months, survey estimates and the feature frame itself)
    are cached: the counts run jobs on them now, and the caller's first write reuses them.

    Args:
        tables: Spark DataFrames of the raw tables by name (validated, schema column types).
        horizon: H, the number of target columns.
        composite_days: Length of one satellite composite in days; None infers it from the
            spacing of the composite dates (see :func:`infer_composite_days`).

    Returns:
        The frame (columns of ``feature_spec(horizon).columns``), its spec and counts.

    Raises:
        perucast.spark.TableMissingError: If a required table is missing from ``tables``.
    """
    from pyspark.sql import functions as F

    spec = feature_spec(horizon)
    require_tables(tables, REQUIRED_TABLES, "fish_stock features")
    satellite, sonar, stock = (tables[name] for name in REQUIRED_TABLES)

    if composite_days is None:
        composite_days = infer_composite_days(satellite)
    sat_monthly = satellite_monthly(satellite, composite_days).cache()
    surveys = survey_estimates(sonar).cache()

    frame = _stock_features(_spine(stock), horizon)
    frame = frame.join(sat_monthly, on=[ZONE, TIME], how="left")
    frame = _carry_surveys_forward(frame, surveys, stock)
    frame = frame.select(
        F.col(TIME),
        *(F.col(c) for c in spec.categorical),
        *(F.col(c).cast("double").alias(c) for c in (*spec.numeric, *spec.target_columns)),
    ).cache()

    counts = _counts(frame, sat_monthly, surveys, spec)
    counts["satellite_composite_days"] = composite_days
    return FeatureResult(frame=frame, spec=spec, counts=counts)


def _counts(
    frame: DataFrame, sat_monthly: DataFrame, surveys: DataFrame, spec: FeatureSpec
) -> dict[str, int]:
    """The step report's counts, in one Spark job (three one-row aggregates side by side)."""
    from pyspark.sql import functions as F

    def nulls(col: str) -> Column:
        return F.sum(F.col(col).isNull().cast("long"))

    all_targets = F.lit(True)
    for col in spec.target_columns:
        all_targets = all_targets & F.col(col).isNotNull()
    row = (
        frame.agg(
            F.count(F.lit(1)).alias("origins"),
            F.countDistinct(ZONE).alias("zones"),
            nulls("sat_n_obs").alias("origins_without_satellite"),
            nulls("survey_age_months").alias("origins_without_survey"),
            nulls(TARGET).alias("origins_without_stock_row"),
            F.sum(all_targets.cast("long")).alias("origins_with_all_targets"),
        )
        .crossJoin(
            sat_monthly.agg(
                F.sum("sat_n_obs").cast("long").alias("satellite_rows_aggregated"),
                F.count(F.lit(1)).alias("satellite_zone_months"),
            )
        )
        .crossJoin(
            surveys.agg(
                F.sum("n_edsu").alias("sonar_edsus_aggregated"),
                F.countDistinct("survey_id").alias("surveys"),
                F.count(F.lit(1)).alias("survey_zone_estimates"),
            )
        )
        .first()
    )
    return {name: int(value or 0) for name, value in row.asDict().items()}


# --- Satellite --------------------------------------------------------------------------------


def infer_composite_days(satellite: DataFrame) -> int:
    """Length in days of one satellite composite, from the spacing of the composite dates.

    ``date`` is the first day of a composite; an 8-day composite that starts on 28 January
    also holds 1–4 February, so it may only count for February (no leakage). The length is the
    most common gap between consecutive distinct dates (1 for daily, 8 for 8-day data; the
    shorter last composite of a year, or a missing one, does not change it). Composites that
    repeat every 28 days or more are calendar-month composites and count for the month they
    start in (length 1 here). One small job: a scan of the ``date`` column, the distinct dates
    (a few thousand) sorted in one aggregation buffer.

    Args:
        satellite: The raw satellite table.

    Returns:
        Days from a composite's ``date`` to its last day, plus one.
    """
    from pyspark.sql import functions as F

    dates = F.sort_array(F.collect_set("date"))
    # zip_with pads the shorter array with null: the last "gap" is null and dropped.
    gaps = F.zip_with(F.slice(dates, 2, F.size(dates)), dates, lambda a, b: F.datediff(a, b))
    gap = (
        satellite.select("date")
        .agg(F.explode(gaps).alias("gap"))
        .where(F.col("gap").isNotNull())
        .agg(F.mode("gap").alias("gap"))
        .first()["gap"]
    )
    if gap is None or gap >= _MONTHLY_CADENCE_DAYS:
        return 1
    return int(gap)


def satellite_monthly(
    satellite: DataFrame, composite_days: int = 1, *, exact_quantiles: bool = True
) -> DataFrame:
    """Reduce the satellite grid to zone × month in one ``groupBy`` pass.

    A composite counts for the month of its last day (``date + composite_days - 1``), so a
    month's features never hold a later month's scenes; for daily and monthly composites that
    is the month of ``date``. Chlorophyll nulls (and NaN) are left out of its statistics and
    counted in ``sat_chl_missing_share``. Standard deviations are sample ones (n − 1).

    Args:
        satellite: The raw satellite table.
        composite_days: Length of one composite in days (see :func:`infer_composite_days`).
        exact_quantiles: Exact quantiles with ``percentile`` (linear interpolation between the
            order statistics, as numpy's default), or ``percentile_approx`` with
            ``PERCENTILE_ACCURACY`` (an order statistic: the smallest value with at least
            p·n values at or below it, within n / accuracy ranks).

    Returns:
        Columns ``zone``, ``month`` and ``SATELLITE_FEATURES`` (doubles).
    """
    from pyspark.sql import functions as F

    chl = F.col("chlorophyll_mg_m3")
    last_day = F.date_add(F.col("date"), composite_days - 1)
    prepared = satellite.select(
        F.col(ZONE),
        F.trunc(last_day, "month").alias(TIME),
        F.col("sst_c"),
        F.col("sst_anomaly_c"),
        F.when(F.isnan(chl), F.lit(None).cast("double")).otherwise(chl).alias("chlorophyll_mg_m3"),
        F.col("wind_speed_m_s"),
    )
    percentages = F.array(*(F.lit(p) for _, p in SAT_QUANTILES))
    aggregates: list[Column] = []
    for prefix, raw in SAT_VARIABLES.items():
        aggregates += [
            F.avg(raw).alias(f"{prefix}_mean"),
            F.stddev_samp(raw).alias(f"{prefix}_std"),
            (
                F.percentile(raw, percentages)
                if exact_quantiles
                else F.percentile_approx(raw, percentages, PERCENTILE_ACCURACY)
            ).alias(f"{prefix}_q"),
        ]
    aggregates += [
        F.avg(F.col("chlorophyll_mg_m3").isNull().cast("double")).alias("sat_chl_missing_share"),
        F.avg("wind_speed_m_s").alias("sat_wind_mean"),
        F.avg((F.col("sst_anomaly_c") > WARM_ANOMALY_C).cast("double")).alias("sat_warm_share"),
        F.count(F.lit(1)).cast("double").alias("sat_n_obs"),
    ]
    grouped = prepared.groupBy(ZONE, TIME).agg(*aggregates)
    columns = {c: F.col(c) for c in grouped.columns if c.startswith("sat_")}
    for prefix in SAT_VARIABLES:
        array = columns.pop(f"{prefix}_q")
        for i, (name, _) in enumerate(SAT_QUANTILES):
            columns[f"{prefix}_{name}"] = F.element_at(array, i + 1)
    return grouped.select(
        ZONE, TIME, *(columns[c].cast("double").alias(c) for c in SATELLITE_FEATURES)
    )


# --- Sonar ------------------------------------------------------------------------------------


def survey_estimates(sonar: DataFrame) -> DataFrame:
    """One acoustic estimate per survey and zone, dated to the month the survey ended.

    * ``sonar_nasc_mean``: plain mean NASC over the zone's EDSUs. EDSUs are equal lengths of
      equally spaced transects, so this is the area-weighted mean density index.
    * ``sonar_mean_length_cm`` and ``sonar_juvenile_share``: weighted by the number of fish in
      the EDSU, which is NASC over the backscatter of one fish; that grows with length squared
      (TS = 20 log10 L − 71.9 dB), so the weight is NASC / L². Null when no EDSU saw anything.
    * ``survey_month``: the first day of the month of the survey's last EDSU date over all
      zones. Results are known once the whole cruise is back, so a zone surveyed early in a
      cruise still waits for its end.

    Args:
        sonar: The raw sonar table.

    Returns:
        Columns ``survey_id``, ``zone``, ``survey_month``, ``survey_end``, the sonar means and
        ``n_edsu``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    nasc, length = F.col("nasc_m2_nmi2"), F.col("mean_length_cm")
    fish = F.try_divide(nasc, length * length)  # relative number of fish in the EDSU
    per_zone = sonar.groupBy("survey_id", ZONE).agg(
        F.avg(nasc).alias("sonar_nasc_mean"),
        F.sum(fish * length).alias("_len_sum"),
        F.sum(fish * F.col("juvenile_fraction")).alias("_juv_sum"),
        F.sum(fish).alias("_fish"),
        F.max("date").alias("_zone_end"),
        F.count(F.lit(1)).alias("n_edsu"),
    )
    positive = F.col("_fish") > 0
    survey_end = F.max("_zone_end").over(Window.partitionBy("survey_id"))
    return per_zone.select(
        "survey_id",
        ZONE,
        F.trunc(survey_end, "month").alias("survey_month"),
        survey_end.alias("survey_end"),
        F.col("sonar_nasc_mean").cast("double"),
        F.when(positive, F.col("_len_sum") / F.col("_fish")).alias("sonar_mean_length_cm"),
        F.when(positive, F.col("_juv_sum") / F.col("_fish")).alias("sonar_juvenile_share"),
        "n_edsu",
    )


def _carry_surveys_forward(frame: DataFrame, surveys: DataFrame, stock: DataFrame) -> DataFrame:
    """Attach to every origin the zone's latest survey that ended in or before its month."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Surveys ending before the spine starts still carry into its first month.
    first = stock.agg(F.min(TIME).alias("_first"))
    keyed = surveys.crossJoin(first).withColumn(
        "_at", F.greatest(F.col("survey_month"), F.col("_first"))
    )
    # Two surveys ending in the same month: the later one wins.
    latest = Window.partitionBy(ZONE, "_at").orderBy(
        F.col("survey_end").desc(), F.col("survey_id").desc()
    )
    estimate = F.struct(
        "survey_month", "sonar_nasc_mean", "sonar_mean_length_cm", "sonar_juvenile_share"
    )
    keyed = (
        keyed.withColumn("_rank", F.row_number().over(latest))
        .where(F.col("_rank") == 1)
        .select(ZONE, F.col("_at").alias(TIME), estimate.alias("_survey"))
    )
    # One struct carried as a whole: a null mean length never borrows an older survey's value.
    history = Window.partitionBy(ZONE).orderBy(TIME).rowsBetween(Window.unboundedPreceding, 0)
    carried = frame.join(keyed, on=[ZONE, TIME], how="left").withColumn(
        "_survey", F.last("_survey", ignorenulls=True).over(history)
    )
    return carried.select(
        "*",
        F.col("_survey.sonar_nasc_mean").alias("sonar_nasc_mean"),
        F.col("_survey.sonar_mean_length_cm").alias("sonar_mean_length_cm"),
        F.col("_survey.sonar_juvenile_share").alias("sonar_juvenile_share"),
        F.months_between(F.col(TIME), F.col("_survey.survey_month"))
        .cast("double")
        .alias("survey_age_months"),
    ).drop("_survey")


# --- Stock ------------------------------------------------------------------------------------


def _spine(stock: DataFrame) -> DataFrame:
    """Every month from the first to the last stock month for every zone, with the stock row
    of that month (null where the table has none)."""
    from pyspark.sql import functions as F

    bounds = stock.agg(F.min(TIME).alias("_lo"), F.max(TIME).alias("_hi"))
    months = bounds.select(
        F.explode(F.sequence("_lo", "_hi", F.expr("INTERVAL 1 MONTH"))).alias(TIME)
    )
    zones = stock.select(ZONE).distinct()
    return zones.crossJoin(months).join(stock, on=[ZONE, TIME], how="left")


def _stock_features(spine: DataFrame, horizon: int) -> DataFrame:
    """Lags, rolling catch, calendar terms and targets on the complete spine."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_zone = Window.partitionBy(ZONE).orderBy(TIME)
    roll = by_zone.rowsBetween(-(CATCH_ROLL_MONTHS - 1), 0)
    catch = F.col("catch_tonnes")
    angle = 2 * math.pi * (F.month(TIME) - 1) / 12
    return spine.select(
        ZONE,
        TIME,
        "season",
        F.col(TARGET),
        *(F.lag(TARGET, k).over(by_zone).alias(f"biomass_lag{k}") for k in BIOMASS_LAGS),
        catch,
        *(F.lag(catch, k).over(by_zone).alias(f"catch_lag{k}") for k in CATCH_LAGS),
        # A full window only: a sum over missing months would look like a closed fishery.
        F.when(F.count(catch).over(roll) == CATCH_ROLL_MONTHS, F.sum(catch).over(roll)).alias(
            f"catch_roll{CATCH_ROLL_MONTHS}"
        ),
        "season_quota_tonnes",
        "nino12_anomaly_c",
        *(F.lag("nino12_anomaly_c", k).over(by_zone).alias(f"nino12_lag{k}") for k in NINO_LAGS),
        F.sin(angle).alias("month_sin"),
        F.cos(angle).alias("month_cos"),
        *(F.lead(TARGET, h).over(by_zone).alias(f"target_h{h}") for h in range(1, horizon + 1)),
    )
