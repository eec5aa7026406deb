"""Start, watch and stop a `perucast-model-server` process from Python.

Used where a step needs a real server for a while: the push step's infra-validation (a
throw-away server on the candidate), the demo (a server the pipelines deploy to), and the tests.
The server is started exactly as people start it (``python -m serving --flags``); readiness is
read with the official ModelService stub (GetModelStatus), never from log lines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["ModelServer", "ServerStartError", "free_port", "model_state"]

AVAILABLE = 30  # ModelVersionStatus.State.AVAILABLE
ROOT = Path(__file__).resolve().parents[1]


class ServerStartError(RuntimeError):
    """The server exited or did not get its models AVAILABLE in time (the log tail says why)."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_state(target: str, name: str, timeout: float = 2.0, version_label: str | None = None):
    """GetModelStatus of ``name`` (or of one label) at ``target``: {version: (state, error)}.

    Raises:
        grpc.RpcError: The server is unreachable or answers with an error (NOT_FOUND, ...).
    """
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version_label:
        request.model_spec.version_label = version_label
    with grpc.insecure_channel(target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=timeout
        )
    return {s.version: (s.state, s.status.error_message) for s in response.model_version_status}


class ModelServer:
    """A `perucast-model-server` subprocess on free loopback ports.

    Args:
        flags: Server flags besides the ports (``--model_config_file=...`` and the like).
        log_path: Where the server's stdout and stderr go (its tail is shown on failure).
        rest: Whether to open the REST port too.
        port: gRPC port; 0 picks a free one.
        env: Extra environment variables.
    """

    def __init__(
        self,
        flags: Sequence[str],
        log_path: Path,
        rest: bool = False,
        port: int = 0,
        env: dict[str, str] | None = None,
    ):
        self.grpc_port = port or free_port()
        self.rest_port = free_port() if rest else 0
        self.flags = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", *flags]
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def target(self) -> str:
        """The gRPC address clients use."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self, models: Iterable[str] = (), timeout: float = 120.0) -> ModelServer:
        """Starts the process and waits until each of ``models`` has an AVAILABLE version."""
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **self.env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", *self.flags],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_ready(models, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _check_alive(self) -> None:
        if self.process is None:
            raise ServerStartError("model server was not started")
        if self.process.poll() is not None:
            raise ServerStartError(
                f"model server exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def wait_ready(self, models: Iterable[str] = (), timeout: float = 120.0) -> None:
        """Waits for the gRPC port, then for an AVAILABLE version of each model.

        Raises:
            ServerStartError: The process exited, or ``timeout`` passed (the message carries the
                last GetModelStatus answer and the log tail).
        """
        import grpc

        deadline = time.monotonic() + timeout
        pending = list(models)
        last = "no answer yet"
        with grpc.insecure_channel(self.target) as channel:
            while True:
                self._check_alive()
                ready = grpc.channel_ready_future(channel)
                try:
                    ready.result(timeout=1)
                    break
                except grpc.FutureTimeoutError:
                    ready.cancel()  # its polling thread must not outlive the channel
                if time.monotonic() > deadline:
                    raise ServerStartError(f"model server port not open:\n{self.log_tail()}")
        while pending:
            self._check_alive()
            try:
                states = model_state(self.target, pending[0])
                last = repr(states)
                if any(state == AVAILABLE for state, _ in states.values()):
                    pending.pop(0)
                    continue
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"model {pending[0]!r} not AVAILABLE after {timeout:.0f}s ({last}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (the server drains and exits), SIGKILL after ``timeout``; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode

    def __enter__(self) -> ModelServer:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
