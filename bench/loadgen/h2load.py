"""Unary gRPC load over h2c with nghttp2's ``h2load``.

A unary gRPC call is an HTTP/2 POST to ``/<service>/<method>`` with ``content-type:
application/grpc`` and ``te: trailers`` whose body is one length-prefixed message: h2load sends
the body file (``-d``) on every stream. ``-c`` connections with ``-m`` streams each make
``c * m`` requests in flight; timing-based (``-D``), after a discarded warm-up run. Latencies
come from ``--log-file`` (one row per request: start µs, HTTP status, µs to the end of the
response), req/s from the requests done in the measured run.

Limitation: h2load judges a response by its HTTP status, and a gRPC error is HTTP 200 with a
``grpc-status`` trailer (or a trailers-only response) h2load never reads, so it counts failed
calls as succeeded. The bench checks the DATA bytes h2load received instead: a good response
carries one message of a known size (learnt from real calls, ``grpc_check``), an error none, so
``data bytes == responses * message size`` holds only when every call succeeded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.loadgen.stats import summarize_ms

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def version() -> str:
    exe = shutil.which("h2load")
    if exe is None:
        raise RuntimeError(
            "h2load not found: run `make bench-tools` (Debian package nghttp2-client)"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().removeprefix("h2load ")  # "nghttp2/1.52.0"


def connections_for(concurrency: int, max_connections: int = 32) -> tuple[int, int]:
    """(connections, streams per connection) for ``concurrency`` requests in flight.

    One stream per connection up to ``max_connections``, so that servers spreading
    connections over processes (SO_REUSEPORT) see several; then more streams per connection.
    """
    connections = min(concurrency, max_connections)
    if concurrency % connections:
        raise ValueError(f"concurrency {concurrency} is not a multiple of {connections}")
    return connections, concurrency // connections


def parse_output(text: str) -> dict[str, Any]:
    """The counters of h2load's summary."""

    def grab(pattern: str) -> re.Match[str]:
        m = re.search(pattern, text, re.MULTILINE)
        if m is None:
            raise ValueError(f"h2load output without /{pattern}/:\n{text[-3000:]}")
        return m

    req = grab(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout"
    )
    codes = grab(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
    traffic = grab(r"^traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data")
    finished = grab(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s")
    total, _started, done, ok, failed, errored, timeout = (int(g) for g in req.groups())
    return {
        "requests": total,
        "done": done,
        "succeeded": ok,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
        "status_2xx": int(codes.group(1)),
        "status_non_2xx": sum(int(g) for g in codes.groups()[1:]),
        "bytes_total": int(traffic.group(1)),
        "bytes_headers": int(traffic.group(2)),
        "bytes_data": int(traffic.group(3)),
        "h2load_req_per_s": float(finished.group(3)),
    }


def read_log(path: Path) -> tuple[list[float], int]:
    """Latencies (µs) of the requests with HTTP 200, and the number of other rows."""
    latencies, other = [], 0
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        if fields[1] == "200":
            latencies.append(float(fields[2]))
        else:
            other += 1
    return latencies, other


def _h2load(
    url: str,
    body: Path,
    connections: int,
    streams: int,
    duration_s: float,
    log_file: Path,
    timeout_s: float,
) -> tuple[list[str], dict[str, Any], list[float]]:
    cmd = [
        "h2load",
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-t",
        "1",
        "-D",
        f"{max(1, round(duration_s * 1000))}ms",
        "-d",
        str(body),
        *(arg for header in GRPC_HEADERS for arg in ("-H", header)),
        "--log-file",
        str(log_file),
        url,
    ]
    log_file.unlink(missing_ok=True)  # h2load appends: each run must count only its own rows
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration_s + timeout_s, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    counters = parse_output(proc.stdout)
    latencies, other = read_log(log_file)
    if counters["failed"] or counters["errored"] or counters["timeout"] or other:
        raise RuntimeError(
            f"h2load saw failures: {counters}, {other} non-200 rows in the log ({' '.join(cmd)})"
        )
    if not latencies:
        raise RuntimeError(f"h2load completed no request in {duration_s}s: {counters}")
    if len(latencies) != counters["succeeded"]:
        raise RuntimeError(
            f"h2load's log has {len(latencies)} rows for {counters['succeeded']} requests"
        )
    return cmd, counters, latencies


def run(
    url: str,
    body: Path,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    log_file: Path,
    *,
    max_connections: int = 32,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """A discarded warm-up run of ``warmup_s``, then the measured one.

    Separate runs rather than ``--warm-up-time``: h2load's traffic (DATA bytes) counters
    include the warm-up while its request counters do not, and the DATA-byte check needs both
    over the same requests. Raises when h2load reports failures or non-2xx statuses.
    """
    connections, streams = connections_for(concurrency, max_connections)
    warmup = None
    if warmup_s > 0:
        _, warmup, _ = _h2load(url, body, connections, streams, warmup_s, log_file, timeout_s)
    cmd, counters, latencies = _h2load(
        url, body, connections, streams, duration_s, log_file, timeout_s
    )
    return {
        "tool": "h2load",
        "command": " ".join(cmd),
        "connections": connections,
        "streams_per_connection": streams,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "completed": len(latencies),
        "req_per_s": len(latencies) / duration_s,
        "latency_ms": summarize_ms(latencies),
        "counters": counters,
        "warmup_counters": warmup,
    }
