"""One generator run in its own process, so its peak memory is its own (used by bench.run)."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

from models import get_use_case
from models.base import FileFormat, GeneratorConfig, Scale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--scale", required=True, choices=[s.value for s in Scale])
    parser.add_argument("--format", default="parquet", choices=[f.value for f in FileFormat])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    config = GeneratorConfig(seed=args.seed, scale=args.scale, format=args.format)
    started = time.perf_counter()
    result = get_use_case(args.use_case).generate(config, args.out)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in args.out.iterdir())
    shutil.rmtree(args.out, ignore_errors=True)
    json.dump(
        {
            "rows": result.rows,
            "total_rows": result.total_rows,
            "seconds": seconds,
            "bytes": size,
            # ru_maxrss is in KiB on Linux
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
