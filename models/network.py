"""The forecasting network every use case shares: raw named features in, P10/P50/P90 out.

Each use case describes its inputs with a :class:`NetworkSpec` (which numeric columns are in
the target's units, which are heavy-tailed, its default layer sizes); :func:`build_network`
turns it and the preprocessing statistics (``statistics.json``, train split only) into a Keras
model whose graph holds every transformation a prediction needs, so clients send raw values:

* **Lookups**: string keys (``region``, ``crop``, ``zone``, ``season``) through ``StringLookup``
  with the training vocabulary (index 0 for a value never seen in training) into embeddings;
  small integer codes (``fut_holiday_h*``) through ``IntegerLookup`` into one-hot vectors.
* **Per-series scaling**: the series (all key values joined) is looked up in the training
  per-series target mean and standard deviation (unknown series: the global ones). Columns in
  the target's units (``level_columns``: the target and its lags and rolling means) become
  ``(x − mean_s) / std_s``, spreads (``spread_columns``: rolling standard deviations) ``x / std_s``.
* **Normalization** from the statistics: heavy-tailed non-negative columns (``log_columns``)
  ``(log1p(x) − log1p(q50)) / ((log1p(q90) − log1p(q10)) / 2.563)`` (a robust z-score in log
  space; 2.563 is the P10–P90 width of a standard normal); the others ``(x − mean) / std``.
  Scaled values are clipped to ±``CLIP`` and a missing value (NaN) becomes 0, the training mean.
* **Output**: the network predicts in the series' scaled space relative to the scaled value at
  the origin (a residual on persistence), P50 plus non-negative offsets down to P10 and up to
  P90 (quantiles never cross), then maps back to the target's units and clips at 0 (demand and
  biomass are never negative): ``[batch, H, 3]``.

Training minimises the pinball loss of the three quantiles; weighting each row by ``1 / std_s``
makes the loss the pinball loss in the scaled space, so every series counts alike whatever its
size.

The module imports ``tf_keras`` (Keras 2) lazily: Keras 3 ``model.fit`` fails under
``MultiWorkerMirroredStrategy`` in TF 2.21 (keras-team/keras#20585).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.base import FeatureSpec
from perucast.quantiles import QUANTILE_LEVELS

CLIP = 8.0  # |scaled value| cap: one wild input cannot swamp the network
SERIES_SEPARATOR = "\x1f"  # joins key values into one series id (never in a key value)
_NORMAL_P10_P90 = 2.5631031310892007  # width of N(0, 1) between its 10% and 90% quantiles


@dataclass(frozen=True)
class NetworkSpec:
    """How a use case's feature columns enter the network, and its default sizes.

    Attributes:
        level_columns: Numeric columns in the target's units (scaled per series).
        spread_columns: Numeric columns that are spreads in the target's units (``x / std_s``).
        log_columns: Heavy-tailed non-negative columns (robust z-score in log space).
        embedding_dims: Embedding width per string categorical column (default 4).
        hidden_units: Widths of the hidden layers.
        dropout: Dropout rate after each hidden layer.
    """

    level_columns: tuple[str, ...]
    spread_columns: tuple[str, ...] = ()
    log_columns: tuple[str, ...] = ()
    embedding_dims: Mapping[str, int] = field(default_factory=dict)
    hidden_units: tuple[int, ...] = (128, 64)
    dropout: float = 0.1


def input_dtypes(spec: FeatureSpec, statistics: Mapping[str, Any]) -> dict[str, str]:
    """Input name -> TensorFlow dtype name (``string``, ``int64``, ``float32``), in order.

    A categorical column is a string input unless its training vocabulary holds integers.
    """
    out: dict[str, str] = {}
    for name in spec.categorical:
        vocab = statistics["categorical"][name]["vocabulary"]
        out[name] = "int64" if vocab and isinstance(vocab[0], int) else "string"
    for name in spec.numeric:
        out[name] = "float32"
    return out


def series_ids(frame_keys: Sequence[Sequence[str]]) -> list[str]:
    """Series ids (key values joined by ``SERIES_SEPARATOR``) of rows of key values."""
    return [SERIES_SEPARATOR.join(str(v) for v in keys) for keys in frame_keys]


def series_table(
    spec: FeatureSpec, statistics: Mapping[str, Any]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Training series ids and their target mean and (floored) standard deviation.

    Index 0 of the returned arrays is the global fallback for a series never seen in training.
    The standard deviation is floored at 1% of the series' mean absolute level (and a tiny
    absolute value), so a flat series does not blow scaled values up.
    """
    target = statistics["numeric"][spec.target]
    ids, means, stds = [], [float(target["mean"])], [float(target["std"])]
    for row in statistics["series"]:
        ids.append(SERIES_SEPARATOR.join(str(row[k]) for k in spec.series_keys))
        means.append(float(row["target_mean"]))
        stds.append(float(row["target_std"]))
    mean = np.asarray(means, dtype=np.float64)
    std = np.asarray(stds, dtype=np.float64)
    std = np.maximum(np.nan_to_num(std, nan=0.0), np.maximum(0.01 * np.abs(mean), 1e-6))
    return ids, mean.astype(np.float32), std.astype(np.float32)


def _numeric_scaling(
    spec: FeatureSpec, network: NetworkSpec, statistics: Mapping[str, Any]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Per numeric column: its kind (level/spread/log/z) and the offset and scale to apply."""
    kinds, names, offsets, scales = [], [], [], []
    for name in spec.numeric:
        stats = statistics["numeric"][name]
        if name in network.level_columns:
            kind, offset, scale = "level", 0.0, 1.0
        elif name in network.spread_columns:
            kind, offset, scale = "spread", 0.0, 1.0
        elif name in network.log_columns:
            q = {k: math.log1p(max(float(v), 0.0)) for k, v in stats["quantiles"].items()}
            kind, offset = "log", q["0.5"]
            scale = (q["0.9"] - q["0.1"]) / _NORMAL_P10_P90
        else:
            kind, offset, scale = "z", float(stats["mean"]), float(stats["std"] or 0.0)
        if not scale > 1e-12 or not math.isfinite(scale):
            scale = 1.0  # a constant column: centred, not scaled
        kinds.append(kind)
        names.append(name)
        offsets.append(offset)
        scales.append(scale)
    return kinds, names, np.asarray(offsets, np.float32), np.asarray(scales, np.float32)


def pinball_loss(levels: Sequence[float] = QUANTILE_LEVELS):
    """Keras loss: mean pinball loss over quantile levels; ``y_true [B, H]``, ``y_pred [B, H, Q]``.

    Rows whose target is NaN (none after preprocessing, but a caller may pass them) count 0.
    """
    import tensorflow as tf

    tau = tf.constant(levels, dtype=tf.float32)

    def loss(y_true, y_pred):
        y = tf.expand_dims(tf.cast(y_true, tf.float32), -1)
        known = tf.math.logical_not(tf.math.is_nan(y))
        err = tf.where(known, y, 0.0) - y_pred
        per = tf.maximum(tau * err, (tau - 1.0) * err)
        per = tf.where(known, per, 0.0)
        return tf.reduce_mean(per, axis=[-2, -1])

    loss.__name__ = "pinball"
    return loss


def build_network(
    spec: FeatureSpec,
    network: NetworkSpec,
    statistics: Mapping[str, Any],
    *,
    hidden_units: Sequence[int] | None = None,
    dropout: float | None = None,
    seed: int = 0,
):
    """The Keras (tf_keras) model: a dict of raw named inputs -> ``[batch, H, 3]`` quantiles.

    Args:
        spec: The feature dataset's columns (inputs are ``spec.feature_columns``).
        network: The use case's input roles and default sizes.
        statistics: ``statistics.json`` of the preprocessing step (training split).
        hidden_units: Override of ``network.hidden_units``.
        dropout: Override of ``network.dropout``.
        seed: Seed of the weight initialisers.

    Raises:
        ValueError: when a column of ``network`` is not a numeric column of ``spec``.
    """
    import tensorflow as tf
    import tf_keras as keras

    unknown = sorted(
        {*network.level_columns, *network.spread_columns, *network.log_columns} - set(spec.numeric)
    )
    if unknown:
        raise ValueError(f"network columns {unknown} are not numeric features of the dataset")
    if spec.target not in network.level_columns:
        raise ValueError(f"the target {spec.target!r} must be a level column (the residual base)")

    dtypes = input_dtypes(spec, statistics)
    inputs = {name: keras.Input(shape=(), dtype=dtype, name=name) for name, dtype in dtypes.items()}
    init = keras.initializers.GlorotUniform(seed=seed)

    # Per-series scale: look the series id up in the training series table.
    ids, series_mean, series_std = series_table(spec, statistics)
    key_strings = [
        tf.strings.as_string(inputs[k]) if dtypes[k] != "string" else inputs[k]
        for k in spec.series_keys
    ]
    series_id = keras.layers.Lambda(
        lambda parts: tf.strings.reduce_join(
            tf.stack(parts, axis=1), axis=1, separator=SERIES_SEPARATOR
        ),
        name="series_id",
    )(key_strings)
    series_index = keras.layers.StringLookup(
        vocabulary=ids, num_oov_indices=1, name="series_lookup"
    )(series_id)
    mean_s = _Gather(series_mean, name="series_mean")(series_index)
    std_s = _Gather(series_std, name="series_std")(series_index)

    # Numeric columns -> one scaled, clipped, NaN-free matrix.
    kinds, names, offsets, scales = _numeric_scaling(spec, network, statistics)
    raw = keras.layers.Lambda(
        lambda xs: tf.stack([tf.cast(x, tf.float32) for x in xs], axis=1), name="numeric_stack"
    )([inputs[n] for n in names])
    scaled = _ScaleNumeric(kinds, offsets, scales, name="numeric_scaling")([raw, mean_s, std_s])

    parts = [scaled]
    for name in spec.categorical:
        vocab = statistics["categorical"][name]["vocabulary"]
        if dtypes[name] == "string":
            index = keras.layers.StringLookup(
                vocabulary=[str(v) for v in vocab], num_oov_indices=1, name=f"{name}_lookup"
            )(inputs[name])
            dim = network.embedding_dims.get(name, 4)
            emb = keras.layers.Embedding(
                len(vocab) + 1, dim, embeddings_initializer=init, name=f"{name}_embedding"
            )(index)
            parts.append(emb)
        else:
            index = keras.layers.IntegerLookup(
                vocabulary=[int(v) for v in vocab],
                num_oov_indices=1,
                output_mode="one_hot",
                name=f"{name}_lookup",
            )(inputs[name])
            parts.append(index)

    x = keras.layers.Concatenate(name="features")(parts)
    for i, units in enumerate(hidden_units or network.hidden_units):
        x = keras.layers.Dense(
            units, activation="relu", kernel_initializer=init, name=f"hidden_{i}"
        )(x)
        rate = network.dropout if dropout is None else dropout
        if rate > 0:
            x = keras.layers.Dropout(rate, seed=seed + i, name=f"dropout_{i}")(x)
    horizon = spec.horizon
    deltas = keras.layers.Dense(
        horizon * len(QUANTILE_LEVELS),
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 101),
        name="quantile_head",
    )(x)
    base = _Column(names.index(spec.target), name="scaled_target_at_origin")(scaled)
    outputs = _QuantileOutput(horizon, name="quantiles")([deltas, base, mean_s, std_s])
    return keras.Model(inputs=inputs, outputs=outputs, name="forecaster")


# --- layers (defined lazily: tf_keras is imported only when a network is built) -------------


@functools.cache
def _layers():
    import tensorflow as tf
    import tf_keras as keras

    class Gather(keras.layers.Layer):
        """Looks an index up in a constant float table (per-series mean or std)."""

        def __init__(self, table, **kwargs):
            super().__init__(**kwargs)
            self.table = np.asarray(table, np.float32)

        def call(self, index):
            return tf.gather(tf.constant(self.table), index)

        def get_config(self):
            return {**super().get_config(), "table": self.table.tolist()}

    class ScaleNumeric(keras.layers.Layer):
        """Per-series level/spread scaling, log and z normalization, clip, NaN -> 0."""

        def __init__(self, kinds, offsets, scales, **kwargs):
            super().__init__(**kwargs)
            self.kinds = list(kinds)
            self.offsets = np.asarray(offsets, np.float32)
            self.scales = np.asarray(scales, np.float32)

        def call(self, args):
            raw, mean_s, std_s = args
            kinds = np.asarray(self.kinds)
            is_level = tf.constant(kinds == "level")
            is_spread = tf.constant(kinds == "spread")
            is_log = tf.constant(kinds == "log")
            mean_s = tf.expand_dims(mean_s, 1)
            std_s = tf.expand_dims(std_s, 1)
            offsets = tf.constant(self.offsets)
            scales = tf.constant(self.scales)
            logged = tf.math.log1p(tf.maximum(raw, 0.0))
            out = tf.where(
                is_level,
                (raw - mean_s) / std_s,
                tf.where(
                    is_spread,
                    raw / std_s,
                    tf.where(is_log, (logged - offsets) / scales, (raw - offsets) / scales),
                ),
            )
            out = tf.clip_by_value(out, -CLIP, CLIP)
            return tf.where(tf.math.is_nan(out), tf.zeros_like(out), out)

        def get_config(self):
            return {
                **super().get_config(),
                "kinds": self.kinds,
                "offsets": self.offsets.tolist(),
                "scales": self.scales.tolist(),
            }

    class Column(keras.layers.Layer):
        """One column of a matrix."""

        def __init__(self, index, **kwargs):
            super().__init__(**kwargs)
            self.index = int(index)

        def call(self, x):
            return x[:, self.index]

        def get_config(self):
            return {**super().get_config(), "index": self.index}

    class QuantileOutput(keras.layers.Layer):
        """Deltas -> non-crossing P10/P50/P90 in the target's units, clipped at 0."""

        def __init__(self, horizon, **kwargs):
            super().__init__(**kwargs)
            self.horizon = int(horizon)

        def call(self, args):
            deltas, base, mean_s, std_s = args
            d = tf.reshape(deltas, [-1, self.horizon, 3])
            p50 = tf.expand_dims(base, 1) + d[:, :, 1]
            p10 = p50 - tf.nn.softplus(d[:, :, 0])
            p90 = p50 + tf.nn.softplus(d[:, :, 2])
            scaled = tf.stack([p10, p50, p90], axis=-1)
            mean = tf.reshape(mean_s, [-1, 1, 1])
            std = tf.reshape(std_s, [-1, 1, 1])
            return tf.maximum(scaled * std + mean, 0.0)

        def get_config(self):
            return {**super().get_config(), "horizon": self.horizon}

    return Gather, ScaleNumeric, Column, QuantileOutput


def _Gather(table, **kwargs):
    return _layers()[0](table, **kwargs)


def _ScaleNumeric(kinds, offsets, scales, **kwargs):
    return _layers()[1](kinds, offsets, scales, **kwargs)


def _Column(index, **kwargs):
    return _layers()[2](index, **kwargs)


def _QuantileOutput(horizon, **kwargs):
    return _layers()[3](horizon, **kwargs)
