"""perucast benchmarks: ``make bench`` (or ``python -m bench.run``).

Writes ``bench/results.json`` (machines) and ``bench/RESULTS.md`` (people). Every ratio is
measured side by side in the same run, on the same machine. Later issues add their suites
(Spark preprocessing, training, serving latency and throughput) to ``SUITES``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from perucast.logs import setup_logging

log = logging.getLogger("perucast.bench")
BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / "_work"


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


SUITES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "generators": lambda args: generators_suite(["small"] if args.quick else ["small", "full"]),
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
