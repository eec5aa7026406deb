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
* **Seasonal profile** (``season_phase`` and ``level_column``): a lookup table, computed from
  the training rows when the network is built, of each series' mean deviation from its level
  ``(y − level) / std_s`` at every position of the season (week of year, month); the position
  of the origin comes from the calendar sine/cosine inputs, that of the target period is h
  positions later.
* **Output**: the network predicts in the series' scaled space a residual on a base that mixes,
  with learned weights per horizon (softmax), the scaled value at the origin (persistence),
  last season's value of the target period (``seasonal_lag``) and the level plus the seasonal
  profile of the target period (the last two when the use case has them); P50 plus non-negative
  offsets down to P10 and up to P90 (quantiles never cross), then maps back to the target's
  units and clips at 0 (demand and biomass are never negative): ``[batch, H, 3]``.

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
from typing import Any, Literal

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
        seasonal_lag: Format of the lag columns (``"demand_lag_{k}"``) and the season length
            m: the residual base of horizon h mixes the value at the origin with last season's
            value of the target period (lag ``m − h``), one learned weight per horizon. None:
            the base is the value at the origin (persistence).
        season_phase: The calendar sine and cosine columns (angle ``2π · position / period``)
            and the number of season positions m, for the seasonal profile.
        level_column: The series' current level (e.g. a 52-week rolling mean, a level column),
            for the seasonal profile and for ``scale_by="level"``.
        scale_by: ``"series"``: centre and scale are the series' training target mean and
            standard deviation; ``"level"``: both are the row's current level (mean scaling,
            as in DeepAR: values become relative to the recent level, so a series that has
            grown since training stays in the range the network saw).
    """

    level_columns: tuple[str, ...]
    spread_columns: tuple[str, ...] = ()
    log_columns: tuple[str, ...] = ()
    embedding_dims: Mapping[str, int] = field(default_factory=dict)
    hidden_units: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    seasonal_lag: tuple[str, int] | None = None
    season_phase: tuple[str, str, int] | None = None
    level_column: str | None = None
    scale_by: Literal["series", "level"] = "series"


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


def series_rows(
    inputs: Mapping[str, np.ndarray], spec: FeatureSpec, statistics: Mapping[str, Any]
) -> np.ndarray:
    """Row of each input row's series in the ``series_table`` arrays (0: unknown series)."""
    ids = series_table(spec, statistics)[0]
    index = {s: i + 1 for i, s in enumerate(ids)}
    keys = zip(*(np.asarray(inputs[k]).astype(str) for k in spec.series_keys), strict=True)
    return np.array([index.get(s, 0) for s in series_ids(keys)], dtype=np.int64)


def row_scale(
    inputs: Mapping[str, np.ndarray],
    spec: FeatureSpec,
    network: NetworkSpec,
    statistics: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of every row (numpy twin of the graph's ``RowScale``).

    The training loss weights rows by ``1 / scale`` (the pinball loss in the scaled space).
    """
    _, mean, std = series_table(spec, statistics)
    rows = series_rows(inputs, spec, statistics)
    if network.scale_by == "level":
        level = np.asarray(inputs[network.level_column], dtype=np.float32)
        scale = np.maximum(np.abs(level), np.maximum(0.01 * np.abs(mean[rows]), 1e-6))
        return level, scale.astype(np.float32)
    return mean[rows], std[rows]


def season_position(sin: np.ndarray, cos: np.ndarray, positions: int) -> np.ndarray:
    """Season position 0..m−1 from the calendar angle's sine and cosine (as in the graph)."""
    frac = np.mod(np.arctan2(sin, cos) / (2 * np.pi), 1.0)
    return np.mod(np.rint(frac * positions), positions).astype(np.int64)


def seasonal_profile(
    inputs: Mapping[str, np.ndarray],
    spec: FeatureSpec,
    network: NetworkSpec,
    statistics: Mapping[str, Any],
) -> np.ndarray | None:
    """Mean ``(y − level) / scale`` per series and season position on the training rows.

    Args:
        inputs: Raw input columns of the training rows (the target at the origin among them).
        spec: The feature spec.
        network: The use case's network spec.
        statistics: ``statistics.json`` of the preprocessing step.

    Returns:
        ``[series + 1, m]`` float32 (row 0, the unknown series, is 0), or None when the use
        case has no ``season_phase``/``level_column``.
    """
    if network.season_phase is None or network.level_column is None:
        return None
    sin_col, cos_col, m = network.season_phase
    rows = series_rows(inputs, spec, statistics)
    pos = season_position(np.asarray(inputs[sin_col]), np.asarray(inputs[cos_col]), m)
    _, scale = row_scale(inputs, spec, network, statistics)
    dev = np.asarray(inputs[spec.target], float) - np.asarray(inputs[network.level_column], float)
    dev = dev / scale
    ok = np.isfinite(dev)
    size = len(statistics["series"]) + 1
    sums = np.zeros((size, m))
    counts = np.zeros((size, m))
    np.add.at(sums, (rows[ok], pos[ok]), dev[ok])
    np.add.at(counts, (rows[ok], pos[ok]), 1.0)
    profile = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    profile[0] = 0.0
    return np.clip(profile, -CLIP, CLIP).astype(np.float32)


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
    profile: np.ndarray | None = None,
):
    """The Keras (tf_keras) model: a dict of raw named inputs -> ``[batch, H, 3]`` quantiles.

    Args:
        spec: The feature dataset's columns (inputs are ``spec.feature_columns``).
        network: The use case's input roles and default sizes.
        statistics: ``statistics.json`` of the preprocessing step (training split).
        hidden_units: Override of ``network.hidden_units``.
        dropout: Override of ``network.dropout``.
        seed: Seed of the weight initialisers.
        profile: The seasonal profile table (``seasonal_profile`` on the training rows); None
            leaves that base out.

    Columns of ``network`` that ``spec`` lacks are ignored (a use case may list the lags of
    every horizon; a dataset holds those of its own).

    Raises:
        ValueError: when the target is not one of ``network.level_columns``.
    """
    import tensorflow as tf
    import tf_keras as keras

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
    level_index = names.index(network.level_column) if network.scale_by == "level" else -1
    if network.scale_by == "level" and network.level_column not in names:
        raise ValueError(f"scale_by='level' needs the level column {network.level_column!r}")
    center, scale = _RowScale(level_index, name="row_scale")([raw, mean_s, std_s])
    scaled = _ScaleNumeric(kinds, offsets, scales, name="numeric_scaling")([raw, center, scale])

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
    current = names.index(spec.target)
    seasonal = None
    if network.seasonal_lag is not None:
        fmt, season = network.seasonal_lag
        seasonal = [current] * horizon
        for h in range(1, horizon + 1):
            lag = season - h
            column = spec.target if lag == 0 else fmt.format(k=lag)
            if lag >= 0 and column in names:
                seasonal[h - 1] = names.index(column)
    phase = None
    if profile is not None and network.season_phase and network.level_column in names:
        sin_col, cos_col, _ = network.season_phase
        phase = (names.index(sin_col), names.index(cos_col), names.index(network.level_column))
    bases = _Bases(horizon, current, seasonal, phase, profile, name="bases")(
        [raw, scaled, series_index]
    )
    outputs = _QuantileOutput(horizon, name="quantiles")([deltas, bases, center, scale])
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

    class RowScale(keras.layers.Layer):
        """Centre and scale per row: the series' (mean, std), or (level, |level|) floored."""

        def __init__(self, level_index, **kwargs):
            super().__init__(**kwargs)
            self.level_index = int(level_index)

        def call(self, args):
            raw, mean_s, std_s = args
            if self.level_index < 0:
                return mean_s, std_s
            level = raw[:, self.level_index]
            floor = tf.maximum(0.01 * tf.abs(mean_s), 1e-6)
            return level, tf.maximum(tf.abs(level), floor)

        def get_config(self):
            return {**super().get_config(), "level_index": self.level_index}

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

    class Bases(keras.layers.Layer):
        """The candidate bases of the P50 per horizon, in the scaled space: ``[B, H, K]``.

        Persistence (the value at the origin), last season's value of the target period, and
        the level plus the seasonal profile of the target period (when configured).
        """

        def __init__(self, horizon, current, seasonal, phase, profile, **kwargs):
            super().__init__(**kwargs)
            self.horizon = int(horizon)
            self.current = int(current)
            self.seasonal = None if seasonal is None else [int(i) for i in seasonal]
            self.phase = None if phase is None else [int(i) for i in phase]
            self.profile = None if profile is None else np.asarray(profile, np.float32)

        def call(self, args):
            raw, scaled, series_index = args
            current = tf.tile(scaled[:, self.current : self.current + 1], [1, self.horizon])
            bases = [current]
            if self.seasonal is not None:
                bases.append(tf.gather(scaled, self.seasonal, axis=1))
            if self.phase is not None:
                sin_i, cos_i, level_i = self.phase
                m = self.profile.shape[1]
                angle = tf.math.atan2(raw[:, sin_i], raw[:, cos_i]) / (2 * np.pi)
                frac = angle - tf.floor(angle)
                pos = tf.math.floormod(tf.cast(tf.round(frac * m), tf.int64), m)
                steps = tf.range(1, self.horizon + 1, dtype=tf.int64)
                target_pos = tf.math.floormod(pos[:, None] + steps[None, :], m)
                rows = tf.tile(tf.cast(series_index, tf.int64)[:, None], [1, self.horizon])
                profile = tf.gather_nd(
                    tf.constant(self.profile), tf.stack([rows, target_pos], axis=-1)
                )
                bases.append(scaled[:, level_i : level_i + 1] + profile)
            return tf.stack(bases, axis=-1)

        def get_config(self):
            return {
                **super().get_config(),
                "horizon": self.horizon,
                "current": self.current,
                "seasonal": self.seasonal,
                "phase": self.phase,
                "profile": None if self.profile is None else self.profile.tolist(),
            }

    class QuantileOutput(keras.layers.Layer):
        """Deltas and bases -> non-crossing P10/P50/P90 in the target's units, clipped at 0.

        The P50 of horizon h is a residual on the bases mixed with learned softmax weights.
        """

        def __init__(self, horizon, **kwargs):
            super().__init__(**kwargs)
            self.horizon = int(horizon)

        def build(self, input_shape):
            bases = int(input_shape[1][-1])
            self.mix = self.add_weight(
                name="base_logits", shape=(self.horizon, bases), initializer="zeros"
            )
            super().build(input_shape)

        def call(self, args):
            deltas, bases, mean_s, std_s = args
            base = tf.reduce_sum(bases * tf.nn.softmax(self.mix, axis=-1), axis=-1)
            d = tf.reshape(deltas, [-1, self.horizon, 3])
            p50 = base + d[:, :, 1]
            p10 = p50 - tf.nn.softplus(d[:, :, 0])
            p90 = p50 + tf.nn.softplus(d[:, :, 2])
            out = tf.stack([p10, p50, p90], axis=-1)
            mean = tf.reshape(mean_s, [-1, 1, 1])
            std = tf.reshape(std_s, [-1, 1, 1])
            return tf.maximum(out * std + mean, 0.0)

        def get_config(self):
            return {**super().get_config(), "horizon": self.horizon}

    return Gather, ScaleNumeric, Bases, QuantileOutput, RowScale


def _Gather(table, **kwargs):
    return _layers()[0](table, **kwargs)


def _ScaleNumeric(kinds, offsets, scales, **kwargs):
    return _layers()[1](kinds, offsets, scales, **kwargs)


def _Bases(horizon, current, seasonal, phase, profile, **kwargs):
    return _layers()[2](horizon, current, seasonal, phase, profile, **kwargs)


def _QuantileOutput(horizon, **kwargs):
    return _layers()[3](horizon, **kwargs)


def _RowScale(level_index, **kwargs):
    return _layers()[4](level_index, **kwargs)
