"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perucast.metrics import (
    interval_coverage,
    mase,
    pinball_loss,
    rmse,
    seasonal_naive_scale,
    smape,
    weighted_quantile_loss,
)
from perucast.quantiles import expected_excess, quantile_cdf, quantile_function

Y = np.array([1.0, 2.0, 3.0, 4.0])
F = np.array([2.0, 2.0, 2.0, 2.0])  # errors y - f = [-1, 0, 1, 2]


def test_rmse() -> None:
    # sqrt((1 + 0 + 1 + 4) / 4) = sqrt(1.5)
    assert rmse(Y, F) == pytest.approx(math.sqrt(1.5))


def test_pinball_loss() -> None:
    # q = 0.9: max(0.9 d, -0.1 d) = [0.1, 0, 0.9, 1.8], mean 2.8 / 4 = 0.7
    assert pinball_loss(Y, F, 0.9) == pytest.approx(0.7)
    # q = 0.1: max(0.1 d, -0.9 d) = [0.9, 0, 0.1, 0.2], mean 1.2 / 4 = 0.3
    assert pinball_loss(Y, F, 0.1) == pytest.approx(0.3)
    # q = 0.5: half the MAE, 0.5 * 4 / 4 = 0.5
    assert pinball_loss(Y, F, 0.5) == pytest.approx(0.5)


def test_weighted_quantile_loss() -> None:
    # sum|y| = 10; q = 0.9: 2 * 2.8 / 10 = 0.56; q = 0.1: 2 * 1.2 / 10 = 0.24; mean 0.40
    assert weighted_quantile_loss(Y, {0.1: F, 0.9: F}) == pytest.approx(0.40)
    # the median term is the WAPE: sum|y - f| / sum|y| = 4 / 10
    assert weighted_quantile_loss(Y, {0.5: F}) == pytest.approx(0.4)


def test_weighted_quantile_loss_drops_nan_rows_for_all_quantiles() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    f = np.append(F, np.nan)  # the last row is dropped for both quantiles (and from sum|y|)
    assert weighted_quantile_loss(y, {0.1: np.append(F, 0.0), 0.9: f}) == pytest.approx(0.40)


def test_interval_coverage_is_inclusive() -> None:
    lower = np.array([1.0, 0.0, 2.0, 5.0])
    upper = np.array([2.0, 1.0, 3.0, 6.0])
    # 1 in [1, 2] yes (lower edge), 2 in [0, 1] no, 3 in [2, 3] yes (upper edge), 4 in [5, 6] no
    assert interval_coverage(Y, lower, upper) == pytest.approx(0.5)
    # crossed bounds are not reordered: 1 is not in [2, 0]
    assert interval_coverage([1.0], [2.0], [0.0]) == 0.0


def test_smape() -> None:
    # terms 2*|1-3|/(1+3) = 1, 0, and 0 for 0 vs 0: 100 * 1 / 3
    assert smape([1.0, 2.0, 0.0], [3.0, 2.0, 0.0]) == pytest.approx(100 / 3)


def test_mase() -> None:
    history = np.array([1.0, 3.0, 2.0, 4.0])
    # season 1: |3-1|, |2-3|, |4-2| = 2, 1, 2 -> scale 5/3; MAE of [5, 6] vs [4, 8] = 1.5
    assert seasonal_naive_scale(history, 1) == pytest.approx(5 / 3)
    assert mase([5.0, 6.0], [4.0, 8.0], history, 1) == pytest.approx(0.9)
    # season 2: |2-1|, |4-3| -> scale 1; 1.5 / 1
    assert mase([5.0, 6.0], [4.0, 8.0], history, 2) == pytest.approx(1.5)


def test_nan_pairs_are_ignored() -> None:
    y = np.array([1.0, np.nan, 3.0])
    f = np.array([2.0, 5.0, np.nan])  # only the pair (1, 2) is complete
    assert rmse(y, f) == pytest.approx(1.0)
    assert pinball_loss(y, f, 0.9) == pytest.approx(0.1)  # -0.1 * -1
    assert smape(y, f) == pytest.approx(100 * 2 / 3)  # 2 * 1 / (1 + 2)
    assert mase(y, f, [0.0, 1.0, 2.0], 1) == pytest.approx(1.0)
    assert interval_coverage(y, [0.0, 0.0, 0.0], [1.0, np.nan, 9.0]) == pytest.approx(1.0)
    assert weighted_quantile_loss(y, {0.5: f}) == pytest.approx(1.0)  # 2 * 0.5 / 1
    assert math.isnan(rmse([np.nan], [1.0]))
    assert math.isnan(weighted_quantile_loss([0.0, 0.0], {0.5: [1.0, 1.0]}))  # sum|y| = 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: rmse([1.0, 2.0], [1.0]),
        lambda: smape([1.0, 2.0], [1.0]),
        lambda: mase([1.0, 2.0], [1.0], [1.0, 2.0, 3.0], 1),
        lambda: pinball_loss([1.0, 2.0], [1.0], 0.5),
        lambda: weighted_quantile_loss([1.0, 2.0], {0.5: [1.0]}),
        lambda: interval_coverage([1.0, 2.0], [1.0, 2.0], [1.0]),
    ],
)
def test_shape_mismatch_raises(call) -> None:
    with pytest.raises(ValueError, match="shape"):
        call()


def test_invalid_quantile_level_raises() -> None:
    with pytest.raises(ValueError, match="quantile level"):
        pinball_loss(Y, F, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        weighted_quantile_loss(Y, {})


LEVELS = (0.1, 0.5, 0.9)


def test_quantile_distribution() -> None:
    # P10 80, P50 100, P90 120: Q(tau) = 75 + 50 tau on [0, 1], i.e. uniform on [75, 125]
    values = [[80.0, 100.0, 120.0]]
    assert quantile_function(LEVELS, values, 0.0) == pytest.approx([75.0])
    assert quantile_function(LEVELS, values, 0.3) == pytest.approx([90.0])
    assert quantile_function(LEVELS, values, 1.0) == pytest.approx([125.0])
    assert quantile_cdf(LEVELS, values, 90.0) == pytest.approx([0.3])
    assert quantile_cdf(LEVELS, values, 200.0) == pytest.approx([1.0])
    assert quantile_cdf(LEVELS, values, 70.0) == pytest.approx([0.0])
    # E[max(D - 100, 0)] = P(D > 100) * mean excess = 0.5 * 12.5
    assert expected_excess(LEVELS, values, 100.0) == pytest.approx([6.25])


def test_quantile_distribution_clips_at_zero_and_rejects_crossing() -> None:
    # P10 0, P50 10: Q(0) = 0 - 25 * 0.1 = -2.5 -> clipped to 0; mass at 0 is P(X <= 0) = 0.1
    values = [[0.0, 10.0, 20.0]]
    assert quantile_function(LEVELS, values, 0.05) == pytest.approx([0.0])
    assert quantile_cdf(LEVELS, values, 0.0) == pytest.approx([0.1])
    assert quantile_cdf(LEVELS, values, -1.0) == pytest.approx([0.0])
    with pytest.raises(ValueError, match="decreasing"):
        quantile_function(LEVELS, [[3.0, 2.0, 4.0]], 0.5)


def test_expected_excess_between_knots() -> None:
    # P10/P50/P90 = 80/100/120 extrapolate to a uniform distribution on [75, 125];
    # E[max(X - 110, 0)] = (125 - 110)^2 / (2 * 50) = 2.25 (the triangle above a mid-segment
    # threshold, not a knot)
    assert expected_excess(LEVELS, [[80.0, 100.0, 120.0]], 110.0) == pytest.approx([2.25])
