"""Streaming column statistics of Arrow data, and drift between two sets of statistics.

One pass over record batches with bounded memory: counts, nulls, NaN, min, max, mean and standard
deviation are exact (Chan's parallel update); quantiles and histograms come from a uniform row
sample of at most ``sample_rows`` rows (bottom-k of random keys), so they are exact for tables that
fit in the sample and approximate beyond. The validate step writes these statistics as
``statistics.json``; a later validation compares against them (``--reference-stats``), and
monitoring can compare serving inputs the same way.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 10  # decile bins: the usual resolution for PSI
DISTINCT_CAP = 10_000  # stop counting distinct values of free-text columns beyond this
PSI_FLOOR = 1e-4  # share used for empty bins, so PSI stays finite


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def float_values(arr: pa.Array) -> np.ndarray:
    """The values of a numeric Arrow array as float64, nulls as NaN."""
    values = arr.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


class NumericStats:
    """Count, missing, min, max, mean and standard deviation of a numeric column, exactly.

    Args:
        reference_edges: Inner bin edges of the reference histogram; when given, the exact share
            of values per reference bin is counted too (for PSI).
    """

    def __init__(self, reference_edges: list[float] | None = None) -> None:
        self.count = 0
        self.nulls = 0
        self.nans = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.edges = np.asarray(reference_edges, dtype=np.float64) if reference_edges else None
        self.bins = (
            np.zeros(len(self.edges) + 1, dtype=np.int64) if self.edges is not None else None
        )

    def update(self, arr: pa.Array) -> None:
        self.nulls += arr.null_count
        values = float_values(arr)
        missing = np.isnan(values)
        self.nans += int(missing.sum()) - arr.null_count
        values = values[~missing]
        n = len(values)
        if n == 0:
            return
        # Chan et al.: merge this batch's mean and sum of squared deviations into the running ones.
        mean_b = float(values.mean())
        m2_b = float(((values - mean_b) ** 2).sum())
        total = self.count + n
        delta = mean_b - self.mean
        self.mean += delta * n / total
        self.m2 += m2_b + delta * delta * self.count * n / total
        self.count = total
        low, high = float(values.min()), float(values.max())
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        if self.edges is not None and self.bins is not None:
            self.bins += np.bincount(
                np.searchsorted(self.edges, values, side="right"), minlength=len(self.bins)
            )

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1, as pandas)."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else None

    def reference_shares(self) -> list[float] | None:
        """Share of values in each reference bin (exact), or None without a reference."""
        if self.bins is None or self.count == 0:
            return None
        return (self.bins / self.bins.sum()).tolist()

    def to_dict(self, sample: np.ndarray | None, exact: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count,
            "nulls": self.nulls,
            "nans": self.nans,
            "mean": _finite_or_none(self.mean) if self.count else None,
            "std": _finite_or_none(self.std),
            "min": self.min,
            "max": self.max,
        }
        if sample is not None:
            sample = sample[~np.isnan(sample)]
        if sample is not None and len(sample):
            values = np.quantile(sample, QUANTILES)
            out["quantiles"] = {str(q): float(v) for q, v in zip(QUANTILES, values, strict=True)}
            out["quantiles_exact"] = exact
            out["histogram"] = histogram(sample)
        return out


def histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, list[float]]:
    """Quantile-bin histogram: inner edges at the deciles, and the share of values per bin."""
    inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
    return {"edges": inner.tolist(), "shares": (counts / counts.sum()).tolist()}


class CategoryStats:
    """Count, nulls and value counts of a string column (distinct values capped)."""

    def __init__(self) -> None:
        self.count = 0
        self.nulls = 0
        self.values: Counter[str] = Counter()
        self.truncated = False

    def update(self, arr: pa.Array) -> None:
        self.nulls += arr.null_count
        self.count += len(arr) - arr.null_count
        if self.truncated:
            return
        counts = pc.value_counts(arr.drop_null())
        for value, n in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        ):
            self.values[value] += n
        if len(self.values) > DISTINCT_CAP:
            self.truncated = True
            self.values.clear()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "nulls": self.nulls}
        if self.truncated:
            out["distinct"] = f">{DISTINCT_CAP}"
        else:
            out["distinct"] = len(self.values)
            out["values"] = dict(sorted(self.values.items(), key=lambda kv: (-kv[1], kv[0])))
        return out


class DateStats:
    """Count, nulls, first and last date, and the number of distinct dates."""

    def __init__(self) -> None:
        self.count = 0
        self.nulls = 0
        self.min: dt.date | None = None
        self.max: dt.date | None = None
        self.distinct: set[dt.date] = set()
        self.truncated = False

    def update(self, arr: pa.Array) -> None:
        self.nulls += arr.null_count
        self.count += len(arr) - arr.null_count
        if self.count == 0:
            return
        bounds = pc.min_max(arr)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None:
            self.min = low if self.min is None else min(self.min, low)
            self.max = high if self.max is None else max(self.max, high)
        if not self.truncated:
            self.distinct.update(pc.unique(arr.drop_null()).to_pylist())
            if len(self.distinct) > DISTINCT_CAP * 10:
                self.truncated, self.distinct = True, set()

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "nulls": self.nulls,
            "min": self.min.isoformat() if self.min else None,
            "max": self.max.isoformat() if self.max else None,
            "distinct": f">{DISTINCT_CAP * 10}" if self.truncated else len(self.distinct),
        }


class BoolStats:
    def __init__(self) -> None:
        self.count = 0
        self.nulls = 0
        self.true = 0

    def update(self, arr: pa.Array) -> None:
        self.nulls += arr.null_count
        self.count += len(arr) - arr.null_count
        self.true += int(pc.sum(arr).as_py() or 0)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "nulls": self.nulls, "true": self.true}


ColumnStats = NumericStats | CategoryStats | DateStats | BoolStats


def column_stats(dtype: str, reference: dict[str, Any] | None = None) -> ColumnStats:
    """A statistics accumulator for a column of logical type ``dtype`` (see ``models.base``).

    Args:
        dtype: ``float64``, ``int32``, ``int64``, ``string``, ``date`` or ``bool``.
        reference: The column's entry in a reference ``statistics.json``, if any.
    """
    if dtype in ("float64", "int32", "int64"):
        edges = (reference or {}).get("histogram", {}).get("edges")
        return NumericStats(edges)
    if dtype == "string":
        return CategoryStats()
    if dtype == "date":
        return DateStats()
    return BoolStats()


class RowSample:
    """A uniform random sample of at most ``size`` rows of a stream of record batches.

    Every row gets a random key and the ``size`` rows with the smallest keys are kept (bottom-k
    sampling), so the sample is uniform without knowing the row count up front, and it holds every
    row when the stream is shorter than ``size``. Seeded: the same data gives the same sample (an
    odd default seed, so that data drawn with a small seed is not correlated with the keys).
    """

    def __init__(self, size: int, seed: int = 0x5A3B1E) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.table: pa.Table | None = None
        self.keys = np.empty(0)
        self.seen = 0

    @property
    def exact(self) -> bool:
        """True while the sample holds every row seen."""
        return self.seen <= self.size

    def update(self, batch: pa.RecordBatch) -> None:
        keys = self.rng.random(batch.num_rows)
        self.seen += batch.num_rows
        if len(self.keys) >= self.size:
            keep = keys < np.partition(self.keys, self.size - 1)[self.size - 1]
            if not keep.any():
                return
            batch, keys = batch.filter(pa.array(keep)), keys[keep]
        new = pa.Table.from_batches([batch])
        self.table = new if self.table is None else pa.concat_tables([self.table, new])
        self.keys = np.concatenate([self.keys, keys])
        if len(self.keys) > 2 * self.size:  # prune now and then: a take per batch is costly
            self._prune()

    def _prune(self) -> None:
        if self.table is not None and len(self.keys) > self.size:
            kept = np.argpartition(self.keys, self.size - 1)[: self.size]
            self.table = self.table.take(pa.array(kept))
            self.keys = self.keys[kept]

    def column(self, name: str) -> np.ndarray | None:
        """A sampled numeric column as float64 (NaN for nulls)."""
        self._prune()
        if self.table is None or name not in self.table.column_names:
            return None
        return float_values(self.table.column(name).combine_chunks())


def psi(expected: list[float] | np.ndarray, actual: list[float] | np.ndarray) -> float:
    """Population stability index of ``actual`` shares against ``expected`` shares (same bins).

    Rule of thumb: below 0.1 stable, 0.1-0.2 moderate shift, above 0.2 a significant shift.
    """
    e = np.clip(np.asarray(expected, dtype=np.float64), PSI_FLOOR, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), PSI_FLOOR, None)
    return float(((a - e) * np.log(a / e)).sum())


def numeric_drift(
    reference: dict[str, Any], current: dict[str, Any], current_shares: list[float] | None
) -> dict[str, float | None]:
    """Mean shift in reference standard deviations and PSI over the reference's decile bins."""
    out: dict[str, float | None] = {"mean_shift_sd": None, "psi": None}
    ref_mean, ref_std, cur_mean = reference.get("mean"), reference.get("std"), current.get("mean")
    if ref_mean is not None and cur_mean is not None:
        if ref_std:
            out["mean_shift_sd"] = abs(cur_mean - ref_mean) / ref_std
        elif cur_mean != ref_mean:
            out["mean_shift_sd"] = math.inf
        else:
            out["mean_shift_sd"] = 0.0
    ref_hist = reference.get("histogram")
    if ref_hist and current_shares is not None:
        out["psi"] = psi(ref_hist["shares"], current_shares)
    return out


def category_drift(reference: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Largest change of a category's share, which category, and PSI over the categories."""
    ref_values, cur_values = reference.get("values"), current.get("values")
    if not ref_values or not cur_values:
        return {"max_share_change": None, "psi": None, "category": None}
    ref_total, cur_total = sum(ref_values.values()), sum(cur_values.values())
    names = sorted(set(ref_values) | set(cur_values))
    ref_shares = np.array([ref_values.get(n, 0) / ref_total for n in names])
    cur_shares = np.array([cur_values.get(n, 0) / cur_total for n in names])
    change = np.abs(cur_shares - ref_shares)
    worst = int(change.argmax())
    return {
        "max_share_change": float(change[worst]),
        "category": names[worst],
        "psi": psi(ref_shares, cur_shares),
    }
