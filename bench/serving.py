"""Serving benchmark: perucast-model-server's latency and throughput, side by side in one run.

``run_serving(model_base_path, work)`` starts the servers (``python -m serving ...`` with a set
of flags, on free ports; ready when ``GET /v1/models/NAME`` reports a version AVAILABLE; stopped
with SIGTERM), drives them with h2load (gRPC Predict) and wrk (REST predict), and returns a
JSON-able dict; ``serving_table(result)`` renders it as Markdown. Scenarios, all on one model:

(a) latency: one request at a time over gRPC (1 connection, 1 stream) against the unbatched
    single-process server, and the same PredictRequest run in-process (``bench.loadgen.inprocess``:
    parse, convert the tensors, call the signature) -> p50 and p99 ratios;
(b) throughput and p50/p99 at 1, 8, 32, 128 requests in flight, single-instance requests, for
    ``single`` (batching off), ``batching`` (single process, batching on) and ``2proc+batching``
    (``--num_server_processes 2``, batching on);
(c) instances/s with 256-instance requests, each configuration;
(d) REST: the same JSON with wrk at 1, 8, 32 connections against each configuration and against
    KServe 0.21 (``bench/kserve_server.py`` in its own venv, ``ensure_kserve_venv``);
(e) prediction logging: ``2proc+batching`` with the model's ``logging_config`` at 10% and 100%
    sampling (``2proc+batching+log10%``, ``+log100%``), gRPC at 32 in flight, beside logging
    off, with the records written and dropped read from the server's counters.

Goals (``goals``, each with ``value``, ``target``, ``passed``): gRPC p50 <= 2.5x in-process;
req/s at 32 in flight, best configuration, >= 3x the unbatched single process; ahead of KServe
on REST req/s at an equal or better p99 at every concurrency level.

h2load cannot see gRPC errors (HTTP 200 with a ``grpc-status`` trailer): every gRPC run is
checked with real calls through the official stub before and after it and by the DATA bytes
h2load received (``bench.loadgen.h2load``). Any failed scenario raises, with the server's log
tail. The TensorFlow-heavy steps run as subprocesses; this module never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import h2load, wrk

log = logging.getLogger("perucast.bench.serving")

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
KSERVE_VENV = BENCH_DIR / "_work" / "kserve-venv"
KSERVE_PINS = ("kserve==0.21.0", "tensorflow==2.21.0")
KSERVE_CONSTRAINTS = BENCH_DIR / "loadgen" / "kserve-constraints.txt"
# KServe's REST processes: one uvicorn worker per core (kserve.ModelServer(workers=2)).
KSERVE_WORKERS = 2

# TF Serving's BatchingParameters. max_batch_size 256 so that the 256-instance requests of
# scenario (c) fit one batch (TF Serving rejects a request larger than max_batch_size).
# Two batch threads (one per core, so two 256-row batches run side by side) and a 2 ms window:
# Python decodes requests under one GIL, so they reach the batcher slowly and a 1 ms window
# closed batches of 2-3 rows (perucast_serving_batch_size). In process, 32 threads calling the
# serving core: 547 req/s for 2 threads / 2 ms, 452 for 1 / 5 ms, 430 for 2 / 5 ms.
# Tuned on this 2-core machine at 32 single-instance requests in flight (serving/README.md):
# one batch thread per process, because two TF calls in one process only contend for the GIL;
# a 5 ms window, because a crop_demand call costs about the same for 1 row as for 32, so fuller
# batches are nearly free throughput. Batches up to 256 rows and no large-batch splitting: split
# into 32-row batches, a 256-instance request ran 8 calls in a row on the one batch thread
# (82 against 237 req/s unbatched, measured side by side).
DEFAULT_BATCHING: dict[str, int | bool] = {
    "max_batch_size": 256,
    "batch_timeout_micros": 5000,
    "num_batch_threads": 1,
    "max_enqueued_batches": 1000,
}
# With batching, every request waiting for its batch holds a gRPC thread, and TF Serving's
# default --grpc_max_threads (4 x CPUs = 8 here) would cap batches at 8 rows per process.
BATCHING_GRPC_THREADS = 64
# Prediction logging (the model's logging_config) on the best configuration, at these sampling
# rates, measured at LOGGING_CONCURRENCY single-instance requests in flight beside logging off.
LOGGING_BASE = "2proc+batching"
LOGGING_RATES = (0.1, 1.0)
LOGGING_CONCURRENCY = 32
METRICS_PATH = "/monitoring/prometheus/metrics"


def logging_config_name(rate: float) -> str:
    return f"{LOGGING_BASE}+log{rate:.0%}"


GOAL_LATENCY_RATIO = 2.5
GOAL_THROUGHPUT_RATIO = 3.0
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"(no log: {e})"


def _json_subprocess(cmd: list[str], timeout: float, what: str) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout, check=False
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"{what} failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_version_dir(model_base_path: Path) -> Path:
    """The newest numeric version directory under a TF Serving model base path."""
    versions = [p for p in model_base_path.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"{model_base_path}: no numeric version directory")
    return max(versions, key=lambda p: int(p.name))


def batching_parameters_text(params: dict[str, int | bool]) -> str:
    """TF Serving's BatchingParameters text proto (wrapped scalar fields)."""
    return "".join(f"{k} {{ value: {str(v).lower()} }}\n" for k, v in params.items())


# --------------------------------------------------------------------------- KServe venv


def ensure_kserve_venv(venv: Path = KSERVE_VENV) -> Path:
    """The KServe baseline's virtualenv (``python3.11 -m venv`` + kserve and TF, pinned);
    returns its python. Re-installs only when the pins or the constraints file change."""
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    wanted = "\n".join(KSERVE_PINS) + "\n" + KSERVE_CONSTRAINTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    base = shutil.which("python3.11")
    if base is None:
        if sys.version_info[:2] != (3, 11):
            raise RuntimeError("python3.11 not found: the KServe baseline venv needs it")
        base = sys.executable
    if not python.exists():
        log.info("creating the KServe venv %s", venv)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    log.info("installing %s into %s", " ".join(KSERVE_PINS), venv)
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-c",
            str(KSERVE_CONSTRAINTS),
            *KSERVE_PINS,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(KSERVE_PINS)} failed:\n{proc.stderr[-4000:]}")
    stamp.write_text(wanted)
    return python


def _venv_versions(python: Path, packages: Sequence[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys;"
        "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    )
    out = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{python}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- servers


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Server:
    name: str
    cmd: list[str]
    log_path: Path
    rest_port: int
    grpc_port: int | None
    model_name: str
    kind: str  # "ours" | "kserve"
    proc: subprocess.Popen | None = None
    stopped: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> RuntimeError:
        return RuntimeError(
            f"{self.name}: {message}\n--- {self.log_path} (tail) ---\n{_tail(self.log_path)}"
        )

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("w")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        # Own session: the server and any processes it spawns form a group we can end.
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        log_file.close()
        log.info("serving: started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.cmd))

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self.rest_port}/v1/models/{self.model_name}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        if self.kind == "kserve":
            return status.get("ready") is True
        return any(v.get("state") == "AVAILABLE" for v in status.get("model_version_status", []))

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        assert self.proc is not None
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise self.fail(f"exited with {self.proc.returncode} before becoming ready")
            if self._ready():
                seconds = time.perf_counter() - started
                log.info("serving: %s ready in %.1fs", self.name, seconds)
                return seconds
            time.sleep(0.25)
        raise self.fail(f"not ready after {timeout_s:.0f}s")

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise self.fail(f"exited with {self.proc.returncode} during the load")

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait; SIGKILL the group past STOP_TIMEOUT_S or for leftover children."""
        if self.proc is None:
            return {}
        started = time.perf_counter()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Children (worker processes) may outlive the main process by a moment.
        leftovers = False
        deadline = time.perf_counter() + 10
        while _group_alive(self.proc.pid):
            if time.perf_counter() > deadline:
                leftovers = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        self.stopped = {
            "exit_code": self.proc.returncode,
            "stop_seconds": round(time.perf_counter() - started, 2),
            "killed_after_timeout": killed,
            "leftover_processes_killed": leftovers,
        }
        if killed or leftovers or self.proc.returncode not in (0, -signal.SIGTERM):
            log.warning("serving: %s did not stop cleanly: %s", self.name, self.stopped)
        else:
            log.info("serving: stopped %s in %.1fs", self.name, self.stopped["stop_seconds"])
        return self.stopped


@contextlib.contextmanager
def _running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def ours_server(
    name: str,
    flags: Sequence[str],
    model_base_path: Path,
    model_name: str,
    logs: Path,
    server_cmd: Sequence[str] = (),
) -> Server:
    grpc_port, rest_port = _free_port(), _free_port()
    # A --model_config_file names the model itself (TF Serving refuses both ways at once).
    by_file = any(f.startswith("--model_config_file=") for f in flags)
    model_flags = (
        []
        if by_file
        else [f"--model_name={model_name}", f"--model_base_path={model_base_path.resolve()}"]
    )
    cmd = [
        *(server_cmd or (sys.executable, "-m", "serving")),
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        *model_flags,
        *flags,
    ]
    return Server(name, cmd, logs / f"{name}.log", rest_port, grpc_port, model_name, "ours")


def kserve_server(
    python: Path, version_dir: Path, model_name: str, logs: Path, workers: int
) -> Server:
    http_port, grpc_port = _free_port(), _free_port()
    cmd = [
        str(python),
        str(BENCH_DIR / "kserve_server.py"),
        f"--model_dir={version_dir.resolve()}",
        f"--model_name={model_name}",
        f"--http_port={http_port}",
        f"--grpc_port={grpc_port}",
        f"--workers={workers}",
    ]
    name = f"kserve-{workers}w"
    return Server(name, cmd, logs / f"{name}.log", http_port, None, model_name, "kserve")


# --------------------------------------------------------------------------- gRPC checks


class GrpcChecker:
    """The long-lived ``bench.loadgen.grpc_check`` subprocess (official PredictionService stub)."""

    def __init__(self, log_path: Path) -> None:
        self._err = log_path.open("w")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen.grpc_check"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            cwd=REPO,
            env=env,
        )
        self.log_path = log_path

    def call(self, port: int, body: Path, calls: int = 3) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"port": port, "body": str(body), "calls": calls}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"grpc_check died:\n{_tail(self.log_path)}")
        answer = json.loads(line)
        if "fatal" in answer:
            raise RuntimeError(f"grpc_check: {answer['fatal']}")
        return answer

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


def _verified_calls(
    checker: GrpcChecker, server: Server, body: Path, instances: int, when: str
) -> dict[str, Any]:
    assert server.grpc_port is not None
    answer = checker.call(server.grpc_port, body)
    if answer["errors"] or not answer["ok"]:
        raise server.fail(f"gRPC Predict {when} the load failed: {answer}")
    sizes = answer["response_bytes"]
    if len(sizes) != 1:
        raise server.fail(f"gRPC Predict responses of varying sizes {sizes} ({when} the load)")
    batch = {name: shape[:1] for name, shape in answer["outputs"].items()}
    if not batch or any(b != [instances] for b in batch.values()):
        raise server.fail(f"gRPC Predict outputs {answer['outputs']}: expected {instances} rows")
    return answer


# --------------------------------------------------------------------------- scenarios


@dataclass
class Payloads:
    grpc: dict[int, Path]
    rest: dict[int, Path]
    info: dict[str, Any]


def _label(run: dict[str, Any]) -> str:
    return (
        f"{run['server']} {run['config']} {run['protocol']} {run['instances']}-instance "
        f"x{run['concurrency']}"
    )


def _log_run(run: dict[str, Any]) -> None:
    lat = run["latency_ms"]
    extra = f", {run['instances_per_s']:.0f} instances/s" if run["instances"] > 1 else ""
    log.info(
        "serving: %s: %.0f req/s%s, p50 %.2f ms, p99 %.2f ms (%d requests)",
        _label(run),
        run["req_per_s"],
        extra,
        lat["p50"],
        lat["p99"],
        run["completed"],
    )


def _grpc_run(
    checker: GrpcChecker,
    server: Server,
    body: Path,
    instances: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    work: Path,
) -> dict[str, Any]:
    before = _verified_calls(checker, server, body, instances, "before")
    expected = before["response_bytes"][0]
    log_file = work / "h2load" / f"{server.name}-{instances}x{concurrency}.tsv"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{server.grpc_port}{h2load.PREDICT_PATH}"
    try:
        result = h2load.run(url, body, concurrency, duration_s, warmup_s, log_file)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise server.fail(f"h2load at {concurrency} in flight: {e}") from e
    server.check_alive()
    # Every response must carry one good message: a gRPC error is HTTP 200 with no message.
    for counters in filter(None, (result["warmup_counters"], result["counters"])):
        if counters["bytes_data"] != counters["succeeded"] * expected:
            missing = counters["succeeded"] - counters["bytes_data"] / expected
            raise server.fail(
                f"h2load received {counters['bytes_data']} DATA bytes for "
                f"{counters['succeeded']} HTTP 200 responses, expected {expected} each: about "
                f"{missing:.0f} calls failed (a gRPC error is HTTP 200 with grpc-status in the "
                "trailers, which h2load does not read)"
            )
    after = _verified_calls(checker, server, body, instances, "after")
    result["grpc_check"] = {
        "calls_ok": before["ok"] + after["ok"],
        "response_bytes": expected,
        "data_bytes_match": True,
    }
    return result


def _rest_run(
    server: Server,
    body: Path,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/{server.model_name}:predict"
    try:
        result = wrk.run(url, body, concurrency, duration_s, warmup_s)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise server.fail(f"wrk at {concurrency} connections: {e}") from e
    server.check_alive()
    return result


def _record(
    runs: list[dict[str, Any]],
    result: dict[str, Any],
    *,
    server: Server,
    config: str,
    protocol: str,
    instances: int,
) -> dict[str, Any]:
    run = {
        "server": server.kind,
        "config": config,
        "protocol": protocol,
        "instances": instances,
        **result,
        "instances_per_s": result["req_per_s"] * instances,
    }
    runs.append(run)
    _log_run(run)
    return run


def _find(runs: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in runs if all(r.get(k) == v for k, v in match.items())]


def _goals(runs: list[dict[str, Any]], in_process: dict[str, Any], rest_levels: Sequence[int]):
    goals: dict[str, Any] = {}
    ratios: list[dict[str, Any]] = []
    seq = _find(runs, server="ours", config="single", protocol="grpc", instances=1, concurrency=1)
    if seq and in_process:
        p50 = seq[0]["latency_ms"]["p50"] / in_process["latency_ms"]["p50"]
        p99 = seq[0]["latency_ms"]["p99"] / in_process["latency_ms"]["p99"]
        ratios += [
            {"name": "gRPC sequential / in-process p50 latency", "value": p50},
            {"name": "gRPC sequential / in-process p99 latency", "value": p99},
        ]
        goals["latency_vs_in_process"] = {
            "what": "ours gRPC p50 (1 connection, 1 stream) / in-process p50",
            "value": p50,
            "target": f"<= {GOAL_LATENCY_RATIO}",
            "passed": p50 <= GOAL_LATENCY_RATIO,
        }
    at32 = [
        r
        for r in _find(runs, server="ours", protocol="grpc", instances=1, concurrency=32)
        if "prediction_log" not in r
    ]
    base = [r for r in at32 if r["config"] == "single"]
    if base and at32:
        best = max(at32, key=lambda r: r["req_per_s"])
        value = best["req_per_s"] / base[0]["req_per_s"]
        ratios.append({"name": f"req/s at 32 in flight: {best['config']} / single", "value": value})
        goals["throughput_at_32"] = {
            "what": "best configuration's gRPC req/s at 32 in flight / unbatched single process",
            "best_config": best["config"],
            "value": value,
            "target": f">= {GOAL_THROUGHPUT_RATIO}",
            "passed": value >= GOAL_THROUGHPUT_RATIO,
        }
    levels = []
    for c in rest_levels:
        ks = _find(runs, server="kserve", protocol="rest", instances=1, concurrency=c)
        ours = _find(runs, server="ours", protocol="rest", instances=1, concurrency=c)
        if not ks or not ours:
            continue
        k = ks[0]
        fair = [r for r in ours if r["latency_ms"]["p99"] <= k["latency_ms"]["p99"]]
        best = max(fair or ours, key=lambda r: r["req_per_s"])
        level = {
            "concurrency": c,
            "ours_config": best["config"],
            "ours_req_per_s": best["req_per_s"],
            "ours_p99_ms": best["latency_ms"]["p99"],
            "kserve_req_per_s": k["req_per_s"],
            "kserve_p99_ms": k["latency_ms"]["p99"],
            "ratio": best["req_per_s"] / k["req_per_s"],
            "passed": bool(fair) and best["req_per_s"] > k["req_per_s"],
        }
        levels.append(level)
        ratios.append(
            {"name": f"REST req/s x{c}: ours ({best['config']}) / KServe", "value": level["ratio"]}
        )
    if levels:
        goals["ahead_of_kserve"] = {
            "what": "ours REST req/s > KServe's at an equal or better p99, every concurrency",
            "levels": levels,
            "value": min(level["ratio"] for level in levels),
            "target": "> 1 at p99 <= KServe's",
            "passed": all(level["passed"] for level in levels),
        }
    return goals, ratios


# --------------------------------------------------------------------------- prediction logging


def logging_model_config(name: str, base_path: Path, prefix: Path, rate: float) -> str:
    """A ModelServerConfig (text format) serving ``name`` with prediction logging at ``rate``."""
    return (
        "model_config_list {\n  config {\n"
        f'    name: "{name}"\n    base_path: "{base_path}"\n    model_platform: "tensorflow"\n'
        "    logging_config {\n"
        f'      log_collector_config {{ type: "file" filename_prefix: "{prefix}" }}\n'
        f"      sampling_config {{ sampling_rate: {rate} }}\n"
        "    }\n  }\n}\n"
    )


def prediction_log_counts(server: Server, model_name: str) -> dict[str, float]:
    """The server's prediction-log counters (records, bytes, dropped, errors) for the model."""
    url = f"http://127.0.0.1:{server.rest_port}{METRICS_PATH}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    counts = {"records": 0.0, "bytes": 0.0, "dropped": 0.0, "errors": 0.0}
    for line in text.splitlines():
        for key in counts:
            metric = f"_prediction_log_{key}_total{{"
            if metric in line and f'model="{model_name}"' in line:
                counts[key] += float(line.rsplit(" ", 1)[1])
    return counts


def _logging_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logging off (the base configuration) and on, at the same load, side by side."""
    logged = [r for r in runs if "prediction_log" in r]
    if not logged:
        return []
    off = _find(
        runs,
        server="ours",
        config=LOGGING_BASE,
        protocol="grpc",
        instances=1,
        concurrency=LOGGING_CONCURRENCY,
    )
    rows = []
    for r in ([off[0]] if off else []) + logged:
        info = r.get("prediction_log", {})
        rows.append(
            {
                "config": r["config"],
                "concurrency": r["concurrency"],
                "sampling_rate": info.get("sampling_rate", 0.0),
                "req_per_s": r["req_per_s"],
                "p50_ms": r["latency_ms"]["p50"],
                "p99_ms": r["latency_ms"]["p99"],
                "records": info.get("records"),
                "dropped": info.get("dropped"),
                "bytes": info.get("bytes"),
                "ratio_vs_off": r["req_per_s"] / off[0]["req_per_s"] if off and info else None,
            }
        )
    return rows


# --------------------------------------------------------------------------- the suite


def run_serving(
    model_base_path: Path,
    work: Path,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    *,
    model_name: str = "crop_demand",
    concurrency: Sequence[int] = (1, 8, 32, 128),
    rest_concurrency: Sequence[int] = (1, 8, 32),
    large_instances: int = 256,
    logging_rates: Sequence[float] = LOGGING_RATES,
    large_concurrency: int = 8,
    batching: dict[str, int | bool] | None = None,
    kserve_workers: int = KSERVE_WORKERS,
    ours: bool = True,
    kserve: bool = True,
    configs: Sequence[str] | None = None,
    server_cmd: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the serving scenarios; return ``{"runs", "in_process", "goals", "ratios", ...}``.

    ``model_base_path``: a TF Serving model base path (numeric version dirs; the newest is
    used, and must hold ``assets.extra/tf_serving_warmup_requests``). ``work``: scratch dir
    (payloads, h2load logs, server logs). ``duration_s`` per measured load, after ``warmup_s``.
    ``ours=False`` / ``kserve=False`` skip a side; ``configs`` picks among
    ``single``, ``batching``, ``2proc+batching``; ``server_cmd`` replaces
    ``python -m serving`` (the flags follow it). Raises on the first failed scenario.
    """
    started = time.perf_counter()
    model_base_path = Path(model_base_path)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    tools = {"h2load": h2load.version(), "wrk": wrk.version()}
    version_dir = model_version_dir(model_base_path)
    batching = dict(DEFAULT_BATCHING if batching is None else batching)
    batching_file = work / "batching_parameters.txt"
    batching_file.write_text(batching_parameters_text(batching))
    batch_flags = [
        "--enable_batching",
        f"--batching_parameters_file={batching_file}",
        f"--grpc_max_threads={BATCHING_GRPC_THREADS}",
    ]
    all_configs = {
        "single": [],
        "batching": batch_flags,
        "2proc+batching": ["--num_server_processes=2", *batch_flags],
    }
    logging_configs: dict[str, float] = {}
    monitoring_file = work / "monitoring_config.txt"
    monitoring_file.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    for rate in logging_rates:
        name = logging_config_name(rate)
        logging_configs[name] = rate
        log_dir = work / "prediction-logs" / name.replace("%", "pct").replace("+", "-")
        shutil.rmtree(log_dir, ignore_errors=True)
        config_file = work / f"model_config-{name.replace('%', 'pct').replace('+', '-')}.txt"
        config_file.write_text(
            logging_model_config(model_name, model_base_path.resolve(), log_dir / model_name, rate)
        )
        all_configs[name] = [
            *all_configs[LOGGING_BASE],
            f"--model_config_file={config_file}",
            f"--monitoring_config_file={monitoring_file}",
        ]
    chosen = list(all_configs) if configs is None else list(configs)
    unknown = set(chosen) - set(all_configs)
    if unknown:
        raise ValueError(f"unknown server configurations {sorted(unknown)}")

    sizes = sorted({1, large_instances})
    info = _json_subprocess(
        [
            sys.executable,
            "-m",
            "bench.loadgen.payloads",
            f"--model-dir={version_dir}",
            f"--out={work / 'payloads'}",
            f"--model-name={model_name}",
            f"--sizes={','.join(map(str, sizes))}",
        ],
        timeout=300,
        what="building the payloads",
    )
    payloads = Payloads(
        grpc={int(n): Path(p["grpc"]) for n, p in info["payloads"].items()},
        rest={int(n): Path(p["rest"]) for n, p in info["payloads"].items()},
        info=info,
    )
    log.info(
        "serving: payloads from %d warm-up rows: %s",
        info["warmup_rows"],
        ", ".join(
            f"{n}: gRPC {p['grpc_bytes']} B, REST {p['rest_bytes']} B"
            for n, p in info["payloads"].items()
        ),
    )

    result: dict[str, Any] = {
        "model": {
            "name": model_name,
            "base_path": str(model_base_path),
            "version_dir": str(version_dir),
            "inputs": len(info["inputs"]),
            "signature": info["signature_name"],
        },
        "tools": tools,
        "settings": {
            "duration_s": duration_s,
            "warmup_s": warmup_s,
            "concurrency": list(concurrency),
            "rest_concurrency": list(rest_concurrency),
            "large_instances": large_instances,
            "large_concurrency": large_concurrency,
            "batching_parameters": batching,
            "batching_grpc_threads": BATCHING_GRPC_THREADS,
            "configs": {name: all_configs[name] for name in chosen} if ours else {},
            "grpc_connections": "min(concurrency, 32) connections x concurrency/connections "
            "streams (h2load -c/-m, 1 thread)",
            "rest_connections": "concurrency keep-alive connections (wrk -c, 1 thread)",
            "payload_bytes": {
                n: {"grpc": p["grpc_bytes"], "rest": p["rest_bytes"]}
                for n, p in info["payloads"].items()
            },
        },
        "runs": [],
        "in_process": {},
        "servers": {},
    }
    runs: list[dict[str, Any]] = result["runs"]

    # (a) in-process, before any server runs
    in_process = _json_subprocess(
        [
            sys.executable,
            "-m",
            "bench.loadgen.inprocess",
            f"--model-dir={version_dir}",
            f"--body={payloads.grpc[1]}",
            f"--seconds={max(duration_s, 2.0):g}",
        ],
        timeout=duration_s + 300,
        what="the in-process measurement",
    )
    result["in_process"] = in_process
    log.info(
        "serving: in-process 1-instance Predict (parse, convert, call): p50 %.2f ms, "
        "p99 %.2f ms (%d iterations; signature call alone p50 %.2f ms)",
        in_process["latency_ms"]["p50"],
        in_process["latency_ms"]["p99"],
        in_process["iterations"],
        in_process["call_only"]["latency_ms"]["p50"],
    )
    if ours:
        checker = GrpcChecker(logs / "grpc_check.log")
        try:
            for config in chosen:
                server = ours_server(
                    config, all_configs[config], model_base_path, model_name, logs, server_cmd
                )
                if config in logging_configs:
                    with _running(server):
                        r = _grpc_run(
                            checker,
                            server,
                            payloads.grpc[1],
                            1,
                            LOGGING_CONCURRENCY,
                            duration_s,
                            warmup_s,
                            work,
                        )
                        run = _record(
                            runs, r, server=server, config=config, protocol="grpc", instances=1
                        )
                        run["prediction_log"] = {
                            "sampling_rate": logging_configs[config],
                            **prediction_log_counts(server, model_name),
                        }
                        log.info("serving: %s prediction log %s", config, run["prediction_log"])
                    result["servers"][config] = {"command": server.cmd, **server.stopped}
                    continue
                with _running(server):
                    for c in concurrency:
                        r = _grpc_run(
                            checker, server, payloads.grpc[1], 1, c, duration_s, warmup_s, work
                        )
                        _record(runs, r, server=server, config=config, protocol="grpc", instances=1)
                    r = _grpc_run(
                        checker,
                        server,
                        payloads.grpc[large_instances],
                        large_instances,
                        large_concurrency,
                        duration_s,
                        warmup_s,
                        work,
                    )
                    _record(
                        runs,
                        r,
                        server=server,
                        config=config,
                        protocol="grpc",
                        instances=large_instances,
                    )
                    for c in rest_concurrency:
                        r = _rest_run(server, payloads.rest[1], c, duration_s, warmup_s)
                        _record(runs, r, server=server, config=config, protocol="rest", instances=1)
                    r = _rest_run(
                        server,
                        payloads.rest[large_instances],
                        large_concurrency,
                        duration_s,
                        warmup_s,
                    )
                    _record(
                        runs,
                        r,
                        server=server,
                        config=config,
                        protocol="rest",
                        instances=large_instances,
                    )
                result["servers"][config] = {"command": server.cmd, **server.stopped}
        finally:
            checker.close()

    if kserve:
        python = ensure_kserve_venv()
        result["kserve"] = {
            "versions": _venv_versions(python, ["kserve", "tensorflow", "uvicorn", "fastapi"]),
            "workers": kserve_workers,
            "configuration": (
                f"kserve.ModelServer(workers={kserve_workers}): one uvicorn REST process per "
                "core (RESTServerMultiProcess, spawned, sharing the socket); synchronous "
                "predict; per-request logging off; v1 protocol (row-format instances)"
            ),
        }
        server = kserve_server(python, version_dir, model_name, logs, kserve_workers)
        config = f"workers={kserve_workers}"
        with _running(server):
            for c in rest_concurrency:
                r = _rest_run(server, payloads.rest[1], c, duration_s, warmup_s)
                _record(runs, r, server=server, config=config, protocol="rest", instances=1)
            r = _rest_run(
                server, payloads.rest[large_instances], large_concurrency, duration_s, warmup_s
            )
            _record(
                runs, r, server=server, config=config, protocol="rest", instances=large_instances
            )
        result["servers"][server.name] = {"command": server.cmd, **server.stopped}

    goals, ratios = _goals(runs, result["in_process"], rest_concurrency)
    result["prediction_logging"] = _logging_rows(runs)
    ratios += [
        {
            "name": f"req/s at {row['concurrency']} in flight: {row['config']} / logging off",
            "value": row["ratio_vs_off"],
        }
        for row in result["prediction_logging"]
        if row.get("ratio_vs_off") is not None
    ]
    result["goals"] = goals
    result["ratios"] = ratios
    for name, goal in goals.items():
        log.info(
            "serving: goal %s: %.2f (target %s): %s",
            name,
            goal["value"],
            goal["target"],
            "PASS" if goal["passed"] else "FAIL",
        )
    result["seconds"] = round(time.perf_counter() - started, 1)
    log.info("serving: done in %.0fs", result["seconds"])
    return result


# --------------------------------------------------------------------------- Markdown


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def serving_table(results: dict[str, Any], *, heading: bool = True) -> str:
    """The serving suite as Markdown (for bench/RESULTS.md); ``heading=False`` leaves out the
    ``## Serving`` line (to put a "Run <time>" line under one's own heading)."""
    runs = results.get("runs", [])
    settings = results.get("settings", {})
    model = results.get("model", {})
    tools = ", ".join(f"{k} {v}" for k, v in results.get("tools", {}).items())
    batching = " ".join(f"{k}={v}" for k, v in settings.get("batching_parameters", {}).items())
    lines = [
        *(["## Serving", ""] if heading else []),
        f"Model `{model.get('name')}` ({model.get('inputs')} inputs, "
        f"`{Path(model.get('version_dir', '')).name}`), {settings.get('duration_s')} s per load "
        f"after {settings.get('warmup_s')} s warm-up; {tools}. Batching: `{batching}`, "
        f"`--grpc_max_threads={settings.get('batching_grpc_threads', 'default')}`.",
        "",
    ]
    goals = results.get("goals", {})
    if goals:
        lines += ["| goal | value | target | result |", "|---|---:|---|---|"]
        for g in goals.values():
            lines.append(
                f"| {g['what']} | {g['value']:.2f} | {g['target']} | "
                f"{'pass' if g['passed'] else '**fail**'} |"
            )
        lines.append("")
    ip = results.get("in_process")
    if ip:
        lines += [
            f"In-process Predict (parse, convert, call; {ip['iterations']} iterations): "
            f"p50 {_ms(ip['latency_ms']['p50'])} ms, p99 {_ms(ip['latency_ms']['p99'])} ms "
            f"(signature call alone p50 {_ms(ip['call_only']['latency_ms']['p50'])} ms).",
            "",
        ]
    grpc1 = [r for r in runs if r["protocol"] == "grpc" and r["instances"] == 1]
    if grpc1:
        levels = sorted({r["concurrency"] for r in grpc1})
        configs = list(dict.fromkeys(r["config"] for r in grpc1))
        lines += [
            "gRPC Predict, 1 instance per request: req/s (p50 / p99 ms) by requests in flight",
            "",
            "| configuration | " + " | ".join(f"{c} in flight" for c in levels) + " |",
            "|---|" + "---:|" * len(levels),
        ]
        for config in configs:
            cells = []
            for c in levels:
                match = _find(grpc1, config=config, concurrency=c)
                cells.append(
                    f"{match[0]['req_per_s']:.0f} ({_ms(match[0]['latency_ms']['p50'])} / "
                    f"{_ms(match[0]['latency_ms']['p99'])})"
                    if match
                    else "—"
                )
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines.append("")
    logging_rows = results.get("prediction_logging", [])
    if logging_rows:
        lines += [
            f"Prediction logging (`logging_config`, TFRecord files) on `{LOGGING_BASE}`, gRPC "
            "Predict, 1 instance per request: records and drops from the server's counters",
            "",
            "| configuration | sampling | in flight | req/s | p50 ms | p99 ms | records | dropped "
            "| MB written | req/s / logging off |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in logging_rows:
            logged = row["records"] is not None
            lines.append(
                f"| {row['config']} | {row['sampling_rate']:.0%} | {row['concurrency']} | "
                f"{row['req_per_s']:.0f} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | "
                f"{row['records']:.0f} | {row['dropped']:.0f} | {row['bytes'] / 1e6:.1f} | "
                f"{row['ratio_vs_off']:.2f} |"
                if logged
                else f"| {row['config']} | off | {row['concurrency']} | {row['req_per_s']:.0f} | "
                f"{_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | — | — | — | 1.00 |"
            )
        lines.append("")
    large = [r for r in runs if r["instances"] > 1]
    if large:
        lines += [
            "Large requests",
            "",
            "| server | configuration | protocol | instances/request | in flight | req/s | "
            "instances/s | p50 ms | p99 ms |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in large:
            lines.append(
                f"| {r['server']} | {r['config']} | {r['protocol']} | {r['instances']} | "
                f"{r['concurrency']} | {r['req_per_s']:.0f} | {r['instances_per_s']:.0f} | "
                f"{_ms(r['latency_ms']['p50'])} | {_ms(r['latency_ms']['p99'])} |"
            )
        lines.append("")
    rest = [r for r in runs if r["protocol"] == "rest" and r["instances"] == 1]
    if rest:
        ks = results.get("kserve", {})
        lines += [
            "REST predict (same JSON, wrk), 1 instance per request"
            + (f"; KServe {ks['versions'].get('kserve')}: {ks['configuration']}" if ks else ""),
            "",
            "| server | configuration | connections | req/s | p50 ms | p99 ms |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in sorted(rest, key=lambda r: (r["concurrency"], r["server"] != "ours")):
            lines.append(
                f"| {r['server']} | {r['config']} | {r['concurrency']} | {r['req_per_s']:.0f} | "
                f"{_ms(r['latency_ms']['p50'])} | {_ms(r['latency_ms']['p99'])} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.serving MODEL_BASE_PATH [--kserve-only]``: a manual run, JSON out."""
    import argparse
    import shlex

    from perucast.logs import setup_logging

    parser = argparse.ArgumentParser(description="serving benchmark (manual run)")
    parser.add_argument("model_base_path", type=Path)
    parser.add_argument("--work", type=Path, default=BENCH_DIR / "_work" / "serving")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--no-ours", action="store_true")
    parser.add_argument("--no-kserve", action="store_true")
    parser.add_argument("--config", action="append", help="server configuration (repeatable)")
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    parser.add_argument("--kserve-workers", type=int, default=KSERVE_WORKERS)
    parser.add_argument("--server-cmd", help="instead of `python -m serving` (shell words)")
    args = parser.parse_args(argv)
    setup_logging()
    result = run_serving(
        args.model_base_path,
        args.work,
        args.duration,
        args.warmup,
        ours=not args.no_ours,
        kserve=not args.no_kserve,
        configs=args.config,
        kserve_workers=args.kserve_workers,
        server_cmd=shlex.split(args.server_cmd or ""),
    )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(serving_table(result))


if __name__ == "__main__":
    main()
