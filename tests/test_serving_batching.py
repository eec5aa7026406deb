"""Tests of serving/batching.py: TF Serving's batching semantics, error codes and messages."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time

import grpc
import numpy as np
import pytest

from serving.batching import Batcher, round_to_allowed_batch_size
from serving.errors import ServingError, invalid_argument

LONG_TIMEOUT_MICROS = 60_000_000  # a batch would wait a minute unless closed for another reason
GUARD_S = 10.0  # upper bound for awaits that must not hang; far below LONG_TIMEOUT_MICROS


@dataclasses.dataclass(frozen=True)
class Options:
    """Stand-in for serving.config.BatchingOptions (same fields)."""

    max_batch_size: int = 8
    batch_timeout_micros: int = 1_000
    max_enqueued_batches: int = 1_000
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0


class Recorder:
    """A numpy model (y = 2x + 1, row sums) that records batch sizes and can be held."""

    def __init__(self, hold_first: bool = False):
        self.run_sizes: list[int] = []
        self.batches: list[tuple[int, int, float]] = []
        self.inputs: list[dict[str, np.ndarray]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inputs.append(inputs)
        self.run_sizes.append(inputs["x"].shape[0])
        self.entered.set()
        assert self.release.wait(GUARD_S)
        x = inputs["x"]
        return {"y": 2 * x + 1, "s": x.reshape(x.shape[0], -1).sum(axis=1)}

    def on_batch(self, size: int, padded: int, delay: float) -> None:
        self.batches.append((size, padded, delay))

    @property
    def sizes(self) -> list[int]:
        return [size for size, _, _ in self.batches]


def make(recorder: Recorder, name: str = "test", **options) -> Batcher:
    return Batcher(recorder.run, Options(**options), name, on_batch=recorder.on_batch)


def rows(n: int, start: float = 0.0, width: int = 3) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32).reshape(n, width) + start).astype(np.float32)


def expect(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": 2 * x + 1, "s": x.reshape(x.shape[0], -1).sum(axis=1)}


def assert_outputs(got: dict[str, np.ndarray], x: np.ndarray) -> None:
    want = expect(x)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


async def guarded(awaitable):
    return await asyncio.wait_for(awaitable, GUARD_S)


async def wait_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, GUARD_S)


def error_of(result) -> ServingError:
    assert isinstance(result, ServingError), result
    return result


# ------------------------------------------------------------------------------ real TF model


@pytest.fixture(scope="module")
def tf_model():
    """A tf.function of two dense layers over {"x": [n, 16] float32, "k": [n] int64}."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    w1 = tf.constant(rng.normal(size=(16, 32)).astype(np.float32))
    w2 = tf.constant(rng.normal(size=(32, 4)).astype(np.float32))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 16], tf.float32),
            tf.TensorSpec([None], tf.int64),
        ]
    )
    def model(x, k):
        h = tf.nn.relu(tf.matmul(x, w1))
        return {"out": tf.matmul(h, w2), "k2": k * 2}

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = model(tf.constant(inputs["x"]), tf.constant(inputs["k"]))
        return {name: tensor.numpy() for name, tensor in result.items()}

    run({"x": np.zeros((1, 16), np.float32), "k": np.zeros(1, np.int64)})  # trace once, up front
    return run


def random_tasks(count: int, max_rows: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(count):
        n = int(rng.integers(1, max_rows + 1))
        tasks.append(
            {
                "x": rng.normal(size=(n, 16)).astype(np.float32),
                "k": rng.integers(0, 1_000, size=n).astype(np.int64),
            }
        )
    return tasks


def assert_matches_unbatched(tf_run, tasks, results) -> None:
    for task, got in zip(tasks, results, strict=True):
        want = tf_run(task)
        assert set(got) == {"out", "k2"}
        assert got["out"].shape == want["out"].shape
        np.testing.assert_allclose(got["out"], want["out"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["k2"], want["k2"])


def test_async_batched_results_equal_unbatched_for_128_concurrent_callers(tf_model):
    sizes: list[int] = []
    batcher = Batcher(
        tf_model,
        Options(max_batch_size=32, batch_timeout_micros=2_000, num_batch_threads=2),
        "tfasync",
        on_batch=lambda size, padded, delay: sizes.append(size),
    )
    tasks = random_tasks(128, max_rows=7, seed=1)
    try:

        async def main():
            return await guarded(asyncio.gather(*(batcher.submit(t) for t in tasks)))

        results = asyncio.run(main())
    finally:
        batcher.close()
    assert_matches_unbatched(tf_model, tasks, results)
    assert sum(sizes) == sum(t["x"].shape[0] for t in tasks)
    assert max(sizes) <= 32
    assert len(sizes) < len(tasks)  # requests really were merged


def test_blocking_batched_results_equal_unbatched(tf_model):
    batcher = Batcher(
        tf_model,
        Options(max_batch_size=16, batch_timeout_micros=1_000, num_batch_threads=2),
        "tfblocking",
    )
    tasks = random_tasks(96, max_rows=5, seed=2)
    try:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(batcher.submit_blocking, tasks, timeout=GUARD_S))
    finally:
        batcher.close()
    assert_matches_unbatched(tf_model, tasks, results)


def test_splitting_reassembles_a_large_task_with_a_real_model(tf_model):
    run_sizes: list[int] = []

    def run(inputs):
        run_sizes.append(inputs["x"].shape[0])
        return tf_model(inputs)

    options = Options(
        max_batch_size=64,
        max_execution_batch_size=8,
        enable_large_batch_splitting=True,
        batch_timeout_micros=0,
    )
    batcher = Batcher(run, options, "tfsplit")
    (task,) = random_tasks(1, max_rows=1, seed=4)
    task = {k: np.concatenate([v] * 29) for k, v in task.items()}  # 29 rows
    try:
        result = batcher.submit_blocking(task)
    finally:
        batcher.close()
    assert_matches_unbatched(tf_model, [task], [result])
    assert sum(run_sizes) == 29
    assert max(run_sizes) <= 8


# ------------------------------------------------------------------------------ batch formation


def test_batch_closes_when_the_next_task_would_exceed_max_batch_size():
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=4, batch_timeout_micros=LONG_TIMEOUT_MICROS)
    xs = [rows(3), rows(2, 100), rows(2, 200), rows(4, 300)]
    try:

        async def main():
            return await guarded(asyncio.gather(*(batcher.submit({"x": x}) for x in xs)))

        # Only size can close these batches: the timeout is a minute, the guard 10 s.
        results = asyncio.run(main())
    finally:
        batcher.close()
    for x, got in zip(xs, results, strict=True):
        assert_outputs(got, x)
    assert sorted(recorder.sizes) == [3, 4, 4]


def test_tasks_arriving_within_the_timeout_share_one_batch():
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=64, batch_timeout_micros=300_000, num_batch_threads=1)
    xs = [rows(n, 10 * n) for n in (1, 2, 3, 1, 2)]
    try:

        async def main():
            first = await guarded(asyncio.gather(*(batcher.submit({"x": x}) for x in xs)))
            later = await guarded(batcher.submit({"x": rows(2, 7)}))
            return first, later

        results, later = asyncio.run(main())
    finally:
        batcher.close()
    for x, got in zip(xs, results, strict=True):
        assert_outputs(got, x)
    assert_outputs(later, rows(2, 7))
    # Far below max_batch_size, so only the timeout closed them; the later task got its own.
    assert recorder.sizes == [9, 2]
    assert recorder.run_sizes == [9, 2]
    assert recorder.batches[0][2] >= 0.29  # it did wait for the timeout (a lower bound only)


def test_zero_timeout_never_waits_and_busy_threads_let_tasks_accumulate():
    recorder = Recorder(hold_first=True)
    batcher = make(recorder, max_batch_size=1_000, batch_timeout_micros=0, num_batch_threads=1)
    try:

        async def main():
            # A lone task in a huge batch: it can only complete if nobody waits for more.
            first = asyncio.ensure_future(batcher.submit({"x": rows(1)}))
            await wait_event(recorder.entered)
            # The only thread is busy, so these pile up in the open batch (TF's pull model).
            rest = [asyncio.ensure_future(batcher.submit({"x": rows(2, i)})) for i in range(3)]
            await asyncio.sleep(0.05)
            recorder.release.set()
            return await guarded(asyncio.gather(first, *rest))

        results = asyncio.run(main())
    finally:
        batcher.close()
    assert_outputs(results[0], rows(1))
    for i, got in enumerate(results[1:]):
        assert_outputs(got, rows(2, i))
    assert recorder.sizes == [1, 6]


# ------------------------------------------------------------------------------ errors


def test_queue_full_is_unavailable_while_earlier_tasks_succeed():
    recorder = Recorder(hold_first=True)
    batcher = make(
        recorder,
        max_batch_size=2,
        max_enqueued_batches=2,
        batch_timeout_micros=0,
        num_batch_threads=1,
    )
    try:

        async def main():
            running = asyncio.ensure_future(batcher.submit({"x": rows(2)}))
            await wait_event(recorder.entered)  # the running batch no longer counts
            queued = [asyncio.ensure_future(batcher.submit({"x": rows(2, i)})) for i in (1, 2)]
            await asyncio.sleep(0)  # let both enqueue: one batch each, the queue is now full
            with pytest.raises(ServingError) as full:
                await batcher.submit({"x": rows(1, 9)})
            recorder.release.set()
            done = await guarded(asyncio.gather(running, *queued))
            return full.value, done

        error, done = asyncio.run(main())
    finally:
        batcher.close()
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == (
        "The batch scheduling queue to which this task was submitted is full; "
        "currently 2 batches enqueued and max_enqueued_batches is 2"
    )
    assert_outputs(done[0], rows(2))
    assert_outputs(done[1], rows(2, 1))
    assert_outputs(done[2], rows(2, 2))
    assert recorder.sizes == [2, 2, 2]


def test_queue_full_with_splitting_reports_the_scheduling_capacity():
    recorder = Recorder(hold_first=True)
    batcher = make(
        recorder,
        max_batch_size=16,
        max_execution_batch_size=4,
        enable_large_batch_splitting=True,
        max_enqueued_batches=2,
        batch_timeout_micros=LONG_TIMEOUT_MICROS,
        num_batch_threads=1,
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(batcher.submit_blocking, {"x": rows(4)})  # full: runs at once
            assert recorder.entered.wait(GUARD_S)
            split = pool.submit(batcher.submit_blocking, {"x": rows(5)})
            deadline = time.monotonic() + GUARD_S
            while batcher.num_enqueued_tasks() < 2 and time.monotonic() < deadline:
                time.sleep(0.005)  # the 5 rows become two pieces: 4 (closed) + 1 (open)
            with pytest.raises(ServingError) as full:
                batcher.submit_blocking({"x": rows(4)})
        finally:
            recorder.release.set()
            batcher.close()  # closes the open 1-row piece, which would otherwise wait a minute
        assert_outputs(first.result(GUARD_S), rows(4))
        assert_outputs(split.result(GUARD_S), rows(5))
    assert full.value.code == grpc.StatusCode.UNAVAILABLE
    assert full.value.message == (
        "The batch scheduling queue to which this task was submitted is full; task size is 4 "
        "but scheduling capacity is only 3 (num_enqueued_batches=2, max_enqueued_batches=2, "
        "open_batch_size=1, max_execution_batch_size=4)"
    )


def test_task_larger_than_max_batch_size_is_invalid_argument():
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=4)
    try:
        with pytest.raises(ServingError) as info:
            batcher.submit_blocking({"x": rows(5)})
    finally:
        batcher.close()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Task size 5 is larger than maximum input batch size 4"
    assert recorder.run_sizes == []


def test_splitting_chunks_to_execution_size_and_reassembles_in_order():
    recorder = Recorder()
    batcher = make(
        recorder,
        max_batch_size=32,
        max_execution_batch_size=4,
        enable_large_batch_splitting=True,
        allowed_batch_sizes=(2, 4),
        batch_timeout_micros=0,
        num_batch_threads=2,
    )
    x = rows(11, 0.5)
    try:
        got = batcher.submit_blocking({"x": x})
        with pytest.raises(ServingError) as too_big:
            batcher.submit_blocking({"x": rows(33)})  # max_batch_size still bounds the input
    finally:
        batcher.close()
    assert_outputs(got, x)
    assert sorted(recorder.sizes) == [3, 4, 4]
    assert sorted(recorder.run_sizes) == [4, 4, 4]  # the 3-row piece was padded to 4
    assert too_big.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert too_big.value.message == "Task size 33 is larger than maximum input batch size 32"


def test_padding_to_allowed_batch_sizes_repeats_a_row_and_is_dropped():
    recorder = Recorder()
    batcher = make(
        recorder,
        max_batch_size=8,
        allowed_batch_sizes=(2, 4, 8),
        batch_timeout_micros=200_000,
        num_batch_threads=1,
    )
    xs = [rows(1, 0), rows(1, 10), rows(1, 20)]
    try:

        async def main():
            return await guarded(asyncio.gather(*(batcher.submit({"x": x}) for x in xs)))

        results = asyncio.run(main())
    finally:
        batcher.close()
    assert recorder.batches[0][:2] == (3, 4)
    assert recorder.run_sizes == [4]
    batch_input = recorder.inputs[0]["x"]
    # TF pads with the first row of the last task of the batch.
    np.testing.assert_array_equal(batch_input[3], xs[2][0])
    for x, got in zip(xs, results, strict=True):
        assert got["y"].shape == (1, 3)
        assert_outputs(got, x)


def test_round_to_allowed_batch_size():
    assert round_to_allowed_batch_size((2, 4, 8), 3) == 4
    assert round_to_allowed_batch_size((2, 4, 8), 4) == 4
    assert round_to_allowed_batch_size((2, 4, 8), 9) == 9
    assert round_to_allowed_batch_size((), 5) == 5


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"x": rows(2), "z": rows(3)},
            "Batching Run() input tensors must have equal 0th-dimension size",
        ),
        ({}, "Batching Run() must have at least one input tensor"),
        ({"x": np.float32(1.0)}, "Batching Run() input tensors must have at least one dimension"),
    ],
)
def test_malformed_tasks_are_invalid_argument(inputs, message):
    recorder = Recorder()
    batcher = make(recorder)
    try:
        with pytest.raises(ServingError) as info:
            batcher.submit_blocking(inputs)
    finally:
        batcher.close()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == message


def test_different_inner_shapes_fail_the_batch_without_padding():
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1)
    try:

        async def main():
            return await guarded(
                asyncio.gather(
                    batcher.submit({"x": rows(1, width=3)}),
                    batcher.submit({"x": rows(1, width=5)}),
                    return_exceptions=True,
                )
            )

        results = asyncio.run(main())
    finally:
        batcher.close()
    for result in results:
        error = error_of(result)
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.message.startswith(
            "Tensors with name 'x' from different tasks have different shapes and padding is "
            "turned off."
        )
    assert recorder.run_sizes == []


def test_pad_variable_length_inputs_pads_with_the_first_element():
    recorder = Recorder()
    batcher = make(
        recorder,
        max_batch_size=8,
        batch_timeout_micros=200_000,
        num_batch_threads=1,
        pad_variable_length_inputs=True,
    )
    short = np.array([[7.0, 1.0]], np.float32)
    long = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], np.float32)
    try:

        async def main():
            return await guarded(
                asyncio.gather(batcher.submit({"x": short}), batcher.submit({"x": long}))
            )

        got_short, got_long = asyncio.run(main())
    finally:
        batcher.close()
    padded_short = np.array([[7.0, 1.0, 7.0, 7.0]], np.float32)
    np.testing.assert_array_equal(recorder.inputs[0]["x"], np.concatenate([padded_short, long]))
    assert_outputs(got_short, padded_short)
    assert_outputs(got_long, long)


def test_exception_in_run_fails_only_that_batch():
    calls: list[int] = []

    def run(inputs):
        calls.append(inputs["x"].shape[0])
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        if (inputs["x"] > 1e6).any():
            raise invalid_argument("input too large")
        return {"y": inputs["x"] * 3}

    batcher = Batcher(
        run, Options(max_batch_size=2, batch_timeout_micros=LONG_TIMEOUT_MICROS), "boom"
    )
    good = rows(1, 5)
    try:

        async def main():
            first = await guarded(
                asyncio.gather(
                    batcher.submit({"x": -rows(1, 1)}),
                    batcher.submit({"x": good}),
                    return_exceptions=True,
                )
            )
            second = await guarded(
                asyncio.gather(
                    batcher.submit({"x": rows(1, 2e6)}),
                    batcher.submit({"x": good}),
                    return_exceptions=True,
                )
            )
            third = await guarded(
                asyncio.gather(batcher.submit({"x": good}), batcher.submit({"x": good + 1}))
            )
            return first, second, third

        first, second, third = asyncio.run(main())
    finally:
        batcher.close()
    for error in map(error_of, first):
        assert (error.code, error.message) == (grpc.StatusCode.INTERNAL, "negative input")
    for error in map(error_of, second):
        assert (error.code, error.message) == (grpc.StatusCode.INVALID_ARGUMENT, "input too large")
    np.testing.assert_array_equal(third[0]["y"], good * 3)
    np.testing.assert_array_equal(third[1]["y"], (good + 1) * 3)
    assert calls == [2, 2, 2]


def test_run_output_with_wrong_batch_size_is_failed_precondition():
    batcher = Batcher(lambda inputs: {"y": np.zeros(1)}, Options(batch_timeout_micros=0), "bad")
    try:
        with pytest.raises(ServingError) as info:
            batcher.submit_blocking({"x": rows(3)})
    finally:
        batcher.close()
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message.startswith("Batched output tensor's 0th dimension does not equal")


def test_all_tasks_past_their_timeout_are_resource_exhausted_without_running():
    recorder = Recorder(hold_first=True)
    batcher = make(recorder, batch_timeout_micros=0, num_batch_threads=1)
    try:

        async def main():
            running = asyncio.ensure_future(batcher.submit({"x": rows(1)}))
            await wait_event(recorder.entered)
            late = asyncio.ensure_future(batcher.submit({"x": rows(1, 3)}, timeout_s=0.01))
            await asyncio.sleep(0.05)  # longer than its timeout, while the thread is busy
            recorder.release.set()
            return await guarded(asyncio.gather(running, late, return_exceptions=True))

        running, late = asyncio.run(main())
    finally:
        batcher.close()
    assert_outputs(running, rows(1))
    error = error_of(late)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == "Run() timeout exceeded while waiting in batching queue"
    assert recorder.run_sizes == [1]


# ------------------------------------------------------------------------------ lifecycle


def test_close_drains_queued_tasks_and_rejects_new_ones():
    recorder = Recorder(hold_first=True)
    batcher = make(recorder, batch_timeout_micros=LONG_TIMEOUT_MICROS, num_batch_threads=1)
    threads = {t.name for t in threading.enumerate()}
    assert "test_batch_0" in threads

    async def main():
        first = asyncio.ensure_future(batcher.submit({"x": rows(8)}))  # full: runs at once
        await wait_event(recorder.entered)
        queued = [asyncio.ensure_future(batcher.submit({"x": rows(2, i)})) for i in (1, 2)]
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(batcher.aclose(drain=True))
        await asyncio.sleep(0.02)
        with pytest.raises(ServingError) as rejected:
            await batcher.submit({"x": rows(1)})
        recorder.release.set()  # without close, the queued batch would wait a minute
        results = await guarded(asyncio.gather(first, *queued))
        await guarded(closing)
        return results, rejected.value

    results, rejected = asyncio.run(main())
    assert_outputs(results[0], rows(8))
    assert_outputs(results[1], rows(2, 1))
    assert_outputs(results[2], rows(2, 2))
    assert recorder.sizes == [8, 4]
    assert rejected.code == grpc.StatusCode.UNAVAILABLE
    assert "test_batch_0" not in {t.name for t in threading.enumerate()}
    with pytest.raises(ServingError) as after:
        batcher.submit_blocking({"x": rows(1)})
    assert after.value.code == grpc.StatusCode.UNAVAILABLE


def test_close_without_drain_fails_queued_tasks_with_unavailable():
    recorder = Recorder(hold_first=True)
    batcher = make(recorder, batch_timeout_micros=LONG_TIMEOUT_MICROS, num_batch_threads=1)

    async def main():
        first = asyncio.ensure_future(batcher.submit({"x": rows(8)}))
        await wait_event(recorder.entered)
        queued = asyncio.ensure_future(batcher.submit({"x": rows(2)}))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(batcher.aclose(drain=False))
        await asyncio.sleep(0.02)
        recorder.release.set()
        await guarded(closing)
        return await guarded(asyncio.gather(first, queued, return_exceptions=True))

    first, queued = asyncio.run(main())
    assert_outputs(first, rows(8))
    error = error_of(queued)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert recorder.run_sizes == [8]


def test_cancelled_caller_does_not_disturb_the_batch():
    recorder = Recorder(hold_first=True)
    batcher = make(recorder, batch_timeout_micros=0, num_batch_threads=1)
    try:

        async def main():
            running = asyncio.ensure_future(batcher.submit({"x": rows(1)}))
            await wait_event(recorder.entered)
            doomed = asyncio.ensure_future(batcher.submit({"x": rows(1, 1)}))
            kept = asyncio.ensure_future(batcher.submit({"x": rows(1, 2)}))
            await asyncio.sleep(0)
            doomed.cancel()
            recorder.release.set()
            return await guarded(asyncio.gather(running, kept))

        running, kept = asyncio.run(main())
    finally:
        batcher.close()
    assert_outputs(running, rows(1))
    assert_outputs(kept, rows(1, 2))
    assert recorder.sizes == [1, 2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            Options(max_batch_size=8, allowed_batch_sizes=(2, 4)),
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; "
            "expected 8",
        ),
        (
            Options(max_batch_size=8, allowed_batch_sizes=(4, 2, 8)),
            "allowed_batch_sizes entries must be monotonically increasing",
        ),
        (Options(num_batch_threads=0), "num_batch_threads must be positive; was 0"),
        (
            Options(
                max_batch_size=4, max_execution_batch_size=8, enable_large_batch_splitting=True
            ),
            "When enable_large_batch_splitting is true, input_batch_size_limit must be greater "
            "than or equal to max_execution_batch_size.",
        ),
    ],
)
def test_inconsistent_options_are_invalid_argument(options, message):
    with pytest.raises(ServingError) as info:
        Batcher(lambda inputs: inputs, options, "invalid")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == message
