"""The Spark feature transform of the crop demand use case: raw weekly tables to one row per origin.

One output row is one forecast origin: a series (``region`` × ``crop``) at the Monday
``week_start`` of week t. Every feature uses data of weeks <= t only; ``target_h1`` ..
``target_h{H}`` are the observed demand of weeks t+1 .. t+H. Only built-in Spark functions and
window functions are used (no Python or pandas UDFs); the one Python-side step builds a 300-row
table of Easter dates with ``dateutil`` that is broadcast-joined like any other table.

Panel completion (the fill rule)
    Each raw table is completed on its own series: ``historical_demand`` and ``market_trends``
    per region × crop, ``weather`` per region. A series gets every Monday from its first to its
    last ``week_start`` (7-day steps; inputs are validated, so weeks are Mondays). A value that is
    missing there (the week's row is absent, or the value is null or NaN) takes the last observed
    value of the same series at or before that week: ``last(value, ignorenulls=True)`` over rows
    ``unboundedPreceding .. currentRow``. The fill never looks ahead and never crosses series;
    weeks before a series' first row are not invented. A table-week counts as *filled* when any
    of its values was filled. ``is_filled`` is 1.0 at an origin when its demand, market or weather
    week was filled, else 0.0. Targets are **not** filled: ``target_h{h}`` is the observed demand
    (null where that week is missing or after the series' last week), so a model never learns to
    forecast a fabricated value. Output rows are the completed demand panel; market and weather
    features are joined onto it (null where those tables do not cover the week).

Counts (``FeatureResult.counts``)
    ``rows`` (origins), ``series``, ``filled_weeks`` (origins with ``is_filled`` = 1), and per table
    ``filled_weeks_historical_demand``, ``filled_weeks_market_trends`` (region × crop weeks) and
    ``filled_weeks_weather`` (region weeks) filled in that table's own completed panel.

Features at origin t (numeric, double; a lag of k weeks is k rows back in the completed panel)
    * demand: ``demand_tonnes`` at t; ``demand_lag_{k}`` for k in 1, 2, 3, 4, 8, 13, 26, 52 and,
      for each horizon h, ``52 − h`` (last year's demand of the target week t+h);
      ``demand_mean_{n}`` and ``demand_std_{n}`` (sample, ddof 1) over the n weeks t-n+1 .. t for
      n in 4, 13, 52, null until n weeks are available.
    * supply: ``supply_tonnes`` at t, ``supply_lag_1``, ``supply_mean_4`` (t-3 .. t).
    * market: ``price_pen_per_kg`` at t; ``price_logret_4`` = ln(p_t / p_{t-4});
      ``price_log_vs_mean_52`` = ln(p_t / mean(p_{t-51} .. p_t)); ``usd_pen`` at t;
      ``usd_logret_4`` = ln(usd_t / usd_{t-4}).
    * weather (joined by region): ``temp_mean_c`` and ``precip_mm`` at t, ``temp_lag_1``,
      ``precip_lag_{k}`` for k in 1, 2, 4, ``precip_sum_4`` (t-3 .. t).
    * ENSO: ``nino12_anomaly_c`` at t and ``nino12_lag_{k}`` for k in 1, 2, 4, 8, 13, 26.
    * calendar: ``week_sin``/``week_cos`` = sin/cos(2π · ISO week / 52.1775); 0/1 flags
      ``is_semana_santa``, ``is_fiestas_patrias``, ``is_christmas_new_year`` for the origin week;
      ``is_filled`` (above).

Holiday weeks (Monday to Sunday)
    Semana Santa: the week holding Good Friday (its Monday is Easter Sunday − 6 days). Fiestas
    Patrias: the week containing 28 July. Christmas/New Year: the week containing 25 December and
    the week containing 1 January (always two different weeks).

Known-future calendar (categorical)
    ``fut_holiday_h{h}`` for h in 1..H is the holiday code of the target week t+h: 0 none,
    1 Semana Santa, 2 Fiestas Patrias, 3 Christmas/New Year. The codes name classes without an
    order, so they are **categorical** int32 columns (listed in ``FeatureSpec.categorical`` after
    ``region`` and ``crop``). They are known in advance, so they are never null.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from models.base import FeatureResult, FeatureSpec
from perucast.spark import require_tables

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession, WindowSpec

TIME = "week_start"
KEYS: tuple[str, ...] = ("region", "crop")
TARGET = "demand_tonnes"
PERIOD = "W-MON"

DEMAND_LAGS: tuple[int, ...] = (1, 2, 3, 4, 8, 13, 26, 52)
SEASON_WEEKS = 52
DEMAND_WINDOWS: tuple[int, ...] = (4, 13, 52)
PRECIP_LAGS: tuple[int, ...] = (1, 2, 4)
NINO_LAGS: tuple[int, ...] = (1, 2, 4, 8, 13, 26)
WEEKS_PER_YEAR = 365.2425 / 7
# Years of the Easter table; covers the schema's week range (1980–2035) plus any horizon.
EASTER_YEARS = range(1900, 2200)

HOLIDAY_NONE, SEMANA_SANTA, FIESTAS_PATRIAS, CHRISTMAS_NEW_YEAR = 0, 1, 2, 3

# table: (series keys, value columns filled by the fill rule, name of its 0/1 filled flag)
TABLE_VALUES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "historical_demand": (KEYS, ("demand_tonnes", "supply_tonnes"), "_filled_demand"),
    "market_trends": (KEYS, ("price_pen_per_kg", "usd_pen"), "_filled_market"),
    "weather": (("region",), ("temp_mean_c", "precip_mm", "nino12_anomaly_c"), "_filled_weather"),
}


def demand_lags(horizon: int) -> tuple[int, ...]:
    """Lags of the demand features: the fixed ones and last year's week of every target week."""
    seasonal = {SEASON_WEEKS - h for h in range(1, min(horizon, SEASON_WEEKS - 1) + 1)}
    return tuple(sorted({*DEMAND_LAGS, *seasonal}))


def numeric_columns(horizon: int) -> tuple[str, ...]:
    """The numeric feature columns for ``horizon`` weeks ahead."""
    lags = tuple(f"demand_lag_{k}" for k in demand_lags(horizon))
    return (TARGET, *lags, *NUMERIC[1:])


# Numeric columns after the target and its lags (see ``numeric_columns``).
NUMERIC: tuple[str, ...] = (
    TARGET,
    *(f"demand_mean_{n}" for n in DEMAND_WINDOWS),
    *(f"demand_std_{n}" for n in DEMAND_WINDOWS),
    "supply_tonnes",
    "supply_lag_1",
    "supply_mean_4",
    "price_pen_per_kg",
    "price_logret_4",
    "price_log_vs_mean_52",
    "usd_pen",
    "usd_logret_4",
    "temp_mean_c",
    "temp_lag_1",
    "precip_mm",
    *(f"precip_lag_{k}" for k in PRECIP_LAGS),
    "precip_sum_4",
    "nino12_anomaly_c",
    *(f"nino12_lag_{k}" for k in NINO_LAGS),
    "week_sin",
    "week_cos",
    "is_semana_santa",
    "is_fiestas_patrias",
    "is_christmas_new_year",
    "is_filled",
)


def future_holiday_columns(horizon: int) -> list[str]:
    """The known-future holiday code columns ``fut_holiday_h1`` .. ``fut_holiday_h{H}``."""
    return [f"fut_holiday_h{h}" for h in range(1, horizon + 1)]


def feature_spec(horizon: int) -> FeatureSpec:
    """The columns of the crop demand feature dataset.

    Args:
        horizon: H, the number of weeks ahead (``target_h1`` .. ``target_h{H}``).

    Raises:
        ValueError: when ``horizon`` is smaller than 1.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 week, got {horizon}")
    return FeatureSpec(
        time_column=TIME,
        series_keys=KEYS,
        period=PERIOD,
        horizon=horizon,
        target=TARGET,
        categorical=(*KEYS, *future_holiday_columns(horizon)),
        numeric=numeric_columns(horizon),
    )


def build_features(tables: Mapping[str, DataFrame], horizon: int) -> FeatureResult:
    """Build the weekly feature panel (see the module docstring for every definition).

    Args:
        tables: Spark DataFrames of ``historical_demand``, ``market_trends`` and ``weather``
            (validated raw tables; extra tables and columns are ignored).
        horizon: H, the number of target columns.

    Returns:
        The frame (columns of ``feature_spec(horizon).columns``), its spec and the fill counts.

    Raises:
        perucast.spark.TableInputError: when a table or one of its columns is missing.
    """
    from pyspark.sql import functions as F

    spec = feature_spec(horizon)
    require_tables(tables, list(TABLE_VALUES), "crop_demand features")
    raw = {name: _table(tables, name) for name in TABLE_VALUES}
    panels = {name: _complete(frame, name) for name, frame in raw.items()}

    demand = _demand_features(panels["historical_demand"], horizon)
    market = _market_features(panels["market_trends"])
    weather = _weather_features(panels["weather"])

    frame = (
        demand.join(market, [*KEYS, TIME], "left")
        .join(weather, ["region", TIME], "left")
        # greatest() skips nulls: weeks a table does not cover count as not filled.
        .withColumn("is_filled", F.greatest("_filled_demand", "_filled_market", "_filled_weather"))
    )
    frame = _with_calendar(frame, horizon)
    casts = {c: "double" for c in (*spec.numeric, *spec.target_columns)}
    casts.update({c: "int" for c in future_holiday_columns(horizon)})
    frame = frame.select(
        *(F.col(c).cast(casts[c]).alias(c) if c in casts else F.col(c) for c in spec.columns)
    )
    return FeatureResult(frame=frame, spec=spec, counts=_counts(raw, panels))


def _table(tables: Mapping[str, DataFrame], name: str) -> DataFrame:
    """The columns of ``name`` the transform needs (``read_tables`` checked their types)."""
    keys, values, _ = TABLE_VALUES[name]
    return tables[name].select(TIME, *keys, *values)


def _series_window(keys: Sequence[str]) -> WindowSpec:
    from pyspark.sql import Window

    return Window.partitionBy(*keys).orderBy(TIME)


def _complete(frame: DataFrame, name: str) -> DataFrame:
    """Every Monday of every series, values forward-filled, plus a 0/1 ``_filled_<table>`` flag.

    ``historical_demand`` also keeps the observed (unfilled) demand as ``_demand_observed`` for
    the targets.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys, values, flag = TABLE_VALUES[name]
    grid = (
        frame.groupBy(*keys)
        .agg(F.min(TIME).alias("_first"), F.max(TIME).alias("_last"))
        .select(
            *keys,
            F.explode(F.sequence("_first", "_last", F.expr("INTERVAL 7 DAYS"))).alias(TIME),
        )
    )
    # NaN counts as missing too: last(..., ignorenulls) only skips nulls.
    observed = frame.select(
        *keys, TIME, *(F.nanvl(F.col(c), F.lit(None).cast("double")).alias(c) for c in values)
    )
    panel = grid.join(observed, [*keys, TIME], "left")
    any_missing = functools.reduce(operator.or_, (F.col(c).isNull() for c in values))
    # The fill sees the past and the present of its own series only.
    upto_now = _series_window(keys).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    extra = [F.col(TARGET).alias("_demand_observed")] if name == "historical_demand" else []
    return panel.select(
        *keys,
        TIME,
        *extra,
        F.when(any_missing, 1.0).otherwise(0.0).alias(flag),
        *(F.last(c, ignorenulls=True).over(upto_now).alias(c) for c in values),
    )


def _rolling(column: str, n: int, keys: Sequence[str], fn: Callable[[str], Column]) -> Column:
    """``fn`` over weeks t-n+1 .. t, null until n non-null values are available."""
    from pyspark.sql import functions as F

    frame = _series_window(keys).rowsBetween(-(n - 1), 0)
    return F.when(F.count(column).over(frame) == n, fn(column).over(frame))


def _demand_features(panel: DataFrame, horizon: int) -> DataFrame:
    from pyspark.sql import functions as F

    w = _series_window(KEYS)
    return panel.select(
        *KEYS,
        TIME,
        "_filled_demand",
        TARGET,
        *(F.lag(TARGET, k).over(w).alias(f"demand_lag_{k}") for k in demand_lags(horizon)),
        *(_rolling(TARGET, n, KEYS, F.avg).alias(f"demand_mean_{n}") for n in DEMAND_WINDOWS),
        *(
            _rolling(TARGET, n, KEYS, F.stddev_samp).alias(f"demand_std_{n}")
            for n in DEMAND_WINDOWS
        ),
        "supply_tonnes",
        F.lag("supply_tonnes", 1).over(w).alias("supply_lag_1"),
        _rolling("supply_tonnes", 4, KEYS, F.avg).alias("supply_mean_4"),
        # Targets: observed demand h weeks ahead, never the filled value.
        *(
            F.lead("_demand_observed", h).over(w).alias(f"target_h{h}")
            for h in range(1, horizon + 1)
        ),
    )


def _market_features(panel: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    w = _series_window(KEYS)
    price, usd = F.col("price_pen_per_kg"), F.col("usd_pen")
    return panel.select(
        *KEYS,
        TIME,
        "_filled_market",
        "price_pen_per_kg",
        F.log(price / F.lag(price, 4).over(w)).alias("price_logret_4"),
        F.log(price / _rolling("price_pen_per_kg", 52, KEYS, F.avg)).alias("price_log_vs_mean_52"),
        "usd_pen",
        F.log(usd / F.lag(usd, 4).over(w)).alias("usd_logret_4"),
    )


def _weather_features(panel: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    keys = ("region",)
    w = _series_window(keys)
    return panel.select(
        "region",
        TIME,
        "_filled_weather",
        "temp_mean_c",
        F.lag("temp_mean_c", 1).over(w).alias("temp_lag_1"),
        "precip_mm",
        *(F.lag("precip_mm", k).over(w).alias(f"precip_lag_{k}") for k in PRECIP_LAGS),
        _rolling("precip_mm", 4, keys, F.sum).alias("precip_sum_4"),
        "nino12_anomaly_c",
        *(F.lag("nino12_anomaly_c", k).over(w).alias(f"nino12_lag_{k}") for k in NINO_LAGS),
    )


def semana_santa_monday(year: int) -> dt.date:
    """Monday of Holy Week (the week holding Good Friday): Easter Sunday − 6 days."""
    from dateutil.easter import easter

    return easter(year) - dt.timedelta(days=6)


def _easter_table(spark: SparkSession, horizon: int) -> DataFrame:
    """Per origin year, the Semana Santa Mondays of that year and of every year a target reaches.

    Built in Python (dateutil) as a few hundred rows and broadcast-joined on the origin's year,
    so each holiday code is a plain column expression afterwards.
    """
    ahead = horizon * 7 // 365 + 1  # a target week t+H lies at most this many years later
    rows = [
        (year, [semana_santa_monday(y) for y in range(year, year + ahead + 1)])
        for year in EASTER_YEARS
    ]
    return spark.createDataFrame(rows, "_year int, _semana_santa array<date>")


def _monday_of(day: Column) -> Column:
    """The Monday on or before ``day`` (next_day is strictly after, so start a week earlier)."""
    from pyspark.sql import functions as F

    return F.next_day(F.date_sub(day, 7), "Mon")


def _holiday_code(day: Column) -> Column:
    """Holiday code of the week starting on Monday ``day`` (see the module docstring)."""
    from pyspark.sql import functions as F

    year = F.year(day)

    def week_of(y: Column, month: int, dom: int) -> Column:
        return day == _monday_of(F.make_date(y, F.lit(month), F.lit(dom)))

    return (
        F.when(F.array_contains("_semana_santa", day), SEMANA_SANTA)
        .when(week_of(year, 7, 28), FIESTAS_PATRIAS)
        .when(
            # The week holding 1 January may start in the previous December.
            week_of(year, 12, 25) | week_of(year, 1, 1) | week_of(year + 1, 1, 1),
            CHRISTMAS_NEW_YEAR,
        )
        .otherwise(HOLIDAY_NONE)
    )


def _with_calendar(frame: DataFrame, horizon: int) -> DataFrame:
    """Add week-of-year sin/cos, the origin's holiday flags and the target weeks' codes."""
    from pyspark.sql import functions as F

    easter = _easter_table(frame.sparkSession, horizon)
    frame = frame.join(F.broadcast(easter), F.year(TIME) == F.col("_year"), "left")
    origin = _holiday_code(F.col(TIME))
    angle = F.weekofyear(TIME) * (2 * math.pi / WEEKS_PER_YEAR)
    return frame.select(
        "*",
        F.sin(angle).alias("week_sin"),
        F.cos(angle).alias("week_cos"),
        (origin == SEMANA_SANTA).cast("double").alias("is_semana_santa"),
        (origin == FIESTAS_PATRIAS).cast("double").alias("is_fiestas_patrias"),
        (origin == CHRISTMAS_NEW_YEAR).cast("double").alias("is_christmas_new_year"),
        *(
            _holiday_code(F.date_add(TIME, 7 * h)).alias(f"fut_holiday_h{h}")
            for h in range(1, horizon + 1)
        ),
    )


def _missing_weeks(frame: DataFrame, name: str) -> DataFrame:
    """One row: series, weeks in their spans and weeks the fill rule fills, without a join.

    A validated table has unique Monday keys, so a series spans (last - first) / 7 + 1 weeks and
    the filled ones are those without a complete row (row absent, or a value null or NaN).
    """
    from pyspark.sql import functions as F

    keys, values, _ = TABLE_VALUES[name]
    complete = functools.reduce(operator.and_, (F.col(c).isNotNull() & ~F.isnan(c) for c in values))
    span = F.floor(F.datediff(F.max(TIME), F.min(TIME)) / 7) + 1
    per_series = frame.groupBy(*keys).agg(
        span.alias("_weeks"), (span - F.count(F.when(complete, 1))).alias("_missing")
    )
    return per_series.agg(
        F.lit(name).alias("table"),
        F.count(F.lit(1)).alias("series"),
        F.sum("_weeks").alias("weeks"),
        F.sum("_missing").alias("missing"),
    )


def _counts(tables: Mapping[str, DataFrame], panels: Mapping[str, DataFrame]) -> dict[str, int]:
    """Rows, series and filled weeks (see the module docstring).

    Per-table counts come from one aggregate per table. Origins with ``is_filled`` = 1 need the
    completed panels joined, which only runs when some table has a gap at all.
    """
    from pyspark.sql import functions as F

    names = list(TABLE_VALUES)
    per_table = functools.reduce(
        lambda a, b: a.unionByName(b), (_missing_weeks(tables[n], n) for n in names)
    )
    stats = {row["table"]: row for row in per_table.collect()}
    # A global aggregate always returns one row; its sums are null for an empty table.
    counts = {
        "rows": int(stats["historical_demand"]["weeks"] or 0),
        "series": int(stats["historical_demand"]["series"]),
        "filled_weeks": 0,
        **{f"filled_weeks_{n}": int(stats[n]["missing"] or 0) for n in names},
    }
    if any(counts[f"filled_weeks_{n}"] for n in names):
        flags = (
            panels["historical_demand"]
            .select(*KEYS, TIME, "_filled_demand")
            .join(
                panels["market_trends"].select(*KEYS, TIME, "_filled_market"), [*KEYS, TIME], "left"
            )
            .join(
                panels["weather"].select("region", TIME, "_filled_weather"),
                ["region", TIME],
                "left",
            )
        )
        filled = flags.agg(
            F.sum(F.greatest("_filled_demand", "_filled_market", "_filled_weather"))
        ).first()[0]
        counts["filled_weeks"] = int(filled or 0)
    return counts
