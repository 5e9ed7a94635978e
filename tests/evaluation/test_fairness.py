from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.evaluation.fairness import jain_index, summarize, worst_fraction_mean

scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=200)


def test_hand_computed_summary() -> None:
    s = summarize([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], weights=[1] * 10 + [10])
    assert s.clients == 11
    assert s.min == 0.2
    assert s.max == 1.0
    assert s.p10 == pytest.approx(0.3)  # ceil(1.1) = 2 worst clients: (0.2 + 0.4) / 2
    assert s.mean == pytest.approx(9.0 / 11)
    assert s.weighted_mean == pytest.approx((9.0 - 1.0 + 10.0) / 20)
    assert s.jain == pytest.approx(81 / (11 * (0.04 + 0.16 + 0.36 + 0.64 + 7)))


def test_jain_is_one_for_equal_clients_and_one_over_n_for_a_single_served_client() -> None:
    assert jain_index([0.7] * 9) == pytest.approx(1.0)
    assert jain_index([1.0, 0, 0, 0]) == pytest.approx(0.25)
    assert jain_index([0.0, 0.0]) == 1.0


@given(scores)
def test_jain_lies_between_one_over_n_and_one(values: list[float]) -> None:
    j = jain_index(values)
    assert 1 / len(values) - 1e-9 <= j <= 1 + 1e-9


@given(scores)
def test_the_worst_10_percent_lies_between_min_and_mean(values: list[float]) -> None:
    s = summarize(values)
    assert s.min - 1e-9 <= s.p10 <= s.mean + 1e-9
    assert worst_fraction_mean(values, 1.0) == pytest.approx(s.mean)


def test_clients_without_a_value_are_skipped_and_no_clients_give_nan() -> None:
    assert summarize([0.5, math.nan, 1.0]).clients == 2
    assert math.isnan(summarize([math.nan]).mean)
