"""Runs a real `perucast-model-server` process for over-the-wire tests.

The server is started exactly as users start it (`python -m serving --flags...`) on free
loopback ports by the library's `serving.process.ModelServer`; `wait_ready` polls GetModelStatus
with the official stub until the models are AVAILABLE; `stop` sends SIGTERM and returns the
exit code.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from serving.process import ROOT, ModelServer, free_port

__all__ = ["ROOT", "ServerProcess", "free_port", "model_config_text", "wait_for"]


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


class ServerProcess(ModelServer):
    """`serving.process.ModelServer` as the tests use it: REST on by default, the models to
    wait for given up front, and a stop that fails the test when the server does not drain.

    Args:
        args: Flags besides the ports (e.g. --model_config_file=...).
        log_path: Where its stdout/stderr go (read on failure).
        rest: Whether to open the REST port.
        ready_models: Models `start` waits for until each has an AVAILABLE version.
    """

    def __init__(self, args: list[str], log_path: Path, rest: bool = True, ready_models=()):
        super().__init__(args, log_path, rest=rest)
        self.args = self.flags
        self.ready_models = tuple(ready_models)

    def start(self, timeout: float = 120.0) -> ServerProcess:
        super().start(self.ready_models, timeout)
        return self

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code: the server must drain and exit by itself in time."""
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
        return super().stop()


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
