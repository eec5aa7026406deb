"""Server-side dynamic batching, like TF Serving's BatchingSession over a BasicBatchScheduler.

Request handlers submit *tasks* (a dict of numpy arrays whose dim 0 is the batch); batch threads
merge queued tasks into one batch, run the model once, and hand every task its rows back.

Scheduling follows TensorFlow's ``SharedBatchScheduler`` queue (``shared_batch_scheduler.h``):

* Tasks join the *open* batch until the next one would push it past the execution batch size;
  then that batch is closed and a new open batch started.
* Batch threads *pull* work: an idle thread takes the oldest closed batch, or closes the open
  batch once it is full, ``batch_timeout_micros`` have passed since its first task arrived, or
  the batcher is closing. A timeout of 0 therefore means "take whatever is there now". While all
  threads are busy, the open batch keeps filling (up to its size limit) past the timeout.
* At most ``max_enqueued_batches`` batches (closed ones plus the open one; batches already being
  processed do not count) may wait; a task that would need another one is rejected.
* Tasks are grouped by their input signature (the set of input names), one queue each, all
  served round-robin by the same threads, like TF Serving's per-signature schedulers.

Merging follows ``batching_session.cc``: inputs are concatenated along dim 0, padded up to the
smallest ``allowed_batch_sizes`` entry by repeating the first row of the last task, and every
output is sliced back per task, padding dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import grpc
import numpy as np

from serving.errors import ServingError, invalid_argument, unavailable

__all__ = [
    "Batcher",
    "BatchingOptionsLike",
    "round_to_allowed_batch_size",
]

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
RunFn = Callable[[Tensors], Mapping[str, np.ndarray]]
OnBatch = Callable[[int, int, float], None]
# Called exactly once per task, from a batch thread: (outputs, None) or (None, error).
_DoneFn = Callable[[Tensors | None, BaseException | None], None]

_QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue"
_MAX_PADDABLE_RANK = 6


class BatchingOptionsLike(Protocol):
    """The batching parameters `Batcher` reads (``serving.config.BatchingOptions`` fits).

    Meanings as in TF Serving's ``BatchingParameters``; ``max_execution_batch_size <= 0`` means
    "same as max_batch_size" and is only used with ``enable_large_batch_splitting``.
    """

    @property
    def max_batch_size(self) -> int: ...
    @property
    def batch_timeout_micros(self) -> int: ...
    @property
    def max_enqueued_batches(self) -> int: ...
    @property
    def num_batch_threads(self) -> int: ...
    @property
    def allowed_batch_sizes(self) -> Sequence[int]: ...
    @property
    def pad_variable_length_inputs(self) -> bool: ...
    @property
    def enable_large_batch_splitting(self) -> bool: ...
    @property
    def max_execution_batch_size(self) -> int: ...


def round_to_allowed_batch_size(allowed_batch_sizes: Sequence[int], batch_size: int) -> int:
    """Returns the smallest allowed batch size >= ``batch_size`` (``batch_size`` if none is)."""
    for allowed in allowed_batch_sizes:
        if allowed >= batch_size:
            return allowed
    return batch_size


def _internal(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INTERNAL, message)


def _failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def _task_size(inputs: Mapping[str, np.ndarray]) -> int:
    """Validates a task's inputs and returns their common 0th-dimension size (TF's wording)."""
    if not inputs:
        raise invalid_argument("Batching Run() must have at least one input tensor")
    size: int | None = None
    for array in inputs.values():
        if np.ndim(array) == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        if size is None:
            size = array.shape[0]
        elif array.shape[0] != size:
            raise invalid_argument(
                "Batching Run() input tensors must have equal 0th-dimension size"
            )
    assert size is not None
    return size


class _Task:
    """One unit of queued work: a caller's request, or one piece of a split request."""

    __slots__ = ("deadline", "done", "enqueue_time", "inputs", "size")

    def __init__(
        self,
        inputs: Tensors,
        size: int,
        enqueue_time: float,
        deadline: float | None,
        done: _DoneFn,
    ):
        self.inputs = inputs
        self.size = size
        self.enqueue_time = enqueue_time
        self.deadline = deadline
        self.done = done


class _Batch:
    __slots__ = ("size", "start", "tasks")

    def __init__(self) -> None:
        self.tasks: list[_Task] = []
        self.size = 0
        self.start = 0.0  # monotonic time its first task was added


class _Queue:
    """The batches of one input signature; the last one is open, the others closed."""

    __slots__ = ("batches", "key")

    def __init__(self, key: tuple[str, ...]):
        self.key = key
        self.batches: deque[_Batch] = deque([_Batch()])

    @property
    def open(self) -> _Batch:
        return self.batches[-1]

    def num_tasks(self) -> int:
        return sum(len(batch.tasks) for batch in self.batches)


class _SplitJoin:
    """Reassembles the outputs of a split task; reports the first error of any piece."""

    def __init__(self, num_pieces: int, done: _DoneFn):
        self._pieces: list[Tensors | None] = [None] * num_pieces
        self._remaining = num_pieces
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = done

    def piece_done(self, index: int) -> _DoneFn:
        def on_piece(result: Tensors | None, error: BaseException | None) -> None:
            with self._lock:
                if error is not None:
                    if self._error is None:
                        self._error = error
                else:
                    self._pieces[index] = result
                self._remaining -= 1
                last = self._remaining == 0
            if last:
                self._finish()

        return on_piece

    def _finish(self) -> None:
        if self._error is not None:
            self._done(None, self._error)
            return
        pieces = [piece for piece in self._pieces if piece is not None]
        try:
            # This copy is inherent to splitting: the pieces came from different batches.
            outputs = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
        except Exception as exc:  # e.g. pieces whose outputs have different trailing shapes
            self._done(None, _internal(f"Tensor concat operation failed: {exc}"))
            return
        self._done(outputs, None)


class Batcher:
    """Merges concurrent model calls into batches, like TF Serving's BatchingSession.

    Args:
        run: The blocking model call. Every input and output is a numpy array whose dim 0 is
            the batch; it is called from the batch threads, one call per batch.
        options: The batching parameters (any object shaped like `BatchingOptionsLike`).
        name: Names the batch threads (``"<name>_batch_<i>"``) and log lines.
        on_batch: Optional metrics hook, called on a batch thread right before each model call
            with ``(size, padded_size, queue_delay_s)``; the delay is that of the batch's oldest
            task. Its exceptions are logged and ignored.

    Raises:
        ServingError: INVALID_ARGUMENT for inconsistent options (TF Serving's checks).
    """

    def __init__(
        self,
        run: RunFn,
        options: BatchingOptionsLike,
        name: str = "batcher",
        *,
        on_batch: OnBatch | None = None,
    ):
        self._run = run
        self._name = name
        self._on_batch = on_batch
        self._max_batch_size = int(options.max_batch_size)
        self._timeout_s = int(options.batch_timeout_micros) / 1e6
        self._splitting = bool(options.enable_large_batch_splitting)
        self._pad_variable = bool(options.pad_variable_length_inputs)
        self._allowed = tuple(int(size) for size in options.allowed_batch_sizes)
        exec_size = int(options.max_execution_batch_size or 0)
        # TF Serving uses max_execution_batch_size only when splitting, else max_batch_size.
        self._exec_size = exec_size if self._splitting and exec_size > 0 else self._max_batch_size
        max_enqueued = int(options.max_enqueued_batches)
        if max_enqueued == 0 and not self._splitting:
            max_enqueued = 1  # TF rewrites 0 to 1 here, for old low-QPS configs
        self._max_enqueued = max_enqueued
        num_threads = int(options.num_batch_threads)
        self._validate(num_threads, int(options.batch_timeout_micros))

        self._cv = threading.Condition()
        self._queues: dict[tuple[str, ...], _Queue] = {}
        self._queue_order: list[_Queue] = []  # round-robin order, as in SharedBatchScheduler
        self._next_queue = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._thread_main, name=f"{name}_batch_{i}", daemon=True)
            for i in range(num_threads)
        ]
        for thread in self._threads:
            thread.start()

    def _validate(self, num_threads: int, timeout_micros: int) -> None:
        if num_threads < 1:
            raise invalid_argument(f"num_batch_threads must be positive; was {num_threads}")
        if self._max_batch_size < 1:
            raise invalid_argument(
                f"input_batch_size_limit must be positive; was {self._max_batch_size}"
            )
        if timeout_micros < 0:
            raise invalid_argument(
                f"batch_timeout_micros must be non-negative; was {timeout_micros}"
            )
        if self._max_enqueued < 1:
            raise invalid_argument(
                f"max_enqueued_batches must be positive; was {self._max_enqueued}"
            )
        if self._splitting and self._max_batch_size < self._exec_size:
            raise invalid_argument(
                "When enable_large_batch_splitting is true, input_batch_size_limit must be "
                "greater than or equal to max_execution_batch_size."
            )
        if not self._allowed:
            return
        if any(b <= a for a, b in itertools.pairwise(self._allowed)) or self._allowed[0] < 1:
            raise invalid_argument("allowed_batch_sizes entries must be monotonically increasing")
        last = self._allowed[-1]
        if self._splitting and last != self._exec_size:
            raise invalid_argument(
                "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
                f"last entry was {last}; expected {self._exec_size}"
            )
        if not self._splitting and last != self._max_batch_size:
            raise invalid_argument(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{last}; expected {self._max_batch_size}"
            )

    # ----------------------------------------------------------------------------- public API

    @property
    def name(self) -> str:
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    async def submit(
        self, inputs: Mapping[str, np.ndarray], *, timeout_s: float | None = None
    ) -> Tensors:
        """Queues one task from the event loop and awaits its rows of the batch result.

        Args:
            inputs: Arrays sharing their dim-0 size (the task size).
            timeout_s: Like RunOptions.timeout_in_ms: if every task of a batch has waited
                longer than its timeout when the batch is dequeued, the batch is not run and
                its tasks fail with RESOURCE_EXHAUSTED. None means no timeout.

        Returns:
            The outputs for this task's rows (views into the batch outputs where possible).

        Raises:
            ServingError: INVALID_ARGUMENT for a malformed or too large task, UNAVAILABLE when
                the queue is full or the batcher closed, or the error that failed the batch.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Tensors] = loop.create_future()

        def settle(result: Tensors | None, error: BaseException | None) -> None:
            if not future.done():  # the awaiting caller may have been cancelled
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)  # type: ignore[arg-type]

        def done(result: Tensors | None, error: BaseException | None) -> None:
            # A closed loop raises RuntimeError: nobody is waiting for this result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        self._schedule(inputs, timeout_s, done)
        return await future

    def submit_blocking(
        self, inputs: Mapping[str, np.ndarray], *, timeout_s: float | None = None
    ) -> Tensors:
        """Like `submit`, from a plain (non-event-loop) thread; blocks until the result."""
        future: concurrent.futures.Future[Tensors] = concurrent.futures.Future()

        def done(result: Tensors | None, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        self._schedule(inputs, timeout_s, done)
        return future.result()

    def num_enqueued_tasks(self) -> int:
        """Tasks (or split pieces) waiting in queues, not counting batches being processed."""
        with self._cv:
            return sum(queue.num_tasks() for queue in self._queue_order)

    def close(self, drain: bool = True) -> None:
        """Stops accepting tasks, then finishes or fails the queued ones and joins the threads.

        Args:
            drain: True runs every queued task (the open batches close at once); False fails
                them with UNAVAILABLE. Batches already running always finish.
        """
        dropped: list[_Task] = []
        with self._cv:
            self._closed = True
            if not drain:
                for queue in self._queue_order:
                    for batch in queue.batches:
                        dropped.extend(batch.tasks)
                    queue.batches = deque([_Batch()])
            self._cv.notify_all()
        error = unavailable(f"Batcher {self._name} was closed before this task was run")
        for task in dropped:
            _notify(task, None, error)
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:  # close() from on_batch/run must not join itself
                thread.join()

    async def aclose(self, drain: bool = True) -> None:
        """`close` without blocking the event loop."""
        await asyncio.to_thread(self.close, drain)

    # ----------------------------------------------------------------------------- scheduling

    def _schedule(
        self, inputs: Mapping[str, np.ndarray], timeout_s: float | None, done: _DoneFn
    ) -> None:
        inputs = {name: np.asarray(value) for name, value in inputs.items()}
        size = _task_size(inputs)
        # Checked before the closed flag and the queue, as TF checks it first too.
        if size > self._max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {self._max_batch_size}"
            )
        now = time.monotonic()
        deadline = None if timeout_s is None or timeout_s <= 0 else now + timeout_s
        key = tuple(sorted(inputs))
        with self._cv:
            if self._closed:
                raise unavailable(f"Batcher {self._name} is closed; it accepts no new tasks")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key)
                self._queue_order.append(queue)
            self._check_capacity(queue, size)
            open_was_empty = not queue.open.tasks
            for task in self._pieces(queue, inputs, size, now, deadline, done):
                if queue.open.size + task.size > self._exec_size:
                    queue.batches.append(_Batch())
                batch = queue.open
                if not batch.tasks:
                    batch.start = now
                batch.tasks.append(task)
                batch.size += task.size
            # Wake a thread when there is something new to take or a new deadline to wait for.
            if open_was_empty or len(queue.batches) > 1 or self._open_ready(queue, now):
                self._cv.notify()

    def _check_capacity(self, queue: _Queue, size: int) -> None:
        batches = queue.batches
        if self._splitting:
            capacity = (self._max_enqueued - len(batches)) * self._exec_size + (
                self._exec_size - queue.open.size
            )
            if size > capacity:
                raise unavailable(
                    "The batch scheduling queue to which this task was submitted is full; "
                    f"task size is {size} but scheduling capacity is only {capacity} "
                    f"(num_enqueued_batches={len(batches)}, "
                    f"max_enqueued_batches={self._max_enqueued}, "
                    f"open_batch_size={queue.open.size}, "
                    f"max_execution_batch_size={self._exec_size})"
                )
        elif queue.open.size + size > self._max_batch_size and len(batches) >= self._max_enqueued:
            raise unavailable(
                "The batch scheduling queue to which this task was submitted is full; "
                f"currently {len(batches)} batches enqueued and max_enqueued_batches is "
                f"{self._max_enqueued}"
            )

    def _pieces(
        self,
        queue: _Queue,
        inputs: Tensors,
        size: int,
        now: float,
        deadline: float | None,
        done: _DoneFn,
    ) -> list[_Task]:
        remaining_slot = self._exec_size - queue.open.size
        if not self._splitting or size <= remaining_slot:
            return [_Task(inputs, size, now, deadline, done)]
        # Fill the open batch first, then whole execution batches (TF's SplitInputTask).
        sizes = [remaining_slot] if remaining_slot > 0 else []
        left = size - remaining_slot
        while left > 0:
            sizes.append(min(left, self._exec_size))
            left -= self._exec_size
        join = _SplitJoin(len(sizes), done)
        pieces = []
        offset = 0
        for index, piece_size in enumerate(sizes):
            piece_inputs = {
                name: array[offset : offset + piece_size] for name, array in inputs.items()
            }
            pieces.append(_Task(piece_inputs, piece_size, now, deadline, join.piece_done(index)))
            offset += piece_size
        return pieces

    def _open_ready(self, queue: _Queue, now: float) -> bool:
        """Whether a batch thread may close the open batch now (TF's IsOpenBatchSchedulable)."""
        batch = queue.open
        if not batch.tasks:
            return False
        return self._closed or batch.size >= self._exec_size or now >= batch.start + self._timeout_s

    def _take_locked(self, now: float) -> _Batch | None:
        """Pops the next batch to run, visiting queues round-robin; None if none is ready."""
        count = len(self._queue_order)
        for attempt in range(count):
            queue = self._queue_order[(self._next_queue + attempt) % count]
            if len(queue.batches) == 1 and self._open_ready(queue, now):
                queue.batches.append(_Batch())
            if len(queue.batches) >= 2:
                self._next_queue = (self._next_queue + attempt + 1) % count
                return queue.batches.popleft()
        return None

    def _wait_time_locked(self, now: float) -> float | None:
        """Seconds until the earliest open batch times out; None when nothing is queued."""
        starts = [q.open.start for q in self._queue_order if q.open.tasks]
        if not starts:
            return None
        return max(0.0, min(starts) + self._timeout_s - now)

    def _thread_main(self) -> None:
        while True:
            with self._cv:
                while True:
                    now = time.monotonic()
                    batch = self._take_locked(now)
                    if batch is not None:
                        break
                    if self._closed and not any(q.open.tasks for q in self._queue_order):
                        # Closed and drained (a closed batcher's open batches are always ready,
                        # so nothing is left queued); batches still running finish elsewhere.
                        return
                    self._cv.wait(self._wait_time_locked(now))
                # Chain the wake-up if more work is ready than this thread can take.
                if any(len(q.batches) > 1 or self._open_ready(q, now) for q in self._queue_order):
                    self._cv.notify()
            try:
                self._process(batch)
            except Exception:  # a bug here must not kill the thread and stall the queue
                log.exception("Batcher %s: processing a batch failed", self._name)

    # ----------------------------------------------------------------------------- processing

    def _process(self, batch: _Batch) -> None:
        tasks = batch.tasks
        now = time.monotonic()
        # Like BatchingSession: skip the run only if every task's deadline has passed.
        if all(task.deadline is not None and task.deadline <= now for task in tasks):
            error: ServingError = ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, _QUEUE_TIMEOUT_MESSAGE
            )
            for task in tasks:
                _notify(task, None, error)
            return
        try:
            merged, padded_size = self._merge(tasks, batch.size)
            if self._on_batch is not None:
                queue_delay = now - min(task.enqueue_time for task in tasks)
                try:
                    self._on_batch(batch.size, padded_size, queue_delay)
                except Exception:
                    log.exception("Batcher %s: on_batch callback failed", self._name)
            outputs = self._run(merged)
            results = self._split(outputs, tasks, padded_size)
        except ServingError as exc:
            failure: ServingError = exc
        except Exception as exc:  # the model failed: report it, keep serving
            failure = _internal(str(exc) or type(exc).__name__)
        else:
            for task, result in zip(tasks, results, strict=True):
                _notify(task, result, None)
            return
        for task in tasks:
            _notify(task, None, failure)

    def _merge(self, tasks: list[_Task], size: int) -> tuple[Tensors, int]:
        """Concatenates the tasks' inputs along dim 0 and pads to an allowed batch size."""
        padded_size = round_to_allowed_batch_size(self._allowed, size)
        padding = padded_size - size
        merged: Tensors = {}
        for name in tasks[0].inputs:
            parts = [task.inputs[name] for task in tasks]
            if self._pad_variable:
                parts = _pad_variable_length(parts)
            else:
                reference = parts[0].shape[1:]
                for part in parts[1:]:
                    if part.shape[1:] != reference:
                        raise _failed_precondition(
                            f"Tensors with name '{name}' from different tasks have different "
                            "shapes and padding is turned off. Set pad_variable_length_inputs "
                            "to true, or ensure that all tensors with the same name have equal "
                            "dimensions starting with the first dim."
                        )
            _check_dtypes(name, parts)
            if padding > 0:
                # TF repeats the first row of the last task; broadcast_to avoids a copy here.
                source = next((p for p in reversed(parts) if p.shape[0] > 0), None)
                if source is None:  # nothing but empty tasks: there is no row to repeat
                    padded_size, padding = size, 0
                else:
                    parts.append(np.broadcast_to(source[:1], (padding, *source.shape[1:])))
            # The one copy per input per batch (none at all for a lone, unpadded task).
            merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return merged, padded_size

    @staticmethod
    def _split(
        outputs: Mapping[str, np.ndarray], tasks: list[_Task], padded_size: int
    ) -> list[Tensors]:
        """Slices each output per task (views), dropping the padding rows."""
        results: list[Tensors] = [{} for _ in tasks]
        for name, value in outputs.items():
            array = np.asarray(value)
            if array.ndim == 0:
                raise _failed_precondition("Batched output tensor has 0 dimensions")
            if array.shape[0] != padded_size:
                raise _failed_precondition(
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                    "dimension sizes of the input tensors"
                )
            if len(tasks) == 1 and array.shape[0] == tasks[0].size:
                results[0][name] = array
                continue
            offset = 0
            for result, task in zip(results, tasks, strict=True):
                result[name] = array[offset : offset + task.size]
                offset += task.size
        return results


def _notify(task: _Task, result: Tensors | None, error: BaseException | None) -> None:
    """Completes one task; a failing completion callback must not affect the others."""
    try:
        task.done(result, error)
    except Exception:
        log.exception("Batcher: completing a task failed")


def _check_dtypes(name: str, parts: list[np.ndarray]) -> None:
    """Rejects mixed element types, as TF's Concat would (string widths may differ)."""
    first = parts[0].dtype
    for part in parts[1:]:
        dtype = part.dtype
        if dtype != first and not (dtype.kind == first.kind and dtype.kind in "SUO"):
            raise _internal(
                f"Tensor concat operation failed: input '{name}' mixes dtypes {first} and {dtype}"
            )


def _pad_variable_length(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Pads every non-batch dim to the batch's maximum, with each tensor's first element.

    That is TF Serving's ``AddPadding``: the padding value is the tensor's own first element
    (so the padded positions hold a valid value), ranks 1 to 6 only.
    """
    ranks = {part.ndim for part in parts}
    if len(ranks) != 1:
        raise _failed_precondition(
            f"Tensors with the same name from different tasks have different ranks: {sorted(ranks)}"
        )
    max_dims = tuple(max(part.shape[d] for part in parts) for d in range(1, parts[0].ndim))
    padded = []
    for part in parts:
        if part.shape[1:] == max_dims:
            padded.append(part)
            continue
        if part.ndim > _MAX_PADDABLE_RANK:
            raise invalid_argument("Only tensors with rank from 1 to 6 can be padded.")
        if part.size == 0:
            raise invalid_argument("Got empty tensor in batch of non-empty tensors.")
        out = np.full((part.shape[0], *max_dims), part.flat[0], dtype=part.dtype)
        out[tuple(slice(0, n) for n in part.shape)] = part
        padded.append(out)
    return padded
