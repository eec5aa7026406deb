"""One loaded model version: its SavedModel, its SignatureDefs, and how to run them.

The SignatureDefs come from `saved_model.pb` itself (as TensorFlow Serving reads them), so the
dtypes, shapes and method names checked on a request and returned by GetModelMetadata are the
model's own; the callables come from `tf.saved_model.load`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ServingError, failed_precondition, invalid_argument

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INIT_OP_SIGNATURE = "__saved_model_init_op"
WARMUP_FILE = "tf_serving_warmup_requests"
# TF Serving reads at most this many warm-up records (servables/tensorflow/saved_model_warmup_util).
MAX_WARMUP_RECORDS = 1000


@dataclass
class Signature:
    """A runnable signature: its SignatureDef and the loaded concrete function."""

    name: str
    definition: Any  # meta_graph_pb2.SignatureDef
    function: Any  # a tf ConcreteFunction taking one keyword argument per input key

    @property
    def method_name(self) -> str:
        return self.definition.method_name

    @functools.cached_property
    def input_plan(self) -> dict[str, tuple[int, tuple[int, ...] | None]]:
        """Per input: (dtype enum, expected shape with -1 for open dims, or None if unknown).

        Read once from the SignatureDef: reading proto fields on every request costs more than
        the checks themselves.
        """
        plan = {}
        for alias, info in self.definition.inputs.items():
            shape = None
            if info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank:
                shape = tuple(d.size for d in info.tensor_shape.dim)
            plan[alias] = (info.dtype, shape)
        return plan

    @functools.cached_property
    def flat_call(self) -> tuple[Any, list[str]] | None:
        """The loaded function's flat call and its argument order, or None to use `__call__`.

        `ConcreteFunction.__call__` canonicalizes and type-checks every keyword argument
        against its structured signature: 1.6 ms of the 2.8 ms a 69-input crop_demand call takes
        on this machine. The server has already checked names, dtypes and shapes against the
        SignatureDef, so it calls the flat function those checks end in (`_call_flat`, a
        private TensorFlow method, hence the fallback when it is missing or its arguments are
        not exactly the signature's inputs). tests/test_serving_servable.py checks both paths
        give the same outputs.
        """
        call = getattr(self.function, "_call_flat", None)
        keywords = getattr(self.function, "_arg_keywords", None)
        if call is None or keywords is None or set(keywords) != set(self.definition.inputs):
            return None
        if len(keywords) != len(self.definition.inputs):
            return None
        return call, list(keywords)

    def inputs_match(self, inputs: Mapping[str, np.ndarray]) -> bool:
        """True when names, dtypes, known dims and the batch size all match (the common case).

        False sends the request through `codec.check_inputs`, which words the exact error.
        """
        from serving.codec import numpy_to_dtype

        plan = self.input_plan
        if len(inputs) != len(plan):
            return False
        batch = None
        for alias, array in inputs.items():
            expected = plan.get(alias)
            if expected is None or numpy_to_dtype(array.dtype) != expected[0]:
                return False
            shape = expected[1]
            if shape is not None:
                actual = array.shape
                if len(actual) != len(shape):
                    return False
                for want, got in zip(shape, actual, strict=True):
                    if want >= 0 and want != got:
                        return False
                if shape and shape[0] < 0:
                    if batch is None:
                        batch = actual[0]
                    elif actual[0] != batch:
                        return False
            elif array.ndim:
                return False  # unknown signature shape: let check_inputs apply its rules
        return True

    @property
    def inputs(self) -> Mapping[str, Any]:
        return self.definition.inputs

    @property
    def outputs(self) -> Mapping[str, Any]:
        return self.definition.outputs

    def run(
        self, inputs: Mapping[str, np.ndarray], output_keys: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Runs the signature on numpy inputs (dim 0 the batch) and returns numpy outputs.

        Blocking; TensorFlow releases the GIL while the graph runs, so callers use threads.
        """
        import tensorflow as tf

        try:
            tensors = {key: tf.constant(value) for key, value in inputs.items()}
            flat = self.flat_call
            if flat is not None:
                call, keywords = flat
                results = call([tensors[key] for key in keywords], self.function.captured_inputs)
            else:
                results = self.function(**tensors)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError, KeyError) as exc:
            raise invalid_argument(_tf_message(exc)) from exc
        except tf.errors.OpError as exc:
            raise ServingError(_grpc_code(exc), _tf_message(exc)) from exc
        keys = output_keys if output_keys else list(results)
        return {key: results[key].numpy() for key in keys}


def _tf_message(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)


def _grpc_code(exc) -> Any:
    import grpc

    by_value = {code.value[0]: code for code in grpc.StatusCode}
    return by_value.get(getattr(exc, "error_code", 2), grpc.StatusCode.UNKNOWN)


def read_signature_defs(path: Path, tags: frozenset[str]) -> dict[str, Any]:
    """The SignatureDef map of the MetaGraph tagged `tags` in `path/saved_model.pb`.

    Raises:
        ValueError: No such file, or no MetaGraph with exactly these tags.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise ValueError(f"SavedModel file does not exist at: {pb}")
    saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    for meta_graph in saved.meta_graphs:
        if frozenset(meta_graph.meta_info_def.tags) == tags:
            return dict(meta_graph.signature_def)
    found = [sorted(m.meta_info_def.tags) for m in saved.meta_graphs]
    raise ValueError(
        f"Could not find meta graph def matching supplied tags: {{ {', '.join(sorted(tags))} }}. "
        f"Available tags: {found}"
    )


@dataclass
class Servable:
    """A model version loaded in memory, ready to serve.

    Attributes:
        name: The model name (from the server config, not from the files).
        version: The version number (the directory name).
        path: The version directory.
        signature_defs: Every SignatureDef of the served MetaGraph (GetModelMetadata returns them).
        signatures: The runnable ones, by signature key.
    """

    name: str
    version: int
    path: Path
    signature_defs: dict[str, Any]
    signatures: dict[str, Signature]
    loaded: Any = field(repr=False, default=None)
    batchers: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(
        cls, name: str, version: int, path: Path, tags: frozenset[str] = frozenset({"serve"})
    ) -> Servable:
        """Loads `path` (a SavedModel) with its signatures.

        Raises:
            ValueError / tf.errors.OpError: the directory is not a loadable SavedModel.
        """
        import tensorflow as tf

        signature_defs = read_signature_defs(path, tags)
        loaded = tf.saved_model.load(str(path), tags=sorted(tags))
        signatures = {
            key: Signature(key, signature_defs[key], function)
            for key, function in loaded.signatures.items()
            if key in signature_defs
        }
        if not signatures:
            raise ValueError(f"SavedModel at {path} has no signatures to serve")
        return cls(name, version, path, signature_defs, signatures, loaded)

    def signature(self, key: str | None, method: str | None = None) -> Signature:
        """The signature for `key` ('' or None: serving_default).

        Raises:
            ServingError: FAILED_PRECONDITION when the key is unknown (as TF Serving answers);
                INVALID_ARGUMENT when its method is not `method` (Classify/Regress).
        """
        key = key or DEFAULT_SIGNATURE
        signature = self.signatures.get(key)
        if signature is None:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        if method is not None and signature.method_name != method:
            kind = {CLASSIFY_METHOD: "classification", REGRESS_METHOD: "regression"}.get(
                method, "prediction"
            )
            raise invalid_argument(
                f"Expected {kind} signature method_name to be {method}. "
                f"Was: {signature.method_name}"
            )
        return signature

    def batcher(self, key: str, options: Any, on_batch=None):
        """The dynamic batcher of signature `key` (created on first use)."""
        with self._lock:
            batcher = self.batchers.get(key)
            if batcher is None:
                from serving.batching import Batcher

                batcher = Batcher(
                    self.signatures[key].run,
                    options,
                    name=f"{self.name}-{self.version}-{key}",
                    on_batch=on_batch,
                )
                self.batchers[key] = batcher
            return batcher

    def close(self) -> None:
        """Stops its batchers after the work they hold (requests in flight finish)."""
        with self._lock:
            batchers, self.batchers = list(self.batchers.values()), {}
        for batcher in batchers:
            batcher.close(drain=True)

    def warmup(self, iterations: int = 1) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` like TF Serving; returns the count.

        Each record is a PredictionLog; predict, classify, regress and multi-inference logs are
        replayed `iterations` times. A malformed file or a failing request fails the load, as in
        TF Serving, so a broken version never becomes AVAILABLE.
        """
        path = self.path / "assets.extra" / WARMUP_FILE
        if not path.is_file():
            return 0
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        from serving import inference

        started = time.perf_counter()
        records = 0
        for raw in tf.data.TFRecordDataset(str(path)):
            records += 1
            if records > MAX_WARMUP_RECORDS:
                raise ValueError(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
            entry = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            kind = entry.WhichOneof("log_type")
            for _ in range(iterations):
                if kind == "predict_log":
                    inference.predict_sync(self, entry.predict_log.request)
                elif kind == "classify_log":
                    inference.examples_sync(self, entry.classify_log.request, CLASSIFY_METHOD)
                elif kind == "regress_log":
                    inference.examples_sync(self, entry.regress_log.request, REGRESS_METHOD)
                elif kind == "multi_inference_log":
                    inference.multi_inference_sync(self, entry.multi_inference_log.request)
                else:
                    raise ValueError(f"Unsupported log_type for warmup: {kind}")
        log.info(
            "warmed up %s version %d with %d record(s) in %.2f s",
            self.name,
            self.version,
            records,
            time.perf_counter() - started,
        )
        return records
