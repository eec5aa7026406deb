"""Runs a real `perucast-model-server` process for over-the-wire tests.

The server is started exactly as users start it (`python -m serving --flags...`) on free
loopback ports; `wait_ready` polls GetModelStatus with the official stub until the models are
AVAILABLE; `stop` sends SIGTERM and returns the exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_config_text(models: dict[str, Path], extra: dict[str, str] | None = None) -> str:
    """A ModelServerConfig text proto; `extra[name]` is appended inside that model's config."""
    parts = ["model_config_list {"]
    for name, base in models.items():
        parts.append(
            f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
            f"{(extra or {}).get(name, '')} }}"
        )
    parts.append("}")
    return "\n".join(parts) + "\n"


class ServerProcess:
    """A model server subprocess.

    Args:
        args: Flags besides the ports (e.g. --model_config_file=...).
        log_path: Where its stdout/stderr go (read on failure).
        rest: Whether to open the REST port.
    """

    def __init__(self, args: list[str], log_path: Path, rest: bool = True, ready_models=()):
        self.grpc_port = free_port()
        self.rest_port = free_port() if rest else 0
        self.args = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", *args]
        self.log_path = log_path
        self.ready_models = tuple(ready_models)
        self.process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", *self.args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready(self.ready_models, timeout)
        return self

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, models=(), timeout: float = 120.0) -> None:
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            pending = list(models)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"model server exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if not pending:
                        ready = grpc.channel_ready_future(channel)
                        try:
                            ready.result(timeout=1)
                        except grpc.FutureTimeoutError:
                            ready.cancel()  # its polling thread must not outlive the channel
                            raise
                        return
                    request = get_model_status_pb2.GetModelStatusRequest()
                    request.model_spec.name = pending[0]
                    response = stub.GetModelStatus(request, timeout=2)
                    if any(s.state == 30 for s in response.model_version_status):
                        pending.pop(0)
                        continue
                except (grpc.RpcError, grpc.FutureTimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"model server not ready:\n{self.log_tail()}")
                time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code (it must drain and exit by itself)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)
