"""Small real SavedModels for the serving tests (built in a second or two, no training).

- `export_toy`: a TF2 model with three inputs of three dtypes and two signatures, whose outputs
  depend on the version's `offset` (so a test can tell versions apart), with warm-up records.
- `export_examples_model`: a TF1-style model with classify and regress signatures over
  serialized tf.Examples (TF2 cannot write those method names), as TF Serving's tests use.
"""

from __future__ import annotations

from pathlib import Path


def toy_request_inputs(n: int = 3):
    import numpy as np

    return {
        "x": np.arange(n, dtype=np.float32),
        "key": np.array([f"k{i}".encode() for i in range(n)], dtype=object),
        "count": np.arange(n, dtype=np.int64),
    }


def toy_expected(inputs, offset: float):
    """What the toy model answers, computed in numpy."""
    import numpy as np

    y = inputs["x"] * 0.5 + offset + inputs["count"].astype(np.float32)
    tagged = np.array([k + b"!" for k in inputs["key"]], dtype=object)
    return {"y": y.astype(np.float32), "tagged": tagged}


def export_toy(base: Path, version: int, offset: float = 2.0, warmup: bool = True) -> Path:
    """Writes `base/<version>` atomically (temp dir + rename, as perucast.export does)."""
    import tensorflow as tf

    class Toy(tf.Module):
        def __init__(self):
            super().__init__()
            self.offset = tf.Variable(offset, dtype=tf.float32)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="x"),
                tf.TensorSpec([None], tf.string, name="key"),
                tf.TensorSpec([None], tf.int64, name="count"),
            ]
        )
        def serve(self, x, key, count):
            y = x * 0.5 + self.offset + tf.cast(count, tf.float32)
            return {"y": y, "tagged": tf.strings.join([key, "!"])}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="pair")])
        def total(self, pair):
            return {"sum": tf.reduce_sum(pair, axis=1)}

    module = Toy()
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}"
    tf.saved_model.save(
        module,
        str(tmp),
        signatures={"serving_default": module.serve, "total": module.total},
    )
    if warmup:
        _write_warmup(tmp, "toy")
    final = base / str(version)
    tmp.rename(final)
    return final


def _write_warmup(path: Path, name: str) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    extra = path / "assets.extra"
    extra.mkdir(exist_ok=True)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in toy_request_inputs(2).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        writer.write(log.SerializeToString())


def export_examples_model(base: Path, version: int = 1) -> Path:
    """Classify (`classes`/`scores` over labels neg/pos) and regress (`outputs` = 2x + 1)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    final = base / str(version)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}"
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        features = v1.io.parse_example(
            serialized, {"x": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
        )
        x = features["x"]
        regression = tf.identity(2.0 * x + 1.0, name="regression")
        logits = tf.concat([-x, x], axis=1)
        scores = tf.nn.softmax(logits, name="scores")
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1], name="classes")
        signature_utils = v1.saved_model.signature_def_utils
        classify = signature_utils.classification_signature_def(serialized, classes, scores)
        regress = signature_utils.regression_signature_def(serialized, regression)
        predict = signature_utils.predict_signature_def(
            {"x": serialized}, {"scores": scores, "classes": classes}
        )
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(tmp))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map={
                    "classify_x": classify,
                    "regress_x": regress,
                    "serving_default": predict,
                },
            )
            builder.save()
    tmp.rename(final)
    return final
