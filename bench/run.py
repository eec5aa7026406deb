"""perucast benchmarks: ``make bench`` (or ``python -m bench.run``).

Writes ``bench/results.json`` (machines) and ``bench/RESULTS.md`` (people). Every ratio is
measured side by side in the same run, on the same machine. ``--suite NAME`` runs some suites
and keeps the others' earlier results in both files (each suite records when it ran). Later
issues add their suites (serving latency and throughput) to ``SUITES``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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
ROOT = BENCH_DIR.parent
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


def _run_tree(
    cmd: list[str],
    interval: float = 0.1,
    *,
    env: dict[str, str] | None = None,
    json_line: bool = True,
    on_poll: Callable[[], None] | None = None,
) -> tuple[dict[str, Any] | None, float, float]:
    """Run ``cmd``; return its JSON line, wall seconds and the peak RSS (MB) of its process tree.

    The tree matters for Spark: the JVM is a child of the Python process, so ``ru_maxrss`` or
    ``/usr/bin/time`` on Python alone would miss most of the memory (and for local training
    workers, which are children of the launcher). Output goes to temporary files, not pipes,
    so a chatty child never blocks on a full pipe. ``json_line=False``: return None instead of
    parsing the last stdout line; ``on_poll`` runs at every sample (progress logging).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
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
            if on_poll is not None:
                on_poll()
            time.sleep(interval)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1]) if json_line else None
    return result, seconds, peak / 2**20


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


# Same epochs for 1 and 2 workers; patience = epochs, so early stopping never cuts a run short.
TRAIN_SETTINGS: dict[str, dict[str, int]] = {
    "crop_demand": {"epochs": 5, "batch_size": 1024},
    "fish_stock": {"epochs": 40, "batch_size": 64},
}
TRAIN_QUICK_EPOCHS = 2
TRAIN_WORKERS = (1, 2)


def _check_call(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")


def _train_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as `make` sets them
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _prepare_features(use_case: str, scale: str, root: Path, env: dict[str, str]) -> Path:
    """Generate ``scale`` data (seed 42) and preprocess it once; return the feature dataset."""
    raw, features = root / f"{use_case}-raw", root / f"{use_case}-features"
    log.info("%s: generating %s data", use_case, scale)
    _check_call(
        [
            sys.executable, "-m", "components.generate", "--use-case", use_case,
            "--scale", scale, "--seed", "42", "--out", str(raw),
        ],
        env,
    )  # fmt: skip
    log.info("%s: preprocessing (Spark)", use_case)
    started = time.perf_counter()
    _check_call(
        [
            sys.executable, "-m", "components.preprocess", "--use-case", use_case,
            "--input", str(raw), "--output", str(features),
        ],
        env,
    )  # fmt: skip
    log.info("%s: features ready in %.1fs", use_case, time.perf_counter() - started)
    return features


def _epoch_records(path: Path) -> list[dict[str, Any]]:
    """The chief's ``epochs.jsonl``, one record per epoch (the last attempt's after a restart)."""
    if not path.exists():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def _run_train(
    use_case: str,
    features: Path,
    workers: int,
    epochs: int,
    batch_size: int,
    root: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    out = root / f"train-{use_case}-{workers}w"
    repo = root / f"models-{workers}w"
    cmd = [
        sys.executable, "-m", "components.train", "run", "--use-case", use_case,
        "--features", str(features), "--model-repository", str(repo), "--output", str(out),
        "--workers", str(workers), "--epochs", str(epochs), "--patience", str(epochs),
        "--batch-size", str(batch_size),
    ]  # fmt: skip
    log.info("train %s, %d worker(s): %d epochs, batch %d", use_case, workers, epochs, batch_size)
    seen = 0

    def progress() -> None:
        nonlocal seen
        records = _epoch_records(out / "epochs.jsonl")
        for r in records[seen:]:
            log.info(
                "  epoch %d/%d: %.2fs, loss %.4f, val_loss %.4f",
                r["epoch"] + 1,
                epochs,
                r["seconds"],
                r.get("loss", float("nan")),
                r.get("val_loss", float("nan")),
            )
        seen = max(seen, len(records))

    _, wall, peak_mb = _run_tree(cmd, interval=0.2, env=env, json_line=False, on_poll=progress)
    records = _epoch_records(out / "epochs.jsonl")
    if not records:
        raise RuntimeError(f"{use_case}, {workers} worker(s): no epochs in {out / 'epochs.jsonl'}")
    training = json.loads((out / "training.json").read_text())
    from perucast.export import read_metadata

    metadata = read_metadata(training["version_dir"])["training"]
    seconds = [float(r["seconds"]) for r in records]
    steady = seconds[1:]
    result = {
        "use_case": use_case,
        "workers": workers,
        "strategy": training["strategy"],
        "epochs": epochs,
        "epochs_run": len(records),
        "batch_size": batch_size,
        "train_rows": metadata.get("train_rows"),
        "validation_rows": metadata.get("validation_rows"),
        "attempts": training["attempts"],
        "wall_s": wall,
        "epoch_1_s": seconds[0],
        "s_per_epoch": statistics.mean(steady) if steady else None,
        "epochs_s": sum(seconds),
        "startup_s": wall - sum(seconds),
        "final_loss": records[-1].get("loss"),
        "final_val_loss": records[-1].get("val_loss"),
        "peak_tree_rss_mb": peak_mb,
    }
    log.info(
        "  %s, %d worker(s): wall %.1fs, start-up %.1fs, epoch 1 %.1fs, %s s/epoch after, "
        "loss %.4f / val %.4f, peak tree RSS %.0f MB",
        use_case,
        workers,
        wall,
        result["startup_s"],
        result["epoch_1_s"],
        f"{result['s_per_epoch']:.2f}" if steady else "-",
        result["final_loss"],
        result["final_val_loss"],
        peak_mb,
    )
    return result


def train_suite(quick: bool) -> dict[str, Any]:
    """Train step with 1 process vs 2 local MWMS workers, per use case, same epochs for both."""
    scale = "tiny" if quick else "small"
    env = _train_env()
    runs = []
    ratios = []
    with tempfile.TemporaryDirectory(prefix="perucast-bench-train-") as tmp:
        root = Path(tmp)
        features = {uc: _prepare_features(uc, scale, root, env) for uc in TRAIN_SETTINGS}
        for use_case, settings in TRAIN_SETTINGS.items():
            epochs = TRAIN_QUICK_EPOCHS if quick else settings["epochs"]
            by_workers = {
                w: _run_train(
                    use_case, features[use_case], w, epochs, settings["batch_size"], root, env
                )
                for w in TRAIN_WORKERS
            }
            runs.extend(by_workers.values())
            one, two = by_workers[1], by_workers[2]
            if one["s_per_epoch"] and two["s_per_epoch"]:
                ratios.append(
                    {
                        "name": f"{use_case}: 2 / 1 workers, time per epoch (epochs 2+)",
                        "value": two["s_per_epoch"] / one["s_per_epoch"],
                    }
                )
            ratios.append(
                {
                    "name": f"{use_case}: 2 / 1 workers, wall time",
                    "value": two["wall_s"] / one["wall_s"],
                }
            )
            ratios.append(
                {
                    "name": f"{use_case}: 2 / 1 workers, peak tree RSS",
                    "value": two["peak_tree_rss_mb"] / one["peak_tree_rss_mb"],
                }
            )
    return {"runs": runs, "ratios": ratios, "scale": scale, "cpus": os.cpu_count()}


SERVING_MODEL = "crop_demand"


def _serving_model(args: argparse.Namespace) -> Path:
    """The crop_demand model directory the serving suite serves (its numeric versions inside).

    `--serving-model DIR` if given; else a model trained here once (tiny data, 2 epochs, kept in
    bench/_work so reruns reuse it): serving speed depends on the network's graph, not on how
    well it was trained.
    """
    if args.serving_model is not None:
        return args.serving_model
    repo = WORK_DIR / "serving-model"
    model_dir = repo / SERVING_MODEL
    if model_dir.is_dir() and any(p.name.isdigit() for p in model_dir.iterdir()):
        return model_dir
    env = _train_env()
    with tempfile.TemporaryDirectory(prefix="perucast-bench-serving-") as tmp:
        features = _prepare_features(SERVING_MODEL, "tiny", Path(tmp), env)
        settings = TRAIN_SETTINGS[SERVING_MODEL]
        _run_train(SERVING_MODEL, features, 1, 2, settings["batch_size"], Path(tmp), env)
        repo.mkdir(parents=True, exist_ok=True)
        import shutil

        shutil.copytree(Path(tmp) / "models-1w" / SERVING_MODEL, model_dir)
    return model_dir


def serving_suite(args: argparse.Namespace) -> dict[str, Any]:
    """perucast-model-server vs in-process and vs KServe (latency, throughput, batching)."""
    from bench.serving import run_serving

    return run_serving(
        _serving_model(args),
        WORK_DIR / "serving",
        duration_s=3 if args.quick else 10,
        model_name=SERVING_MODEL,
    )


DEMO_GOAL_S = 600  # the pipelines issue's goal: make demo under 10 minutes after make install


def demo_suite(args: argparse.Namespace) -> dict[str, Any]:
    """`make demo`'s main job, timed: wall time and each pipeline step's seconds and share.

    Runs ``python -m perucast.demo`` as people do (a fresh output directory, its own server)
    and reads the ``demo.json`` it writes. ``--quick`` uses the tiny data.
    """
    import shutil

    out = WORK_DIR / "demo"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "perucast.demo", "--out", str(out)]
    if args.quick:
        cmd += ["--scale", "tiny"]
    started = time.perf_counter()
    with (WORK_DIR / "demo.log").open("w") as log_file:
        subprocess.run(cmd, check=True, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - started
    timings = json.loads((out / "demo.json").read_text())
    steps = [
        {
            "use_case": use_case,
            "step": step,
            "seconds": seconds,
            "share": seconds / wall,
        }
        for use_case, per_step in timings["steps"].items()
        for step, seconds in per_step.items()
    ]
    return {
        "wall_s": round(wall, 1),
        "goal_s": DEMO_GOAL_S,
        "goal_met": wall <= DEMO_GOAL_S,
        "pipelines_s": timings["pipelines"],
        "steps": steps,
        "scale": "tiny" if args.quick else "small",
    }


def _demo_markdown(demo: dict[str, Any]) -> list[str]:
    verdict = "met" if demo["goal_met"] else "NOT met"
    lines = [
        "## Demo (`make demo`)",
        "",
        *_suite_run(demo),
        f"`python -m perucast.demo` end to end on the `{demo['scale']}` data: both use cases' "
        "pipelines through kfp.local (2 training workers), a perucast-model-server the deploy "
        "steps roll out to, gRPC predictions, the HTML report. "
        f"Wall time **{demo['wall_s']:.0f} s** (goal {demo['goal_s']} s: {verdict}); the rest "
        "of the wall time beyond the steps is the server start, the data summaries and plots, "
        "the predictions and kfp.local's own overhead.",
        "",
        "| use case | step | seconds | share of wall |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| {s['use_case']} | {s['step']} | {s['seconds']:.1f} | {s['share']:.1%} |"
        for s in demo["steps"]
    ]
    lines += ["", "| pipeline | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in demo["pipelines_s"].items()]
    return [*lines, ""]


SUITES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "generators": lambda args: generators_suite(["small"] if args.quick else ["small", "full"]),
    "preprocess": lambda args: preprocess_suite(args.quick),
    "train": lambda args: train_suite(args.quick),
    "serving": serving_suite,
    "demo": demo_suite,
}


def _markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# perucast benchmark results",
        "",
        f"Last run {results['started']} on {env['cpus']} CPUs, {env['memory_gb']:.0f} GB, "
        f"Python {env['python']}, {env['platform']}.",
        "",
    ]
    gen = results["suites"].get("generators")
    if gen:
        lines += [
            "## Synthetic data generators",
            "",
            *_suite_run(gen),
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
            *_suite_run(prep),
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
    train = results["suites"].get("train")
    if train:
        lines += [
            "## Training: one process vs two local workers",
            "",
            *_suite_run(train),
            "The train step (`python -m components.train run`) on the "
            f"`{train['scale']}` data, once in one process and once with `--workers 2` "
            "(MultiWorkerMirroredStrategy, two worker processes on loopback). Both runs train "
            "the same number of epochs (patience = epochs: early stopping never ends a run "
            "early). Epoch times are the chief's `epochs.jsonl`; epoch 1 includes tracing, so "
            'it is reported apart and "s/epoch" is the mean of epochs 2+. Start-up is wall '
            "time minus all epochs (imports, TensorFlow and cluster start, data loading, model "
            "build, export). Peak RSS is the whole process tree (launcher + workers), sampled "
            "every 0.2 s.",
            "",
            f"Both workers share the same {train['cpus']} CPU cores here (each gets "
            f"{max(1, train['cpus'] // 2)} TensorFlow thread(s)), so the 2-worker figures "
            "measure the MWMS overhead (gradient all-reduce over gRPC loopback, one collective "
            "per step, a second process), not a speed-up. On a cluster each worker has its own "
            "node or GPU.",
            "",
            "| use case | workers | epochs | batch | train rows | wall (s) | start-up (s) | "
            "epoch 1 (s) | s/epoch (2+) | final loss | final val loss | peak tree RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in train["runs"]:
            per_epoch = f"{r['s_per_epoch']:.2f}" if r["s_per_epoch"] is not None else "–"
            rows = f"{r['train_rows']:,}" if r.get("train_rows") is not None else "–"
            lines.append(
                f"| {r['use_case']} | {r['workers']} | {r['epochs_run']} | {r['batch_size']} | "
                f"{rows} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | {r['epoch_1_s']:.2f} | "
                f"{per_epoch} | {r['final_loss']:.4f} | {r['final_val_loss']:.4f} | "
                f"{r['peak_tree_rss_mb']:,.0f} |"
            )
        lines += ["", "| ratio (same run) | value |", "|---|---:|"]
        lines += [f"| {r['name']} | {r['value']:.2f} |" for r in train["ratios"]]
        lines.append("")
    serving = results["suites"].get("serving")
    if serving:
        from bench.serving import serving_table

        lines += ["## Serving", "", *_suite_run(serving), serving_table(serving, heading=False), ""]
    demo = results["suites"].get("demo")
    if demo:
        lines += _demo_markdown(demo)
    return "\n".join(lines)


def _suite_run(suite: dict[str, Any]) -> list[str]:
    """A "Run <time>" line for a suite: results.json merges suites run at different times."""
    if "started" not in suite:
        return []
    return [f"_Run {suite['started']}{' with --quick' if suite.get('quick') else ''}._", ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--suite",
        action="append",
        choices=sorted(SUITES),
        help="Suite to run (repeatable); default: all.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="Skip the full-scale runs; train: tiny data, 2 epochs."
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    parser.add_argument(
        "--serving-model",
        type=Path,
        default=None,
        help="serving: a crop_demand model directory (default: one trained here on tiny data).",
    )
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
    results_path = args.out_dir / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name, suite in previous.get("suites", {}).items():
        # Suites not run this time keep their results (and when they ran).
        suite.setdefault("started", previous.get("started"))
        results["suites"][name] = suite
    for name in args.suite or sorted(SUITES):
        log.info("suite %s", name)
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        results["suites"][name] = {**SUITES[name](args), "started": started, "quick": args.quick}
    results["suites"] = {k: results["suites"][k] for k in sorted(results["suites"])}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "RESULTS.md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
