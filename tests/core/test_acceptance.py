"""The one acceptance rule: structure, weight, norm, metrics in range, extras; the same after JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.acceptance import MetricRange, OperatorLimits, UpdateRejected, UpdateRule, model_scale
from sheaf.core.params import Params
from sheaf.core.update import MAX_EXAMPLES, Update

LIKE = Params({"w": np.zeros(3, np.float32)})

rules = st.builds(
    UpdateRule,
    st.text(max_size=5),
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(-10, 0), st.floats(0, 10)).map(
            lambda t: MetricRange(t[0], t[1], t[2])
        ),
        max_size=3,
        unique_by=lambda m: m.name,
    ).map(tuple),
    st.lists(st.sampled_from(["x", "y"]), unique=True).map(tuple),
    st.one_of(st.just(math.inf), st.floats(0.1, 100)),
    st.integers(1, MAX_EXAMPLES),
)


def ok(rule: UpdateRule, update: Update) -> bool:
    try:
        rule.check(update, LIKE)
    except UpdateRejected:
        return False
    return True


@given(rules)
def test_a_rule_survives_its_trip_through_json(rule: UpdateRule) -> None:
    assert UpdateRule.from_json(rule.to_json()) == rule


@given(rule=rules, values=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(-20, 20)))
def test_metrics_are_accepted_exactly_when_each_read_one_is_within_its_range(
    rule: UpdateRule, values: dict[str, float]
) -> None:
    extras = dict.fromkeys(rule.extras, LIKE)
    update = Update(1, LIKE, 1, values, extras)
    inside = all(m.name in values and m.low <= values[m.name] <= m.high for m in rule.metrics)
    assert ok(rule, update) == inside


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 5e-324, 1e200, True])
def test_hostile_metric_values_are_refused_naming_the_metric_and_its_range(value: float) -> None:
    rule = UpdateRule("fednova", (MetricRange("fednova_norm", 1.0, 1e9),))
    with pytest.raises(UpdateRejected, match=r"needs metric 'fednova_norm' in \[1, 1e\+09\], got"):
        rule.check(Update(1, LIKE, 3, {"fednova_norm": value}), LIKE)


def test_a_client_that_did_not_train_is_never_refused_for_what_it_lacks() -> None:
    rule = UpdateRule("q", (MetricRange("qffl_loss", 0, 1),), ("scaffold",), max_norm=1.0)
    rule.check(Update(1, LIKE, 0), LIKE)


def test_the_weight_a_client_claims_is_bounded_by_the_operator_and_by_exactness() -> None:
    rule = UpdateRule("fedavg", max_weight=1000)
    rule.check(Update(1, LIKE, 1000), LIKE)
    with pytest.raises(UpdateRejected, match="claims 1001 examples, more than the 1000 this run accepts"):
        rule.check(Update(1, LIKE, 1001), LIKE)
    with pytest.raises(UpdateRejected, match=f"claims {10**12} examples; an update may claim 0 to {MAX_EXAMPLES}"):
        UpdateRule().check(Update(1, LIKE, 10**12), LIKE)  # it once set the round's change alone


def test_the_norm_bound_is_checked_in_float64() -> None:
    rule = UpdateRule("dp", max_norm=5.0)
    rule.check(Update(1, Params({"w": np.array([3, 4, 0], np.float32)}), 1), LIKE)
    with pytest.raises(UpdateRejected, match="L2 norm at most 5, got 1e\\+30"):
        rule.check(Update(1, Params({"w": np.array([1e30, 0, 0], np.float32)}), 1), LIKE)


@given(rules, st.floats(0, 1e6))
def test_the_measured_norm_is_the_float64_norm_of_an_accepted_delta(rule: UpdateRule, scale: float) -> None:
    delta = Params({"w": np.array([scale, -scale, 1.0], np.float32)})
    update = Update(1, delta, 0)
    assert rule.measured(update, LIKE) == delta.astype(np.float64).l2_norm()


def test_before_any_median_is_known_the_norm_bound_goes_by_the_models_scale() -> None:
    limits = OperatorLimits(max_norm_ratio=10.0)
    zeros, large = Params({"w": np.zeros(100, np.float32)}), Params({"w": np.full(100, 30.0, np.float32)})

    assert limits.rule_for(UpdateRule(), None, zeros).max_norm == 100.0  # 10 x sqrt(100): one unit per parameter
    assert limits.rule_for(UpdateRule(), None, large).max_norm == 3000.0  # 10 x the model's own norm
    assert limits.rule_for(UpdateRule(), 0.5, large).max_norm == 5.0  # a median is known: it rules
    assert limits.rule_for(UpdateRule(), None).max_norm == math.inf  # no model given: no relative bound
    assert OperatorLimits().rule_for(UpdateRule(), None, zeros).max_norm == math.inf  # max_norm_ratio off
    assert model_scale(large) == pytest.approx(300.0)


def test_an_evaluation_claim_is_bounded_like_an_update_claim() -> None:
    rule = OperatorLimits(max_examples=500, weight_caps={3: 120}).weight_rule()
    rule.check_weight(4, 500)
    with pytest.raises(UpdateRejected, match="client 3: claims 121 examples, more than the 120 this run accepts"):
        rule.check_weight(3, 121)
