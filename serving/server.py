"""`perucast-model-server`: start-up, the server processes, config polling and graceful stop.

One server process runs one asyncio event loop with the gRPC server (grpc.aio) and the REST
server (aiohttp) on it; model runs happen on worker threads or batch threads, where TensorFlow
releases the GIL. Python still runs request decoding and encoding on one core per process, so
`--num_server_processes N` starts N such processes that share the gRPC and REST ports with
SO_REUSEPORT (the kernel spreads connections over them); a supervisor process forwards SIGTERM
and reports the first failure. Each process loads the models itself and polls the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from serving import config as server_config
from serving import prediction_log
from serving.metrics import create_metrics, setup_server_logging

if TYPE_CHECKING:  # serving.manager imports TensorFlow: not before the flags are checked
    from serving.manager import ManagerOptions, ModelManager

log = logging.getLogger("serving")

WORKER_ENV = "PERUCAST_SERVER_WORKER"
DRAIN_SECONDS = 30.0  # in-flight requests get this long after SIGTERM before they are cut
DEFAULT_REQUEST_THREADS = 128


@dataclass
class RunningServer:
    """Handles of a started server (used by `serve` and by in-process tests)."""

    grpc_server: object
    rest_runner: object | None
    manager: ModelManager
    core: object
    grpc_port: int
    rest_port: int
    prediction_logger: object | None = None

    async def stop(self, grace: float = DRAIN_SECONDS) -> None:
        """Stop accepting, let requests in flight finish (up to `grace` s), unload models."""
        loop = asyncio.get_running_loop()
        grpc_stopped = self.grpc_server.stop(grace)  # stops accepting now; an Event when done
        stops = [loop.run_in_executor(None, grpc_stopped.wait)]
        if self.rest_runner is not None:
            stops.append(self.rest_runner.cleanup())
        await asyncio.gather(*stops)
        if self.prediction_logger is not None:  # requests have drained: flush and close
            await loop.run_in_executor(None, self.prediction_logger.close)
        await asyncio.get_running_loop().run_in_executor(None, self.manager.stop)
        self.core.executor.shutdown(wait=False)


def manager_options(flags) -> ManagerOptions:
    from serving.manager import ManagerOptions

    return ManagerOptions(
        file_system_poll_wait_seconds=flags.file_system_poll_wait_seconds,
        max_num_load_retries=flags.max_num_load_retries,
        load_retry_interval_seconds=flags.load_retry_interval_micros / 1e6,
        enable_model_warmup=flags.enable_model_warmup,
        num_request_iterations_for_warmup=flags.warmup_request_iterations,
        allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
        saved_model_tags=frozenset(flags.saved_model_tag_set),
    )


def configure_tensorflow(flags) -> None:
    """Thread pools from the flags (0 = TensorFlow's choice), before TF starts any op."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # already initialised (in-process tests)
        tf.config.threading.set_intra_op_parallelism_threads(flags.tensorflow_intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(flags.tensorflow_inter_op_parallelism)


async def start_server(flags, model_config) -> RunningServer:
    """Loads the models, then starts gRPC and REST as configured by `flags`."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import HealthServicer

    from serving.manager import ModelManager
    from serving.prediction_log import PredictionLogger
    from serving.service import ServingCore, add_services

    loop = asyncio.get_running_loop()
    metrics = create_metrics()
    prediction_logger = PredictionLogger(metrics, flags.saved_model_tag_set)
    manager = ModelManager(
        manager_options(flags), on_event=metrics.model_event, on_config=prediction_logger.update
    )
    await loop.run_in_executor(None, manager.reload_config, model_config)
    manager.start_polling()

    processes = flags.num_server_processes
    # A request waiting for its batch holds a thread: with fewer threads than requests in
    # flight, batches would stay small. Waiting threads cost memory, not CPU.
    threads = flags.grpc_max_threads or max(DEFAULT_REQUEST_THREADS, 4 * (os.cpu_count() or 1))
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rest-request")
    core = ServingCore(
        manager,
        server_config.batching_options(flags),
        metrics,
        executor,
        reload_allowed=processes <= 1,
        prediction_logger=prediction_logger,
    )

    options = list(server_config.grpc_server_options(flags))
    # Several processes share the port on purpose; one process must fail on a busy port.
    options.append(("grpc.so_reuseport", 1 if processes > 1 else 0))
    # grpc's thread-pool server, not grpc.aio: 2.5x the requests per CPU second here
    # (serving/README.md, "Performance").
    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc-request"),
        options=options,
    )
    add_services(server, core)
    if flags.enable_grpc_healthcheck_service:
        health = HealthServicer()
        health.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)

    ssl = server_config.ssl_config(flags)
    address = f"0.0.0.0:{flags.port}"
    if ssl is not None:
        grpc_port = server.add_secure_port(address, server_config.server_credentials(ssl))
    else:
        grpc_port = server.add_insecure_port(address)
    if flags.grpc_socket_path:  # the same credentials as the TCP port, as in TF Serving
        socket_address = f"unix:{flags.grpc_socket_path}"
        if ssl is not None:
            server.add_secure_port(socket_address, server_config.server_credentials(ssl))
        else:
            server.add_insecure_port(socket_address)
    server.start()
    log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", grpc_port)

    runner, rest_port = None, 0
    if flags.rest_api_port:
        from aiohttp import web

        from serving.rest import RestApi

        monitoring = server_config.monitoring_config(flags)
        metrics_path = (
            monitoring.prometheus_config.path if monitoring.prometheus_config.enable else None
        )
        api = RestApi(core, flags.rest_api_timeout_in_ms, metrics_path)
        runner = web.AppRunner(api.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner, "0.0.0.0", flags.rest_api_port, reuse_port=processes > 1, backlog=1024
        )
        await site.start()
        rest_port = flags.rest_api_port
        log.info("Exporting HTTP/REST API at:localhost:%d ...", rest_port)
    return RunningServer(server, runner, manager, core, grpc_port, rest_port, prediction_logger)


async def _poll_config_file(flags, running: RunningServer, stop: asyncio.Event) -> None:
    """Re-reads --model_config_file every poll interval and reloads it.

    As TF Serving's Server::PollFilesystemAndReloadConfig: every poll reloads the file's config
    (a config set by HandleReloadConfigRequest lasts until the next poll), and a file that does
    not parse, or a reload that fails, is logged while the running config keeps serving.
    """
    from serving.errors import ServingError

    interval = flags.model_config_file_poll_wait_seconds
    path = Path(flags.model_config_file)
    loop = asyncio.get_running_loop()
    last = path.read_bytes() if path.is_file() else b""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
            return
        try:
            current = path.read_bytes()
            new_config = server_config.model_server_config(flags)
        except (OSError, server_config.ConfigError) as exc:
            log.error("Failed to read ModelServerConfig file: %s", exc)
            continue
        try:
            await loop.run_in_executor(None, running.manager.reload_config, new_config)
        except ServingError as exc:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc.message)
            continue
        except Exception:  # the poller must survive whatever a reload raises
            log.exception("PollFilesystemAndReloadConfig failed to ReloadConfig")
            continue
        if current != last:
            log.info("reloaded the model config from %s", path)
        last = current


async def serve(flags, model_config) -> int:
    """Runs one server process until SIGTERM/SIGINT; drains and returns 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    from serving.errors import ServingError

    try:
        running = await start_server(flags, model_config)
    except ServingError as exc:  # e.g. a model that did not become available
        log.error("Failed to start server. Error: %s: %s", exc.code.name, exc.message)
        return 1
    pollers = []
    if flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
        pollers.append(asyncio.create_task(_poll_config_file(flags, running, stop)))
    await stop.wait()
    log.info("received a stop signal: draining requests in flight")
    started = time.perf_counter()
    await running.stop(DRAIN_SECONDS)
    for task in pollers:
        task.cancel()
    log.info("stopped after %.2f s", time.perf_counter() - started)
    return 0


def _supervise(argv: list[str], processes: int) -> int:
    """Starts `processes` server processes on the same ports and relays signals to them."""
    metrics_dir = tempfile.mkdtemp(prefix="perucast-metrics-")
    children: list[subprocess.Popen] = []
    stopping = []

    def forward(signum, _frame):
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    # Handlers first: a SIGTERM during start-up must reach the workers, not orphan them.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(processes):
        if stopping:
            break
        env = {**os.environ, WORKER_ENV: str(index), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        children.append(subprocess.Popen([sys.executable, "-m", "serving", *argv], env=env))
    log.info("started %d server processes: %s", processes, [c.pid for c in children])
    code = 0
    while children:
        for child in list(children):
            rc = child.poll()
            if rc is None:
                continue
            children.remove(child)
            if rc != 0 and code == 0:
                code = rc
                log.error("server process %d exited with %d: stopping the others", child.pid, rc)
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    with contextlib.suppress(OSError):
        for leftover in Path(metrics_dir).iterdir():
            leftover.unlink()
        Path(metrics_dir).rmdir()
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of `perucast-model-server` and `python -m serving`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = server_config.parse_flags(argv)
    setup_server_logging(flags.log_format)
    try:
        server_config.check_flags(flags)
        model_config = server_config.model_server_config(flags)
        prediction_log.validate(model_config, f"--model_config_file={flags.model_config_file}")
        server_config.batching_options(flags)
        server_config.monitoring_config(flags)
        ssl = server_config.ssl_config(flags)
        if ssl is not None:
            server_config.server_credentials(ssl)
    except server_config.ConfigError as exc:
        log.error("%s", exc)  # the log goes to stderr, in the chosen --log_format
        return 1
    if flags.num_server_processes > 1 and WORKER_ENV not in os.environ:
        return _supervise(argv, flags.num_server_processes)
    configure_tensorflow(flags)
    return asyncio.run(serve(flags, model_config))
