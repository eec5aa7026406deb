"""perucast benchmarks: ``make bench`` (or ``python -m bench.run``).

Writes ``bench/results.json`` (machines) and ``bench/RESULTS.md`` (people). Every ratio is
measured side by side in the same run, on the same machine. Later issues add their suites
(Spark preprocessing, training, serving latency and throughput) to ``SUITES``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

from perucast.logs import setup_logging

log = logging.getLogger("perucast.bench")
BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / "_work"
DRIVER_MEMORY = "2g"  # the goal: the 25M-row run fits a 2 GB driver on 2 cores


def _run_generator(use_case: str, scale: str, fmt: str) -> dict[str, Any]:
    out = WORK_DIR / f"{use_case}-{scale}-{fmt}"
    cmd = [
        sys.executable,
        "-m",
        "bench.gen_one",
        "--use-case",
        use_case,
        "--scale",
        scale,
        "--format",
        fmt,
        "--out",
        str(out),
    ]
    log.info("running %s", " ".join(cmd[2:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(
        use_case=use_case,
        scale=scale,
        format=fmt,
        rows_per_s=result["total_rows"] / result["seconds"],
    )
    log.info(
        "%s %s %s: %s rows in %.1fs (%.0f rows/s), peak RSS %.0f MB",
        use_case,
        scale,
        fmt,
        f"{result['total_rows']:,}",
        result["seconds"],
        result["rows_per_s"],
        result["peak_rss_mb"],
    )
    return result


def generators_suite(scales: list[str]) -> dict[str, Any]:
    """Generator throughput (rows/s) and peak memory per use case and scale, Parquet and CSV."""
    runs = []
    ratios = []
    for use_case in ("crop_demand", "fish_stock"):
        by_key = {}
        for scale in scales:
            by_key[(scale, "parquet")] = _run_generator(use_case, scale, "parquet")
        by_key[("small", "csv")] = _run_generator(use_case, "small", "csv")
        runs.extend(by_key.values())
        small_pq = by_key[("small", "parquet")]
        ratios.append(
            {
                "name": f"{use_case}: CSV / Parquet rows/s (small)",
                "value": by_key[("small", "csv")]["rows_per_s"] / small_pq["rows_per_s"],
            }
        )
        if ("full", "parquet") in by_key:
            full = by_key[("full", "parquet")]
            ratios.append(
                {
                    "name": f"{use_case}: full / small rows/s (Parquet)",
                    "value": full["rows_per_s"] / small_pq["rows_per_s"],
                }
            )
            ratios.append(
                {
                    "name": f"{use_case}: full / small peak RSS (Parquet)",
                    "value": full["peak_rss_mb"] / small_pq["peak_rss_mb"],
                }
            )
    return {"runs": runs, "ratios": ratios}


def _run_tree(cmd: list[str], interval: float = 0.1) -> tuple[dict[str, Any], float, float]:
    """Run ``cmd``; return its JSON line, wall seconds and the peak RSS (MB) of its process tree.

    The tree matters for Spark: the JVM is a child of the Python process, so ``ru_maxrss`` or
    ``/usr/bin/time`` on Python alone would miss most of the memory.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            rss = 0
            for member in tree:
                with contextlib.suppress(psutil.Error):
                    rss += member.memory_info().rss
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(interval)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), seconds, peak / 2**20


def _satellite_variant(base: Path, rows: int) -> Path:
    """A fish_stock data set whose satellite table has ``rows`` rows, made from ``base``.

    Fewer rows: the first ``rows`` in time order (the base is written month by month, so that is
    a shorter period on the full grid). More rows: the base plus copies of its row groups as
    extra cells (``cell_id`` offset), the way a finer grid adds rows. Sonar and stock are the
    base's.
    """
    import pyarrow.parquet as pq

    out = WORK_DIR / f"fish-sat-{rows}"
    if (out / "satellite.parquet").exists() and pq.read_metadata(
        out / "satellite.parquet"
    ).num_rows == rows:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for table in ("sonar", "stock"):
        target = out / f"{table}.parquet"
        if not target.exists():
            target.symlink_to(base / f"{table}.parquet")
    source = pq.ParquetFile(base / "satellite.parquet")
    written = 0
    copy = 0
    with pq.ParquetWriter(out / "satellite.parquet", source.schema_arrow, compression="zstd") as w:
        while written < rows:
            for i in range(source.num_row_groups):
                group = source.read_row_group(i)
                if copy:
                    cell = group.column("cell_id").to_numpy() + 100_000 * copy
                    index = group.schema.get_field_index("cell_id")
                    group = group.set_column(
                        index, group.schema.field(index), pa.array(cell, type=pa.int32())
                    )
                take = min(group.num_rows, rows - written)
                w.write_table(group.slice(0, take))
                written += take
                if written >= rows:
                    break
            copy += 1
    return out


def preprocess_suite(quick: bool) -> dict[str, Any]:
    """Spark fish_stock transform at ~1, 5 and 25 million satellite rows; pandas beside it."""
    base = WORK_DIR / "fish-full-base"
    if not (base / "manifest.json").exists():
        log.info("generating the full fish_stock data set once (base of every size)")
        subprocess.run(
            [
                sys.executable, "-m", "components.generate", "--use-case", "fish_stock",
                "--scale", "full", "--seed", "42", "--out", str(base),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    sizes = [1_000_000, 5_000_000] if quick else [1_000_000, 5_000_000, 25_000_000]
    runs = []
    for rows in sizes:
        data = _satellite_variant(base, rows)
        for engine in ("spark", "pandas"):
            out = WORK_DIR / f"prep-out-{engine}-{rows}"
            cmd = [
                sys.executable, "-m", "bench.prep_one", "--engine", engine,
                "--data", str(data), "--out", str(out), "--driver-memory", DRIVER_MEMORY,
            ]  # fmt: skip
            log.info("preprocess %s at %s satellite rows", engine, f"{rows:,}")
            result, wall, peak_mb = _run_tree(cmd)
            result.update(
                engine=engine,
                satellite_rows=rows,
                wall_s=wall,
                peak_tree_rss_mb=peak_mb,
                rows_per_s=rows / result["transform_s"],
                us_per_row=1e6 * result["transform_s"] / rows,
                driver_memory=DRIVER_MEMORY if engine == "spark" else None,
            )
            log.info(
                "  %s: transform %.1fs (%.0f rows/s), wall %.1fs, peak tree RSS %.0f MB",
                engine,
                result["transform_s"],
                result["rows_per_s"],
                wall,
                peak_mb,
            )
            runs.append(result)
    by = {(r["engine"], r["satellite_rows"]): r for r in runs}
    ratios = []
    if ("spark", 25_000_000) in by:
        ratios.append(
            {
                "name": "Spark time per row, 25M / 5M (goal ≤ 1.5)",
                "value": by[("spark", 25_000_000)]["us_per_row"]
                / by[("spark", 5_000_000)]["us_per_row"],
            }
        )
    for rows in sizes:
        ratios.append(
            {
                "name": f"pandas / Spark transform time at {rows / 1e6:.0f}M rows",
                "value": by[("pandas", rows)]["transform_s"] / by[("spark", rows)]["transform_s"],
            }
        )
        ratios.append(
            {
                "name": f"pandas / Spark peak tree RSS at {rows / 1e6:.0f}M rows",
                "value": by[("pandas", rows)]["peak_tree_rss_mb"]
                / by[("spark", rows)]["peak_tree_rss_mb"],
            }
        )
    return {"runs": runs, "ratios": ratios, "driver_memory": DRIVER_MEMORY}


SUITES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "generators": lambda args: generators_suite(["small"] if args.quick else ["small", "full"]),
    "preprocess": lambda args: preprocess_suite(args.quick),
}


def _markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# perucast benchmark results",
        "",
        f"Run {results['started']} on {env['cpus']} CPUs, {env['memory_gb']:.0f} GB, "
        f"Python {env['python']}, {env['platform']}.",
        "",
    ]
    gen = results["suites"].get("generators")
    if gen:
        lines += [
            "## Synthetic data generators",
            "",
            "| use case | scale | format | rows | seconds | rows/s | peak RSS (MB) | size (MB) |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in gen["runs"]:
            lines.append(
                f"| {r['use_case']} | {r['scale']} | {r['format']} | {r['total_rows']:,} | "
                f"{r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | "
                f"{r['bytes'] / 1e6:,.1f} |"
            )
        lines += ["", "| ratio (same run) | value |", "|---|---:|"]
        lines += [f"| {r['name']} | {r['value']:.2f} |" for r in gen["ratios"]]
        lines.append("")
    prep = results["suites"].get("preprocess")
    if prep:
        lines += [
            "## Preprocessing: fish_stock feature transform",
            "",
            "Spark runs the whole transform (`local[*]`, driver heap "
            f"{prep['driver_memory']}); pandas runs the satellite zone × month aggregation, the "
            "part that grows with the satellite rows. Peak RSS is the whole process tree "
            "(Python + JVM), sampled every 0.1 s.",
            "",
            "| engine | satellite rows | transform (s) | rows/s | µs/row | wall (s) | "
            "peak tree RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in prep["runs"]:
            lines.append(
                f"| {r['engine']} | {r['satellite_rows']:,} | {r['transform_s']:.1f} | "
                f"{r['rows_per_s']:,.0f} | {r['us_per_row']:.2f} | {r['wall_s']:.1f} | "
                f"{r['peak_tree_rss_mb']:,.0f} |"
            )
        lines += ["", "| ratio (same run) | value |", "|---|---:|"]
        lines += [f"| {r['name']} | {r['value']:.2f} |" for r in prep["ratios"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--suite",
        action="append",
        choices=sorted(SUITES),
        help="Suite to run (repeatable); default: all.",
    )
    parser.add_argument("--quick", action="store_true", help="Skip the full-scale runs.")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    setup_logging()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": {
            "cpus": os.cpu_count(),
            "memory_gb": psutil.virtual_memory().total / 1e9,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "suites": {},
    }
    for name in args.suite or sorted(SUITES):
        log.info("suite %s", name)
        results["suites"][name] = SUITES[name](args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "RESULTS.md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
