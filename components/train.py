"""Train step: the feature dataset in, a SavedModel version in the model repository out.

Strategies (``TrainConfig.strategy``, ``auto`` picks):

* one process (the default strategy; one GPU if there is one);
* ``MirroredStrategy`` over the local GPUs when there are two or more;
* ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names more than one worker. A TFJob on
  Kubernetes sets ``TF_CONFIG`` for every pod; locally ``--workers N`` starts N worker
  processes on loopback ports with the same ``TF_CONFIG`` a TFJob would give them, watches
  them, and restarts the whole group (up to ``max_restarts`` times) when one dies, as the
  Training Operator does with ``restartPolicy: OnFailure``.

Each worker reads its own shard of the training rows (row ``i`` goes to worker ``i mod N``)
with ``tf.data``; the global batch is split among the workers. Training stops early when the
validation pinball loss stops improving and keeps the best weights. ``BackupAndRestore``
checkpoints every epoch under ``<output>/backup``: a restarted run resumes from the last
completed epoch (the backup is removed when training finishes). The chief (worker 0) writes
TensorBoard summaries, one JSON line per epoch (``epochs.jsonl``) and ``training.json``, and
exports the model; every other worker saves too, into a temporary directory, because saving
runs collectives that would hang the chief otherwise.

Keras 2 (``tf_keras``) is used: Keras 3 ``model.fit`` fails under
``MultiWorkerMirroredStrategy`` in TF 2.21 (keras-team/keras#20585).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field

from models import USE_CASE_NAMES, UseCaseName

log = logging.getLogger("perucast.train")

Strategy = Literal["auto", "default", "mirrored", "multi_worker"]
ATTEMPT_ENV = "PERUCAST_TRAIN_ATTEMPT"
THREADS_ENV = "PERUCAST_TF_THREADS"


class TrainConfig(BaseModel):
    """Configuration of the train step (validated when a pipeline is built)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    features_dir: Path
    model_repository: Path
    output_dir: Path = Field(description="Training artifacts: logs, TensorBoard, backups.")
    model_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]+$", description="Default: the use case's name."
    )
    version: int | None = Field(default=None, ge=1, description="None: the next free version.")
    epochs: int = Field(default=40, ge=1, le=10_000)
    batch_size: int = Field(default=512, ge=8, description="Global batch (all workers).")
    learning_rate: float = Field(default=2e-3, gt=0, lt=1)
    patience: int = Field(default=5, ge=1, description="Epochs without val improvement.")
    hidden_units: tuple[int, ...] | None = Field(default=None, description="None: use case's.")
    dropout: float | None = Field(default=None, ge=0, lt=1)
    seed: int = 0
    workers: int = Field(default=1, ge=1, le=64, description="Local worker processes.")
    strategy: Strategy = "auto"
    max_restarts: int = Field(default=2, ge=0, description="Group restarts after a worker dies.")
    worker_timeout_s: float = Field(default=3600, gt=0, description="Local multi-worker limit.")

    @property
    def name(self) -> str:
        return self.model_name or self.use_case


@dataclass
class TrainResult:
    """What the train step produced."""

    version_dir: Path
    version: int
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    seconds: float
    workers: int
    strategy: str
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_dir": str(self.version_dir),
            "version": self.version,
            "history": self.history,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "strategy": self.strategy,
            "attempts": self.attempts,
        }


class TrainError(RuntimeError):
    """Training could not finish (a worker failed beyond the restarts, or bad input)."""


def choose_strategy(requested: Strategy, tf_config: dict[str, Any] | None, gpus: int) -> str:
    """The strategy to use: ``default``, ``mirrored`` or ``multi_worker``.

    Raises:
        ValueError: when the requested strategy cannot run here (``multi_worker`` without a
            multi-worker ``TF_CONFIG``, ``mirrored`` without two GPUs).
    """
    cluster_workers = 0
    if tf_config:
        cluster = tf_config.get("cluster", {})
        cluster_workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if requested == "auto":
        if cluster_workers > 1:
            return "multi_worker"
        return "mirrored" if gpus > 1 else "default"
    if requested == "multi_worker" and cluster_workers < 1:
        raise ValueError("strategy multi_worker needs TF_CONFIG (set by a TFJob or --workers N)")
    if requested == "mirrored" and gpus < 2:
        raise ValueError(f"strategy mirrored needs at least 2 GPUs, found {gpus}")
    return requested


def _task(tf_config: dict[str, Any] | None) -> tuple[int, int, bool]:
    """(worker index, number of workers, is chief) from TF_CONFIG (a chief task counts too)."""
    if not tf_config:
        return 0, 1, True
    cluster = tf_config.get("cluster", {})
    chiefs = len(cluster.get("chief", []))
    workers = len(cluster.get("worker", []))
    task = tf_config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    position = index if kind == "chief" else chiefs + index
    is_chief = kind == "chief" or (chiefs == 0 and kind == "worker" and index == 0)
    return position, chiefs + workers, is_chief


# --- data -----------------------------------------------------------------------------------


def load_split(
    features_dir: Path, split: str, spec, statistics: dict[str, Any], use_case: str
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Raw input columns, targets ``[N, H]`` and loss weights ``1 / scale`` of one split.

    ``scale`` is the row's scale in the network (``models.network.row_scale``), so the
    weighted loss is the pinball loss in the network's scaled space.
    """
    from models import get_use_case
    from models.network import input_dtypes, row_scale
    from perucast.datasets import read_features

    dtypes = input_dtypes(spec, statistics)
    columns = [spec.time_column, *dtypes, *spec.target_columns]
    frame = read_features(features_dir, spec, columns, [split])
    inputs = {
        name: (
            frame[name].astype(str).to_numpy(dtype=object)
            if dtype == "string"
            else frame[name].to_numpy(dtype=dtype)
        )
        for name, dtype in dtypes.items()
    }
    targets = frame[spec.target_columns].to_numpy(dtype=np.float32)
    network = get_use_case(use_case).network_spec()
    _, scale = row_scale(inputs, spec, network, statistics)
    weights = (1.0 / scale).astype(np.float32)
    return inputs, targets, weights


def make_dataset(
    inputs: dict[str, np.ndarray],
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    global_batch: int,
    shard: tuple[int, int],
    shuffle: bool,
    seed: int,
):
    """An endless ``tf.data`` pipeline of this worker's shard, batched by the global batch.

    The distribution strategy splits each global batch among the replicas; the dataset repeats
    so that every worker runs the same number of steps per epoch (a worker running out of data
    early would leave the others waiting in a collective).
    """
    import tensorflow as tf

    index, count = shard
    # This worker's rows; batches are gathered from whole columns by index (one gather per
    # column per batch) instead of shuffling and batching ~70 column tensors row by row.
    rows = np.arange(index, len(targets), count) if count > 1 else np.arange(len(targets))
    columns = {k: tf.constant(v[rows]) for k, v in inputs.items()}
    y = tf.constant(targets[rows])
    w = tf.constant(weights[rows])

    def gather(idx):
        return (
            {k: tf.gather(v, idx) for k, v in columns.items()},
            tf.gather(y, idx),
            tf.gather(w, idx),
        )

    ds = tf.data.Dataset.range(len(rows))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(global_batch, drop_remainder=False)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Sharded by hand above; the strategy must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return ds.with_options(options)


# --- one worker -----------------------------------------------------------------------------


def _epoch_logger(path: Path | None, attempt: int, epochs: int):
    import tf_keras as keras

    class EpochLog(keras.callbacks.Callback):
        """One log line and one JSON line per finished epoch (chief only writes the file)."""

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            record = {
                "epoch": int(epoch),
                "attempt": attempt,
                "seconds": round(time.perf_counter() - self._started, 3),
                **logs,
            }
            log.info(
                "epoch %d/%d  loss %.4f  val_loss %.4f  (%.1fs)",
                epoch + 1,
                epochs,
                logs.get("loss", float("nan")),
                logs.get("val_loss", float("nan")),
                record["seconds"],
            )
            if path is not None:
                with path.open("a") as f:
                    f.write(json.dumps(record) + "\n")

    return EpochLog()


def run_worker(config: TrainConfig) -> TrainResult | None:
    """Train in this process (one worker of the group that ``TF_CONFIG`` describes).

    Returns:
        The result on the chief; None on the other workers.
    """
    import tensorflow as tf
    import tf_keras as keras

    from models import get_use_case
    from models.network import build_network, input_dtypes, pinball_loss, seasonal_profile
    from perucast.export import code_revision, data_version, export_model

    started = time.perf_counter()
    threads = int(os.environ.get(THREADS_ENV, "0"))
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf_config = json.loads(os.environ["TF_CONFIG"]) if os.environ.get("TF_CONFIG") else None
    gpus = len(tf.config.list_physical_devices("GPU"))
    kind = choose_strategy(config.strategy, tf_config, gpus)
    if kind == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    index, count, is_chief = _task(tf_config if kind == "multi_worker" else None)
    attempt = int(os.environ.get(ATTEMPT_ENV, "1"))
    log.info(
        "worker %d/%d (%s), strategy %s, %d replicas, attempt %d",
        index,
        count,
        "chief" if is_chief else "worker",
        kind,
        strategy.num_replicas_in_sync,
        attempt,
    )
    keras.utils.set_random_seed(config.seed)

    uc = get_use_case(config.use_case)
    features_dir = Path(config.features_dir)
    split_info = json.loads((features_dir / "split.json").read_text())
    statistics = json.loads((features_dir / "statistics.json").read_text())
    spec = uc.feature_spec(int(split_info["horizon"]))
    dtypes = input_dtypes(spec, statistics)
    train = load_split(features_dir, "train", spec, statistics, config.use_case)
    val = load_split(features_dir, "validation", spec, statistics, config.use_case)
    rows, val_rows = len(train[1]), len(val[1])
    if rows == 0 or val_rows == 0:
        raise TrainError(f"empty split in {features_dir}: {rows} train, {val_rows} validation rows")
    batch = min(config.batch_size, rows)
    steps = -(-rows // batch)
    val_steps = -(-val_rows // batch)
    shard = (index, count)
    train_ds = make_dataset(*train, global_batch=batch, shard=shard, shuffle=True, seed=config.seed)
    val_ds = make_dataset(*val, global_batch=batch, shard=shard, shuffle=False, seed=config.seed)

    # Computed from this worker's full read of the training split: the same on every worker.
    profile = seasonal_profile(train[0], spec, uc.network_spec(), statistics)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"perucast-worker{index}-"))

    def network():
        return build_network(
            spec,
            uc.network_spec(),
            statistics,
            hidden_units=config.hidden_units,
            dropout=config.dropout,
            seed=config.seed,
            profile=profile,
        )

    with strategy.scope():
        model = network()
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=pinball_loss(),
            weighted_metrics=[],
        )
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir=str(output_dir / "backup")),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.TensorBoard(
            log_dir=str(output_dir / "tensorboard" if is_chief else scratch / "tensorboard"),
            update_freq="epoch",
        ),
        _epoch_logger(output_dir / "epochs.jsonl" if is_chief else None, attempt, config.epochs),
    ]
    history = model.fit(
        train_ds,
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=val_ds,
        validation_steps=val_steps,
        callbacks=callbacks,
        verbose=0,
    ).history
    seconds = time.perf_counter() - started
    hist = {k: [float(v) for v in vs] for k, vs in history.items()}
    val_loss = hist.get("val_loss", [])
    best_epoch = int(np.argmin(val_loss)) if val_loss else -1
    metadata = {
        "use_case": config.use_case,
        "metrics": {
            "best_val_pinball": float(min(val_loss)) if val_loss else None,
            "final_train_pinball": hist["loss"][-1] if hist.get("loss") else None,
        },
        "parameters": json.loads(config.model_dump_json()),
        "training": {
            "strategy": kind,
            "workers": count,
            "replicas": strategy.num_replicas_in_sync,
            "epochs_run": len(hist.get("loss", [])),
            "best_epoch": best_epoch,
            "train_rows": rows,
            "validation_rows": val_rows,
            "seconds": round(seconds, 3),
            "attempt": attempt,
        },
        "data_version": data_version(features_dir),
        "code_revision": code_revision(),
        "tensorflow": tf.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    shutil.rmtree(scratch, ignore_errors=True)
    if not is_chief:
        return None
    # Export a plain copy built outside the strategy: saving the distributed model would run
    # collectives (every worker would have to save, and that takes tens of seconds on CPU);
    # reading the mirrored weights does not.
    plain = network()
    plain.set_weights(model.get_weights())
    version_dir = export_model(
        plain,
        spec,
        dtypes,
        config.model_repository,
        config.name,
        metadata,
        version=config.version,
        warmup_examples={name: values[:3] for name, values in val[0].items()},
    )
    result = TrainResult(
        version_dir=version_dir,
        version=int(version_dir.name),
        history=hist,
        epochs_run=len(hist.get("loss", [])),
        best_epoch=best_epoch,
        seconds=seconds,
        workers=count,
        strategy=kind,
        attempts=attempt,
    )
    from perucast.io import write_json_atomic

    write_json_atomic(output_dir / "training.json", result.to_dict())
    log.info("exported %s (best epoch %d, %.1fs)", version_dir, best_epoch + 1, seconds)
    return result


# --- the local multi-worker launcher --------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def launch_local_workers(config: TrainConfig) -> TrainResult:
    """Run ``config.workers`` worker processes on loopback under MultiWorkerMirroredStrategy.

    Each worker gets the ``TF_CONFIG`` a TFJob would set. When a worker exits with an error
    (or is killed), the others are stopped and the whole group starts again on fresh ports,
    up to ``config.max_restarts`` times; ``BackupAndRestore`` makes the new attempt resume
    from the last completed epoch.

    Raises:
        TrainError: when a worker still fails after the restarts, or the group times out.
    """
    output_dir = Path(config.output_dir)
    logs = output_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / "train_config.json"
    config_path.write_text(config.model_dump_json(indent=2))
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    started = time.perf_counter()
    for attempt in range(1, config.max_restarts + 2):
        ports = _free_ports(config.workers)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        processes = []
        for i in range(config.workers):
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
                ATTEMPT_ENV: str(attempt),
                THREADS_ENV: str(threads),
            }
            with (logs / f"worker-{i}.log").open("a") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "components.train", "worker", str(config_path)],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        log.info(
            "attempt %d: %d workers on %s (logs in %s)", attempt, config.workers, cluster, logs
        )
        failed = _watch(processes, output_dir, started + config.worker_timeout_s)
        if failed is None:
            result = json.loads((output_dir / "training.json").read_text())
            result["seconds"] = time.perf_counter() - started
            result["attempts"] = attempt
            return TrainResult(**{**result, "version_dir": Path(result["version_dir"])})
        index, code = failed
        log.warning(
            "attempt %d: worker %d exited with %s; stopping the group\n%s",
            attempt,
            index,
            code,
            _tail(logs / f"worker-{index}.log"),
        )
        _stop(processes)
        if code == "timeout":
            raise TrainError(f"training did not finish within {config.worker_timeout_s:.0f}s")
    raise TrainError(
        f"worker {index} failed with exit code {code} after {config.max_restarts} restarts; "
        f"see {logs / f'worker-{index}.log'}:\n{_tail(logs / f'worker-{index}.log')}"
    )


def _watch(
    processes: list[subprocess.Popen], output_dir: Path, deadline: float
) -> tuple[int, int | str] | None:
    """Wait for the group: None when all exited 0, else (worker, exit code or 'timeout')."""
    epochs = output_dir / "epochs.jsonl"
    seen = len(epochs.read_text().splitlines()) if epochs.exists() else 0
    while True:
        codes = [p.poll() for p in processes]
        for i, code in enumerate(codes):
            if code not in (None, 0):
                return i, code
        if all(code == 0 for code in codes):
            return None
        if time.perf_counter() > deadline:
            _stop(processes)
            return 0, "timeout"
        if epochs.exists():
            lines = epochs.read_text().splitlines()
            for line in lines[seen:]:
                rec = json.loads(line)
                log.info(
                    "epoch %d done: loss %.4f val_loss %.4f",
                    rec["epoch"] + 1,
                    rec.get("loss", float("nan")),
                    rec.get("val_loss", float("nan")),
                )
            seen = len(lines)
        time.sleep(0.2)


def train(config: TrainConfig) -> TrainResult:
    """Run the train step: local worker processes when ``workers > 1``, else in this process.

    Inside a TFJob pod (``TF_CONFIG`` set) each pod runs ``run_worker`` itself.
    """
    if config.workers > 1 and not os.environ.get("TF_CONFIG"):
        return launch_local_workers(config)
    result = run_worker(config)
    if result is None:
        raise TrainError("this process is not the chief; it exported nothing")
    return result


# --- CLI --------------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command("run")
def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    features_dir: Annotated[Path, typer.Option("--features", help="Preprocessed features.")],
    model_repository: Annotated[
        Path, typer.Option("--model-repository", help="Root of <model>/<version>/ directories.")
    ],
    output_dir: Annotated[Path, typer.Option("--output", help="Logs, TensorBoard, backups.")],
    model_name: Annotated[str | None, typer.Option(help="Default: the use case.")] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes (MWMS).")] = 1,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 512,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = 2e-3,
    patience: Annotated[int, typer.Option(help="Early-stopping patience (epochs).")] = 5,
    strategy: Annotated[str, typer.Option(help="auto, default, mirrored, multi_worker.")] = "auto",
    max_restarts: Annotated[int, typer.Option(help="Restarts after a worker dies.")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    version: Annotated[int | None, typer.Option(help="Version number (default: next).")] = None,
) -> None:
    """Train a use case's forecaster and export it to the model repository."""
    from perucast.exitcodes import ExitCode
    from perucast.logs import setup_logging

    setup_logging()
    try:
        config = TrainConfig(
            use_case=use_case,
            features_dir=features_dir,
            model_repository=model_repository,
            output_dir=output_dir,
            model_name=model_name,
            workers=workers,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            patience=patience,
            strategy=strategy,
            max_restarts=max_restarts,
            seed=seed,
            version=version,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    if not (features_dir / "split.json").exists():
        typer.echo(f"error: {features_dir} is not a feature dataset (no split.json)", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND)
    try:
        if os.environ.get("TF_CONFIG"):
            # A TFJob pod: every replica runs this same command; only the chief exports.
            result = run_worker(config)
            if result is None:
                typer.echo(f"{use_case}: worker finished (the chief exports the model)")
                return
        else:
            result = train(config)
    except (TrainError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{use_case}: exported version {result.version} to {result.version_dir} "
        f"({result.epochs_run} epochs, best {result.best_epoch + 1}, {result.workers} worker(s), "
        f"{result.seconds:.1f}s)"
    )


@app.command("worker", hidden=True)
def worker_cli(config_path: Path) -> None:
    """One worker of a local multi-worker group (started by ``run --workers N``)."""
    from perucast.logs import setup_logging

    setup_logging()
    config = TrainConfig.model_validate_json(config_path.read_text())
    run_worker(config)


if __name__ == "__main__":
    app()
