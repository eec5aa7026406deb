"""Blessing rules: only a model better than naive and not worse than the blessed one passes."""

from __future__ import annotations

import pydantic
import pytest

from perucast.blessing import BlessingConfig, decide

NAN = float("nan")
CONFIG = BlessingConfig(min_improvement_vs_naive=0.25, max_regression_vs_blessed=0.02)
NAIVE = {"mase": 1.0}  # naive bound: (1 - 0.25) * 1.0 = 0.75


def test_better_model_is_blessed() -> None:
    # 0.70 <= 0.75 and 0.70 <= 1.02 * 0.72 = 0.7344
    result = decide({"mase": 0.70}, NAIVE, {"mase": 0.72}, CONFIG)
    assert result.blessed
    assert len(result.reasons) == 2
    assert all("passed" in r for r in result.reasons)


def test_worse_than_naive_margin_is_not_blessed() -> None:
    # 0.80 > 0.75, although better than the blessed 0.90
    result = decide({"mase": 0.80}, NAIVE, {"mase": 0.90}, CONFIG)
    assert not result.blessed
    assert "naive rule FAILED" in result.reasons[0]
    assert "0.75" in result.reasons[0]


def test_worse_than_blessed_beyond_tolerance_is_not_blessed() -> None:
    # 0.74 <= 0.75 but 0.74 > 1.02 * 0.70 = 0.714
    result = decide({"mase": 0.74}, NAIVE, {"mase": 0.70}, CONFIG)
    assert not result.blessed
    assert "regression rule FAILED" in result.reasons[1]
    assert "0.714" in result.reasons[1]


def test_worse_than_blessed_within_tolerance_is_blessed() -> None:
    # 0.71 <= 1.02 * 0.70 = 0.714
    assert decide({"mase": 0.71}, NAIVE, {"mase": 0.70}, CONFIG).blessed


def test_first_run_only_checks_naive() -> None:
    result = decide({"mase": 0.74}, NAIVE, None, CONFIG)
    assert result.blessed
    assert "skipped" in result.reasons[1]
    assert not decide({"mase": 0.76}, NAIVE, None, CONFIG).blessed


@pytest.mark.parametrize(
    ("candidate", "naive", "blessed"),
    [
        ({"mase": NAN}, NAIVE, None),
        ({"mase": NAN}, NAIVE, {"mase": 0.9}),
        ({"mase": 0.5}, {"mase": NAN}, None),
        ({"mase": 0.5}, NAIVE, {"mase": NAN}),
    ],
)
def test_nan_never_blesses(candidate, naive, blessed) -> None:
    result = decide(candidate, naive, blessed, CONFIG)
    assert not result.blessed
    assert any("not finite" in r for r in result.reasons)


def test_other_metric_and_defaults() -> None:
    # default margin 0 and tolerance 0.02 on rmse: 9 <= 10 and 9 <= 1.02 * 8.9 = 9.078
    config = BlessingConfig(metric="rmse")
    assert decide({"rmse": 9.0, "mase": 5.0}, {"rmse": 10.0}, {"rmse": 8.9}, config).blessed
    assert not decide({"rmse": 10.5}, {"rmse": 10.0}, None, config).blessed


def test_missing_metric_and_bad_config_raise() -> None:
    with pytest.raises(ValueError, match="no 'mase'"):
        decide({"rmse": 1.0}, NAIVE, None)
    with pytest.raises(pydantic.ValidationError):
        BlessingConfig(margin=0.1)  # extra fields are forbidden
    with pytest.raises(pydantic.ValidationError):
        BlessingConfig(min_improvement_vs_naive=1.0)
    with pytest.raises(pydantic.ValidationError):
        BlessingConfig(max_regression_vs_blessed=-0.1)


def test_candidate_exactly_on_the_naive_bound_is_blessed() -> None:
    # (1 - 0.25) * 1.0 = 0.75: the rule is "at most", so the bound itself passes
    assert decide({"mase": 0.75}, NAIVE, None, CONFIG).blessed
