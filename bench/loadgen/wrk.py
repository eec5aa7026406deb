"""REST load with ``wrk``: POSTs one JSON body (``wrk_post.lua``) over ``-c`` keep-alive
HTTP/1.1 connections (one request in flight each). ``done()`` in the Lua script prints the
totals, the error counts (connect/read/write/timeouts and non-2xx statuses) and the latency
percentiles as JSON. wrk has no warm-up phase: a discarded run of ``warmup_s`` comes first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "wrk_post.lua"


def version() -> str:
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk not found: run `make bench-tools` (Debian package wrk)")
    # wrk has no --version: its usage text starts with the version.
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    first = (proc.stdout + proc.stderr).strip().splitlines()[0]
    return first.split(" Copyright")[0].removeprefix("wrk ")  # "debian/4.1.0-3+b2 [epoll]"


def _wrk(url: str, body: Path, connections: int, seconds: float, timeout_s: float) -> dict:
    cmd = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        f"{timeout_s:g}s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]
    env = {**os.environ, "WRK_BODY_FILE": str(body)}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    result = json.loads(lines[-1].removeprefix("WRK_JSON "))
    result["command"] = " ".join(cmd)
    return result


def run(
    url: str,
    body: Path,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    *,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """A discarded warm-up run, then the measured one; raises on any error."""
    if warmup_s > 0:
        _wrk(url, body, concurrency, warmup_s, timeout_s)
    raw = _wrk(url, body, concurrency, duration_s, timeout_s)
    errors = raw["errors"]
    if any(errors.values()):
        raise RuntimeError(f"wrk saw errors: {errors} ({raw['command']})")
    if not raw["requests"]:
        raise RuntimeError(f"wrk completed no request: {raw}")
    lat = raw["latency_us"]
    seconds = raw["duration_us"] / 1e6
    return {
        "tool": "wrk",
        "command": raw["command"],
        "connections": concurrency,
        "streams_per_connection": 1,
        "concurrency": concurrency,
        "duration_s": seconds,
        "completed": raw["requests"],
        "req_per_s": raw["requests"] / seconds,
        "latency_ms": {
            "min": lat["min"] / 1e3,
            "mean": lat["mean"] / 1e3,
            "p50": lat["percentiles"]["50"] / 1e3,
            "p90": lat["percentiles"]["90"] / 1e3,
            "p99": lat["percentiles"]["99"] / 1e3,
            "max": lat["max"] / 1e3,
        },
        "bytes": raw["bytes"],
    }
