"""Domain outputs: newsvendor stocking quantities and fish stock advice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.crop_demand.planning import newsvendor, stocking_plan
from models.fish_stock.advice import harvest_quota, stock_advice
from models.fish_stock.management import EXPLOITATION_RATE, JUVENILE_LIMIT, SPAWNING_RESERVE_T

# Rows: a symmetric forecast (Q(tau) = 75 + 50 tau, uniform on [75, 125]) and a skewed one.
P10 = np.array([80.0, 10.0])
P50 = np.array([100.0, 20.0])
P90 = np.array([120.0, 60.0])


@pytest.mark.parametrize(("level", "column"), [(0.1, P10), (0.5, P50), (0.9, P90)])
def test_service_level_at_a_forecast_quantile_orders_that_quantile(level, column) -> None:
    assert newsvendor(P10, P50, P90, level).order_quantity == pytest.approx(column)


def test_order_quantity_between_and_beyond_the_quantiles() -> None:
    # row 1: 75 + 50 * 0.7 = 110; row 2: 20 + (60 - 20) / 0.4 * 0.2 = 40
    assert newsvendor(P10, P50, P90, 0.7).order_quantity == pytest.approx([110.0, 40.0])
    # row 2 upper tail slope 100: 60 + 100 * 0.05 = 65
    assert newsvendor(P10, P50, P90, 0.95).order_quantity[1] == pytest.approx(65.0)


def test_expected_shortfall_hand_computed() -> None:
    result = newsvendor(P10, P50, P90, 0.5)
    # row 1: integral over tau in [0.5, 1] of (75 + 50 tau - 100) = 6.25
    # row 2: int_0.5^0.9 100 (tau - 0.5) = 100 * 0.4^2 / 2 = 8,
    #        plus int_0.9^1 (60 + 100 (tau - 0.9) - 20) = 0.1 * 40 + 100 * 0.1^2 / 2 = 4.5
    assert result.expected_shortfall == pytest.approx([6.25, 12.5])
    # row 1 at 0.9: order 120, P(D > 120) = 0.1 times mean excess 2.5
    assert newsvendor(P10, P50, P90, 0.9).expected_shortfall[0] == pytest.approx(0.25)


def test_monotone_in_service_level() -> None:
    levels = np.linspace(0.01, 0.99, 50)
    results = [newsvendor(P10, P50, P90, s) for s in levels]
    quantities = np.array([r.order_quantity for r in results])
    shortfalls = np.array([r.expected_shortfall for r in results])
    assert np.all(np.diff(quantities, axis=0) > 0)
    assert np.all(np.diff(shortfalls, axis=0) < 0)


def test_newsvendor_clips_at_zero_and_validates() -> None:
    # P10 0, P50 10: Q(0.05) = -2.5 + 25 * 0.05 < 0 -> 0
    assert newsvendor([0.0], [10.0], [20.0], 0.05).order_quantity == pytest.approx([0.0])
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="service level"):
            newsvendor(P10, P50, P90, bad)
    with pytest.raises(ValueError, match="crossed"):
        newsvendor([100.0], [80.0], [120.0], 0.5)
    sorted_ = newsvendor([100.0], [80.0], [120.0], 0.5, sort_crossed=True)
    assert sorted_.order_quantity == pytest.approx([100.0])
    with pytest.raises(ValueError, match="shape"):
        newsvendor(P10, P50, P90[:1], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        newsvendor([np.nan], [1.0], [2.0], 0.5)


def test_stocking_plan_frame() -> None:
    frame = pd.DataFrame({"region": ["Lima", "Puno"], "p10": P10, "p50": P50, "p90": P90})
    plan = stocking_plan(frame, 0.5)
    assert plan["order_quantity"].tolist() == pytest.approx([100.0, 20.0])
    assert plan["expected_shortfall"].tolist() == pytest.approx([6.25, 12.5])
    assert plan["service_level"].tolist() == [0.5, 0.5]
    assert "order_quantity" not in frame.columns


def _zone(p10: float, p50: float, p90: float, juvenile: float = 0.05) -> pd.DataFrame:
    return pd.DataFrame(
        {"zone": ["centre"], "p10": [p10], "p50": [p50], "p90": [p90], "juvenile_share": [juvenile]}
    )


def test_quota_follows_the_harvest_control_rule() -> None:
    # one zone holds the whole reserve: 0.30 * (8 Mt - 5 Mt) = 0.9 Mt
    advice = stock_advice(_zone(4e6, 8e6, 12e6))
    expected = EXPLOITATION_RATE * (8e6 - SPAWNING_RESERVE_T)
    assert advice["quota_t"].iloc[0] == pytest.approx(expected)
    assert expected == pytest.approx(9e5)
    # below the reserve: no fishing
    assert stock_advice(_zone(2e6, 4e6, 6e6))["quota_t"].iloc[0] == 0.0
    assert harvest_quota(SPAWNING_RESERVE_T) == 0.0


def test_zone_quotas_add_up_to_the_stock_rule() -> None:
    frame = pd.DataFrame(
        {
            "zone": ["north", "centre", "south"],
            "p10": [4e6, 2e6, 0.5e6],
            "p50": [6e6, 3e6, 1e6],
            "p90": [8e6, 4e6, 1.5e6],
        }
    )
    advice = stock_advice(frame)
    # reserve 5 Mt split 6:3:1 -> 3, 1.5, 0.5 Mt; quotas 0.3 * (3, 1.5, 0.5) Mt; sum 0.3 * 5 Mt
    assert advice["reserve_t"].tolist() == pytest.approx([3e6, 1.5e6, 0.5e6])
    assert advice["quota_t"].tolist() == pytest.approx([0.9e6, 0.45e6, 0.15e6])
    assert advice["quota_t"].sum() == pytest.approx(EXPLOITATION_RATE * (10e6 - 5e6))
    assert not advice["juvenile_alert"].any()  # no juvenile data: no alert


def test_probability_below_limit() -> None:
    # limit = 0.8 * 5 Mt = 4 Mt = P10 -> 0.1
    advice = stock_advice(_zone(4e6, 8e6, 12e6), limit_fraction=0.8)
    assert advice["limit_t"].iloc[0] == pytest.approx(4e6)
    assert advice["prob_below_limit"].iloc[0] == pytest.approx(0.1)
    # default limit = reserve 5 Mt: 0.1 + 0.4 * (5 - 4) / (8 - 4) = 0.2
    assert stock_advice(_zone(4e6, 8e6, 12e6))["prob_below_limit"].iloc[0] == pytest.approx(0.2)


def test_juvenile_alert_edge() -> None:
    at_limit = stock_advice(_zone(4e6, 8e6, 12e6, juvenile=JUVENILE_LIMIT))
    above = stock_advice(_zone(4e6, 8e6, 12e6, juvenile=JUVENILE_LIMIT + 1e-6))
    unknown = stock_advice(_zone(4e6, 8e6, 12e6, juvenile=np.nan))
    assert not at_limit["juvenile_alert"].iloc[0]  # the generator cancels only when above
    assert above["juvenile_alert"].iloc[0]
    assert not unknown["juvenile_alert"].iloc[0]


def test_advice_validates_input() -> None:
    with pytest.raises(ValueError, match="one row per zone"):
        stock_advice(pd.concat([_zone(1, 2, 3), _zone(1, 2, 3)]))
    with pytest.raises(ValueError, match="lack columns"):
        stock_advice(pd.DataFrame({"zone": ["north"], "p50": [1.0]}))
    with pytest.raises(ValueError, match="decreasing"):
        stock_advice(_zone(5e6, 4e6, 6e6))


def test_probability_below_the_limit_is_strict_at_a_point_mass() -> None:
    # P10 = P50 = 4 Mt puts half the mass exactly at 4 Mt (the flat segment and the tail below
    # it); the limit 0.8 * 5 Mt = 4 Mt: P(B < 4 Mt) is 0, not the 0.5 of P(B <= 4 Mt)
    advice = stock_advice(_zone(4e6, 4e6, 8e6), limit_fraction=0.8)
    assert advice["limit_t"].item() == 4e6
    assert advice["prob_below_limit"].item() == 0.0
