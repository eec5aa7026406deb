"""Blessing: whether a newly evaluated model may replace the one served.

A candidate is blessed when it passes both rules on one lower-is-better metric (``mase`` unless
configured otherwise), computed by the evaluation on the same backtest origins for all models:

1. **Naive rule**: ``candidate ≤ (1 − min_improvement_vs_naive) × seasonal_naive``. With a margin
   of 0.25 the candidate must have at most 0.75 times the seasonal naive forecast's error.
2. **Regression rule** (skipped on the first run, when nothing is blessed yet):
   ``candidate ≤ (1 + max_regression_vs_blessed) × currently_blessed``. A small tolerance lets a
   retrained model through when it is equal up to noise, never when it is clearly worse.

A NaN (or infinite) value of the metric for the candidate, the naive baseline or the blessed
model makes its rule fail: a model whose quality cannot be checked is never blessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class BlessingConfig(BaseModel):
    """Thresholds of the blessing rules.

    Attributes:
        metric: Key of the lower-is-better metric compared (e.g. ``"mase"``, ``"rmse"``,
            ``"wql"``), as it appears in the metric dictionaries.
        min_improvement_vs_naive: Relative margin by which the candidate must beat seasonal
            naive, in [0, 1): the candidate's metric must be at most ``1 − margin`` times naive's.
        max_regression_vs_blessed: Relative tolerance, ≥ 0: the candidate's metric may be at most
            ``1 + tolerance`` times the currently blessed model's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(default="mase", min_length=1)
    min_improvement_vs_naive: float = Field(default=0.0, ge=0.0, lt=1.0)
    max_regression_vs_blessed: float = Field(default=0.02, ge=0.0)


@dataclass(frozen=True)
class Blessing:
    """The decision and why.

    Attributes:
        blessed: Whether the candidate may be served.
        reasons: One line per rule, passed or failed, with the numbers compared.
    """

    blessed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for the evaluation's metrics file."""
        return {"blessed": self.blessed, "reasons": list(self.reasons)}


def _value(metrics: Mapping[str, float], key: str, who: str) -> float:
    if key not in metrics:
        raise ValueError(f"{who} metrics have no {key!r} (keys: {sorted(metrics)})")
    return float(metrics[key])


def _rule(name: str, metric: str, value: float, bound: float, formula: str) -> tuple[bool, str]:
    """Check ``value ≤ bound`` and describe it; NaN or infinity on either side fails."""
    if not (math.isfinite(value) and math.isfinite(bound)):
        return False, f"{name} FAILED: {metric} {value:.4g} vs {formula} = {bound:.4g} (not finite)"
    ok = value <= bound
    word = "passed" if ok else "FAILED"
    sign = "≤" if ok else ">"
    return ok, f"{name} {word}: {metric} {value:.4g} {sign} {formula} = {bound:.4g}"


def decide(
    candidate: Mapping[str, float],
    naive: Mapping[str, float],
    blessed: Mapping[str, float] | None,
    config: BlessingConfig | None = None,
) -> Blessing:
    """Decide whether ``candidate`` is blessed.

    Args:
        candidate: The new model's metrics (metric name -> value).
        naive: Seasonal naive's metrics on the same origins.
        blessed: The currently blessed model's metrics, or ``None`` on the first run (then only
            the naive rule applies).
        config: Thresholds; defaults to ``BlessingConfig()``.

    Returns:
        The decision, with one reason per rule checked.

    Raises:
        ValueError: when a metric dictionary lacks ``config.metric``.
    """
    config = config or BlessingConfig()
    key = config.metric
    value = _value(candidate, key, "candidate")
    margin = config.min_improvement_vs_naive
    naive_value = _value(naive, key, "seasonal naive")
    ok, reason = _rule(
        "naive rule",
        key,
        value,
        (1.0 - margin) * naive_value,
        f"(1 − {margin:g}) × naive {naive_value:.4g}",
    )
    results, reasons = [ok], [reason]
    if blessed is None:
        reasons.append("regression rule skipped: no model blessed yet (first run)")
    else:
        tol = config.max_regression_vs_blessed
        current = _value(blessed, key, "blessed model")
        ok, reason = _rule(
            "regression rule",
            key,
            value,
            (1.0 + tol) * current,
            f"(1 + {tol:g}) × blessed {current:.4g}",
        )
        results.append(ok)
        reasons.append(reason)
    return Blessing(blessed=all(results), reasons=reasons)
