"""Drift of served inputs against the training data: PSI and a two-sample or goodness-of-fit test.

The reference is what the preprocess step wrote from the training split: ``statistics.json``
(per numeric feature the quantiles at 0.01 .. 0.99, per categorical feature the counts of each
value) and, when available, ``reference_sample.parquet`` (up to 2,000 training rows). The
current data is a frame of served inputs, typically `perucast.prediction_logs.read_predictions`.

Numeric features are binned at the training quantiles, so the expected share of each bin is
known from the quantile levels alone (0.01, 0.04, 0.05, 0.15, 0.25, 0.25, 0.15, 0.05, 0.04,
0.01); the population stability index (PSI) compares the served shares with them. The test is
the two-sample Kolmogorov-Smirnov test against the reference sample when there is one, else a
chi-square goodness-of-fit test of the served counts in the quantile bins. Categorical features
(series keys such as region, crop and zone, and integer codes) compare category shares with
the training counts, with one extra category for values the training split never had
(``(unseen)``), by PSI and a chi-square test.

A feature is flagged as drifted only when PSI >= ``psi_threshold`` *and* p < ``p_value``:

* at the request volumes of a serving log (tens of thousands of rows) every test rejects on
  shifts far too small to matter, so significance alone flags everything eventually;
* PSI measures how large the shift is but is noisy at small n (a few hundred rows over ten bins
  give PSI around 0.02-0.05 from sampling alone, and more with sparse categories), so a large
  PSI from few rows needs the test to confirm it is not chance.

Features with fewer than ``min_rows`` served values are reported as ``"insufficient data"`` and
never flagged.

Point masses: a numeric feature with ties (flags, counts) has repeated quantiles. Repeated
edges are merged and the bin up to a value v gets the highest level whose quantile is v as its
cumulative share (F(v) lies between that level and the next one, so this is an estimate), and
a last edge at the training maximum gets cumulative share 1. The KS test against the sample is
exact either way.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

PSI_FLOOR = 1e-4
UNSEEN = "(unseen)"
TARGET_COLUMN = re.compile(r"target_h\d+")

Kind = Literal["numeric", "categorical"]
Status = Literal["ok", "drifted", "insufficient data"]


class DriftConfig(BaseModel):
    """When a feature counts as drifted (see the module docstring for why both thresholds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi_threshold: float = Field(
        default=0.25, gt=0, description="PSI at or above this is a large shift."
    )
    p_value: float = Field(
        default=0.01, gt=0, lt=1, description="The test must reject at this level."
    )
    min_rows: int = Field(
        default=50, ge=1, description="Fewer served values: 'insufficient data', never flagged."
    )
    min_periods: int = Field(
        default=3,
        ge=2,
        description="Distinct values a period input needs in the window to be tested.",
    )


@dataclass
class FeatureDrift:
    """The drift of one feature.

    Attributes:
        feature: Column name.
        kind: ``"numeric"`` or ``"categorical"``.
        n_reference: Training rows the statistics were computed on.
        n_current: Served values (missing values left out).
        psi: Population stability index over ``bins`` (None without served values).
        test: ``"ks_2samp"`` (numeric, against the reference sample), ``"chisquare"``
            (numeric without a sample: goodness of fit in the quantile bins; categorical:
            counts against the training shares), or None when not run (insufficient data).
        statistic: The test statistic (KS D, or chi-square).
        p_value: The test's p-value.
        drifted: PSI >= threshold and p < p_value, with enough data.
        status: ``"ok"``, ``"drifted"`` or ``"insufficient data"``.
        bins: Bin labels (``"(1.29, 3.2]"``) or categories, ``"(unseen)"`` last.
        reference_shares: Expected share of each bin from the training statistics.
        current_shares: Served share of each bin.
        reference_mean: Training mean (numeric only).
        current_mean: Served mean (numeric only).
        n_reference_sample: Rows of the reference sample the KS test used.
    """

    feature: str
    kind: Kind
    n_reference: int
    n_current: int
    psi: float | None
    test: str | None
    statistic: float | None
    p_value: float | None
    drifted: bool
    status: Status
    bins: list[str]
    reference_shares: list[float]
    current_shares: list[float]
    reference_mean: float | None = None
    current_mean: float | None = None
    n_reference_sample: int | None = None
    unit: str = "instance"
    n_periods: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def psi(
    expected_shares: Sequence[float] | np.ndarray,
    actual_shares: Sequence[float] | np.ndarray,
    eps: float = PSI_FLOOR,
) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e).

    Both shares are floored at ``eps`` first (no renormalisation) so empty bins stay finite:
    with the default 1e-4, a bin expected to hold 1 % that is empty adds 0.01 * ln(100) = 0.046,
    and a category never seen in training that takes a share a adds about a * ln(a / 1e-4).

    Rule of thumb: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a large one.

    Raises:
        ValueError: the two have different numbers of bins.
    """
    e = np.asarray(expected_shares, dtype=np.float64)
    a = np.asarray(actual_shares, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"expected {e.shape[0]} bins, actual {a.shape[0]}")
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    return float(((a - e) * np.log(a / e)).sum())


def chisquare_test(
    observed_counts: Sequence[float] | np.ndarray,
    expected_shares: Sequence[float] | np.ndarray,
    eps: float = PSI_FLOOR,
) -> tuple[float, float]:
    """Chi-square goodness of fit of counts against shares: (statistic, p-value).

    Bins that are empty in both are left out; an expected share of 0 is floored at ``eps`` (a
    value never seen in training then weighs heavily, as it should) and the shares are
    rescaled to the observed total. Fewer than two bins: (0, 1).
    """
    from scipy.stats import chisquare

    o = np.asarray(observed_counts, dtype=np.float64)
    e = np.asarray(expected_shares, dtype=np.float64)
    keep = (o > 0) | (e > 0)
    o, e = o[keep], e[keep]
    if len(o) < 2 or o.sum() == 0:
        return 0.0, 1.0
    e = np.maximum(e, eps)
    result = chisquare(o, e / e.sum() * o.sum())
    return float(result.statistic), float(result.pvalue)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@dataclass
class _Reference:
    """One feature's bins and expected shares from ``statistics.json``."""

    feature: str
    kind: Kind
    labels: list[str]
    expected: np.ndarray
    n: int
    mean: float | None = None
    edges: np.ndarray | None = None  # numeric: bin i is (edges[i-1], edges[i]]
    index: dict[str, int] | None = None  # categorical: key -> bin
    estimated: bool = False  # numeric with ties: the expected shares are estimates

    @classmethod
    def numeric(cls, feature: str, entry: Mapping[str, Any]) -> _Reference:
        points = sorted(
            (float(level), float(value))
            for level, value in entry["quantiles"].items()
            if value is not None and math.isfinite(float(value))
        )
        edges: list[float] = []
        cdf: list[float] = []
        estimated = False
        for level, value in points:
            value = max(value, edges[-1]) if edges else value  # quantiles never decrease
            if edges and value == edges[-1]:
                cdf[-1] = level  # a repeated quantile: the mass up to it reaches this level
                estimated = True
            else:
                edges.append(value)
                cdf.append(level)
        maximum = entry.get("max")
        if edges and maximum is not None and edges[-1] >= float(maximum):
            cdf[-1] = 1.0  # nothing in training lay above the maximum
        expected = np.diff([0.0, *cdf, 1.0])
        if edges:
            labels = [f"<= {_fmt(edges[0])}"]
            labels += [f"({_fmt(a)}, {_fmt(b)}]" for a, b in itertools.pairwise(edges)]
            labels.append(f"> {_fmt(edges[-1])}")
        else:
            labels = ["all"]
        return cls(
            feature,
            "numeric",
            labels,
            expected,
            int(entry.get("count") or 0),
            mean=entry.get("mean"),
            edges=_float32(np.asarray(edges, dtype=np.float64)),
            estimated=estimated,
        )

    @classmethod
    def categorical(cls, feature: str, entry: Mapping[str, Any]) -> _Reference:
        counts = {str(k): int(v) for k, v in entry["counts"].items()}
        keys = [_category_key(v) for v in entry.get("vocabulary", counts)]
        keys = [k for k in dict.fromkeys(keys) if k in counts]
        keys += [k for k in counts if k not in keys]
        total = sum(counts.values())
        shares = [counts[k] / total if total else 0.0 for k in keys]
        return cls(
            feature,
            "categorical",
            [*keys, UNSEEN],
            np.asarray([*shares, 0.0]),
            total,
            index={k: i for i, k in enumerate(keys)},
        )

    def clean(self, values: pd.Series) -> np.ndarray:
        """Values without missing ones: float64 at float32 precision, or category keys.

        Served inputs are float32 (the signature's dtype) and the training data float64: both
        are compared at float32 precision, or a value with ties (a flag, a closed season's 0
        catch) would differ in its last bits and every test would reject.
        """
        if self.kind == "numeric":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            return _float32(numbers[~np.isnan(numbers)])
        return _category_keys(values.dropna())

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Served values per bin."""
        if self.kind == "numeric":
            assert self.edges is not None
            bins = np.searchsorted(self.edges, values, side="left")
            return np.bincount(bins, minlength=len(self.labels)).astype(np.float64)
        assert self.index is not None
        counts = np.zeros(len(self.labels))
        unseen = len(self.labels) - 1
        keys, n = np.unique(values.astype(str), return_counts=True) if len(values) else ([], [])
        for key, count in zip(keys, n, strict=True):
            counts[self.index.get(str(key), unseen)] += count
        return counts


def _float32(values: np.ndarray) -> np.ndarray:
    """float64 values rounded to float32 precision (what the served request carried)."""
    return values.astype(np.float32).astype(np.float64)


def _category_keys(values: pd.Series) -> np.ndarray:
    """`_category_key` of each value, vectorised for the usual dtypes (no missing values)."""
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.astype(str).to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(dtype=np.float64)
        whole = np.isfinite(numbers) & (numbers == np.floor(numbers))
        keys = values.astype(str).to_numpy(dtype=object)
        keys[whole] = numbers[whole].astype(np.int64).astype(str)
        return keys
    if pd.api.types.is_string_dtype(values) and values.dtype != object:
        return values.to_numpy(dtype=object)
    return np.asarray([_category_key(v) for v in values], dtype=object)


def _category_key(value: Any) -> str:
    """A category as ``statistics.json`` keys it: ``str`` of the value; bytes decoded and
    whole floats as integers (an int64 code read back as 3.0 is category "3")."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def load_statistics(statistics: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    """``statistics.json`` as a dict: a mapping is returned as is, a directory or file is read."""
    if isinstance(statistics, Mapping):
        return statistics
    path = Path(statistics)
    if path.is_dir():
        path = path / "statistics.json"
    return json.loads(path.read_text())


def exempt_columns(columns: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The ``columns`` matching any fnmatch pattern (a use case's ``calendar_inputs``)."""
    return [c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


def _references(
    statistics: Mapping[str, Any], columns: Sequence[str], exempt: Sequence[str] = ()
) -> list[_Reference]:
    """The features of ``statistics`` that ``columns`` has, categorical first, targets and the
    ``exempt`` patterns left out."""
    present = set(columns) - set(exempt_columns(list(columns), exempt))
    refs = [
        _Reference.categorical(name, entry)
        for name, entry in statistics.get("categorical", {}).items()
        if name in present
    ]
    refs += [
        _Reference.numeric(name, entry)
        for name, entry in statistics.get("numeric", {}).items()
        if name in present and not TARGET_COLUMN.fullmatch(name)
    ]
    return refs


def _sample(reference_sample: pd.DataFrame | str | Path | None) -> pd.DataFrame | None:
    if reference_sample is None or isinstance(reference_sample, pd.DataFrame):
        return reference_sample
    path = Path(reference_sample)
    if path.is_dir():
        path = path / "reference_sample.parquet"
    return pd.read_parquet(path)


def _feature(
    ref: _Reference, values: np.ndarray, sample: pd.DataFrame | None, config: DriftConfig
) -> FeatureDrift:
    n = len(values)
    counts = ref.counts(values)
    shares = counts / n if n else np.zeros_like(counts)
    result = FeatureDrift(
        feature=ref.feature,
        kind=ref.kind,
        n_reference=ref.n,
        n_current=n,
        psi=psi(ref.expected, shares) if n else None,
        test=None,
        statistic=None,
        p_value=None,
        drifted=False,
        status="insufficient data",
        bins=list(ref.labels),
        reference_shares=[float(x) for x in ref.expected],
        current_shares=[float(x) for x in shares],
        reference_mean=ref.mean,
        current_mean=float(values.mean()) if ref.kind == "numeric" and n else None,
    )
    if n < config.min_rows:
        return result
    reference = None
    if ref.kind == "numeric" and sample is not None and ref.feature in sample.columns:
        reference = ref.clean(sample[ref.feature])
    return _test(result, ref, values, reference, config)


def _test(
    result: FeatureDrift,
    ref: _Reference,
    values: np.ndarray,
    reference: np.ndarray | None,
    config: DriftConfig,
) -> FeatureDrift:
    """Runs KS against ``reference`` values (or chi-square on the bins) and flags the feature
    when its PSI and the test agree."""
    if reference is not None:
        from scipy.stats import ks_2samp

        test = ks_2samp(reference, values)
        result.test, result.n_reference_sample = "ks_2samp", len(reference)
        result.statistic, result.p_value = float(test.statistic), float(test.pvalue)
    else:
        result.test = "chisquare"
        result.statistic, result.p_value = chisquare_test(ref.counts(values), ref.expected)
    assert result.psi is not None
    result.drifted = result.psi >= config.psi_threshold and result.p_value < config.p_value
    result.status = "drifted" if result.drifted else "ok"
    return result


def feature_drift(
    statistics: Mapping[str, Any] | str | Path,
    current: pd.DataFrame,
    *,
    reference_sample: pd.DataFrame | str | Path | None = None,
    config: DriftConfig | None = None,
    exempt: Sequence[str] = (),
    period_inputs: Sequence[str] = (),
) -> list[FeatureDrift]:
    """Drift of each feature in both ``statistics`` and ``current``.

    Args:
        statistics: The preprocess step's ``statistics.json`` (dict, file, or its directory).
        current: Served inputs, one row per instance; columns that are not features in the
            statistics (time, model spec, outputs) and ``target_h*`` are ignored.
        reference_sample: ``reference_sample.parquet`` (frame, file, or its directory): numeric
            features are then KS-tested against it instead of chi-square on quantile bins.
        config: Thresholds (default `DriftConfig()`).
        exempt: fnmatch patterns of features not tested (calendar inputs).
        period_inputs: fnmatch patterns of features with one value per period for every
            series (a use case's ``period_inputs``): tested on their distinct values (one per
            period), against the reference sample's distinct values, with ``min_periods``
            of them needed; ``unit`` is then ``"period"``.

    Returns:
        One `FeatureDrift` per feature, categorical features first, in the statistics' order.
    """
    config = config or DriftConfig()
    stats = load_statistics(statistics)
    sample = _sample(reference_sample)
    per_period = set(exempt_columns(list(current.columns), period_inputs))
    results = []
    for ref in _references(stats, list(current.columns), exempt):
        values = ref.clean(current[ref.feature])
        has_sample = sample is not None and ref.feature in sample.columns
        if ref.estimated and has_sample:
            # Ties make the quantile shares estimates; the sample's shares are measured.
            reference = ref.clean(sample[ref.feature])
            if len(reference):
                ref = dataclasses.replace(ref, expected=ref.counts(reference) / len(reference))
        if ref.feature not in per_period:
            results.append(_feature(ref, values, sample, config))
            continue
        results.append(_period_feature(ref, values, sample if has_sample else None, config))
    return results


def _period_feature(
    ref: _Reference, values: np.ndarray, sample: pd.DataFrame | None, config: DriftConfig
) -> FeatureDrift:
    """A period input: PSI over its rows' shares; the test over its distinct values.

    325 series repeat each week's Niño value: the evidence is the weeks, not the rows, so the
    test compares the window's distinct values (one per period) with the reference sample's
    (or, without a sample, their counts in the bins), and needs ``min_periods`` of them.
    """
    never = config.model_copy(update={"min_rows": np.iinfo(np.int64).max})
    result = _feature(ref, values, None, never)  # the shares and PSI, untested
    distinct = np.unique(values)
    result.unit, result.n_periods = "period", len(distinct)
    if len(distinct) < config.min_periods:
        return result
    reference = None if sample is None else np.unique(ref.clean(sample[ref.feature]))
    return _test(result, ref, distinct, reference, config)


def drift_frame(drifts: Sequence[FeatureDrift]) -> pd.DataFrame:
    """`feature_drift`'s result as a table (one row per feature, without the per-bin shares)."""
    columns = [
        "feature",
        "kind",
        "status",
        "psi",
        "test",
        "statistic",
        "p_value",
        "n_current",
        "n_reference",
        "reference_mean",
        "current_mean",
    ]
    return pd.DataFrame([{c: getattr(d, c) for c in columns} for d in drifts], columns=columns)


def drift_over_time(
    statistics: Mapping[str, Any] | str | Path,
    current: pd.DataFrame,
    *,
    freq: str = "D",
    time_column: str = "timestamp",
    config: DriftConfig | None = None,
    exempt: Sequence[str] = (),
) -> pd.DataFrame:
    """PSI of each feature per time bucket, for plots of drift over time.

    Args:
        statistics: As in `feature_drift`.
        current: Served inputs with a datetime column ``time_column``.
        freq: Bucket length as a pandas offset alias (``"h"``, ``"D"``, ``"W-MON"``, ``"MS"``).
        time_column: The time of each row (`read_predictions`' ``timestamp``).
        config: Thresholds (default `DriftConfig()`): buckets with fewer than ``min_rows``
            values of a feature get PSI NaN.

    Returns:
        Long format, one row per bucket and feature: ``bucket`` (start of the bucket),
        ``feature``, ``kind``, ``n``, ``psi`` and ``high`` (PSI >= ``psi_threshold``). Buckets
        without rows between the first and the last are included with n 0.
    """
    config = config or DriftConfig()
    stats = load_statistics(statistics)
    refs = _references(stats, list(current.columns), exempt)
    columns = ["bucket", "feature", "kind", "n", "psi", "high"]
    if current.empty or not refs:
        return pd.DataFrame(columns=columns)
    rows = []
    for bucket, part in current.groupby(pd.Grouper(key=time_column, freq=freq)):
        for ref in refs:
            values = ref.clean(part[ref.feature])
            n = len(values)
            value = psi(ref.expected, ref.counts(values) / n) if n >= config.min_rows else np.nan
            rows.append(
                (bucket, ref.feature, ref.kind, n, value, bool(value >= config.psi_threshold))
            )
    return pd.DataFrame(rows, columns=columns)
