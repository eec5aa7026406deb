"""One preprocessing run in its own process (used by bench.run's ``preprocess`` suite).

``--engine spark`` runs the whole fish_stock feature transform (satellite aggregation, surveys,
stock lags) through Spark ``local[*]`` with a bounded driver heap and writes the result;
``--engine pandas`` runs the same satellite zone × month aggregation with pandas, the part
whose cost grows with the satellite rows. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

WARM_ANOMALY_C = 1.0


def run_spark(data: Path, out: Path, driver_memory: str) -> dict[str, float]:
    from models import get_use_case
    from perucast.spark import SparkConfig, get_spark, read_tables

    started = time.perf_counter()
    spark = get_spark(SparkConfig(driver_memory=driver_memory, app_name="perucast-bench"))
    session_s = time.perf_counter() - started
    use_case = get_use_case("fish_stock")
    tables = read_tables(spark, list(use_case.tables), data)
    transform_started = time.perf_counter()
    result = use_case.build_features(tables, use_case.default_horizon)
    result.frame.write.mode("overwrite").parquet(str(out))
    transform_s = time.perf_counter() - transform_started
    rows_out = spark.read.parquet(str(out)).count()
    spark.stop()
    return {"session_s": session_s, "transform_s": transform_s, "rows_out": rows_out}


def run_pandas(data: Path, out: Path) -> dict[str, float]:
    import pandas as pd

    started = time.perf_counter()
    sat = pd.read_parquet(
        data / "satellite.parquet",
        columns=["date", "zone", "sst_c", "sst_anomaly_c", "chlorophyll_mg_m3", "wind_speed_m_s"],
    )
    sat["month"] = pd.to_datetime(sat["date"]).dt.to_period("M").dt.to_timestamp()
    sat["warm"] = (sat["sst_anomaly_c"] > WARM_ANOMALY_C).astype(float)
    sat["chl_missing"] = sat["chlorophyll_mg_m3"].isna().astype(float)
    grouped = sat.groupby(["zone", "month"], sort=True)
    parts = {}
    variables = (("sst", "sst_c"), ("sst_anom", "sst_anomaly_c"), ("chl", "chlorophyll_mg_m3"))
    for prefix, col in variables:
        g = grouped[col]
        parts[f"sat_{prefix}_mean"] = g.mean()
        parts[f"sat_{prefix}_std"] = g.std()
        for name, q in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
            parts[f"sat_{prefix}_{name}"] = g.quantile(q)
    parts["sat_chl_missing_share"] = grouped["chl_missing"].mean()
    parts["sat_wind_mean"] = grouped["wind_speed_m_s"].mean()
    parts["sat_warm_share"] = grouped["warm"].mean()
    parts["sat_n_obs"] = grouped.size().astype(float)
    frame = pd.DataFrame(parts).reset_index()
    frame.to_parquet(out)
    return {"session_s": 0.0, "transform_s": time.perf_counter() - started, "rows_out": len(frame)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=["spark", "pandas"], required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--driver-memory", default="2g")
    args = parser.parse_args(argv)
    if args.engine == "spark":
        result = run_spark(args.data, args.out, args.driver_memory)
    else:
        result = run_pandas(args.data, args.out)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
