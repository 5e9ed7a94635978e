"""Median, trimmed mean, Krum, Multi-Krum and Bulyan against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sheaf.core.errors import AggregationError, ConfigError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies.base import RoundContext, Strategy
from sheaf.strategies.krum import bulyan, krum, multikrum
from sheaf.strategies.robust import median, trimmed_mean


def vec(*values: float) -> Params:
    return Params({"w": np.array(values, np.float32)})


def run(strategy: Strategy, updates: list[Update]) -> list[float]:
    start = vec(*[0.0] * len(updates[0].delta["w"]))
    new, _, _ = strategy.aggregate(updates, strategy.init(start), RoundContext(1, start, 0, len(updates)))
    return [float(v) for v in new["w"]]


def test_median_is_per_coordinate_and_ignores_the_claimed_examples() -> None:
    updates = [Update(0, vec(1, -3), 1), Update(1, vec(5, 7), 1000), Update(2, vec(2, 0), 1)]
    assert run(median(), updates) == [2.0, 0.0]


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    updates = [Update(i, vec(v), 1) for i, v in enumerate([1.0, 2.0, 3.0, 10.0])]
    assert run(median(), updates) == [2.5]


def test_trimmed_mean_drops_floor_beta_n_from_each_end() -> None:
    values = [10.0, -50.0, 1.0, 2.0, 3.0, 4.0, 100.0, 0.0]  # beta 0.25, n 8: drop 2 per side
    updates = [Update(i, vec(v), 1 + i) for i, v in enumerate(values)]
    assert run(trimmed_mean(beta=0.25), updates) == [2.5]  # mean of 1, 2, 3, 4


def test_trimmed_mean_needs_enough_updates_to_trim_any() -> None:
    strategy = trimmed_mean(beta=0.2)
    assert strategy.min_updates == 5
    with pytest.raises(AggregationError, match=r"drops floor\(beta \* n\) updates per side and needs n >= 5"):
        run(strategy, [Update(i, vec(1.0), 1) for i in range(4)])


# Krum in two dimensions. Squared distances: a-b 1, a-c 1, a-d 8, b-c 2, b-d 5, c-d 5, and e is
# far (200, 181, 181, 128). With f = 1 and n = 5 each score sums the 2 nearest: a 2, b 3, c 3,
# d 10, e 309.
KRUM = [vec(0, 0), vec(1, 0), vec(0, 1), vec(2, 2), vec(10, 10)]


def test_krum_picks_the_update_with_the_lowest_score() -> None:
    assert run(krum(f=1), [Update(i, d, 1) for i, d in enumerate(KRUM)]) == [0.0, 0.0]


def test_multikrum_averages_the_m_best_uniformly_not_by_examples() -> None:
    updates = [Update(i, d, [1, 1000, 1, 1, 1][i]) for i, d in enumerate(KRUM)]
    # best three: a (2), then b and c (3 each, ties by client id); uniform mean
    assert run(multikrum(f=1, m=3), updates) == pytest.approx([1 / 3, 1 / 3])


def test_multikrum_keeps_n_minus_f_by_default() -> None:
    # a, b, c, d (e, the worst, is the one left out)
    assert run(multikrum(f=1), [Update(i, d, 1) for i, d in enumerate(KRUM)]) == pytest.approx([0.75, 0.75])


def test_bulyan_picks_n_minus_2f_by_repeated_krum_then_averages_the_beta_nearest_the_median() -> None:
    # f = 1, n = 7: theta = 5, beta = 3. Repeated Krum on 0,1,2,3,4,5,100 picks 2, 3, 1, 4, 0
    # (scores with n' - f - 2 neighbours; ties to the lower client id); their median is 2 and
    # the 3 values nearest it are 1, 2, 3.
    values = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 100.0]
    updates = [Update(10 + i, vec(v), 1) for i, v in enumerate(values)]
    updates = [updates[i] for i in (6, 2, 0, 5, 1, 4, 3)]  # arrival order does not matter
    assert run(bulyan(f=1), updates) == [2.0]


@pytest.mark.parametrize(
    ("strategy", "n", "message"),
    [
        (krum(f=1), 4, "Krum with f=1 assumes n >= 2f + 3 = 5 updates, but only 4 arrived; round skipped"),
        (multikrum(f=2), 6, "Multi-Krum with f=2 assumes n >= 2f + 3 = 7 updates, but only 6 arrived"),
        (bulyan(f=1), 6, "Bulyan with f=1 assumes n >= 4f + 3 = 7 updates, but only 6 arrived"),
        (median(f=2), 4, "the median with f=2 assumes n >= 2f + 1 = 5 updates, but only 4 arrived"),
    ],
)
def test_a_round_too_small_for_the_assumption_is_a_clear_aggregation_error(
    strategy: Strategy, n: int, message: str
) -> None:
    with pytest.raises(AggregationError) as info:
        run(strategy, [Update(i, vec(float(i)), 1) for i in range(n)])
    assert str(info.value).startswith(message)


def test_clients_without_examples_do_not_count_towards_the_assumption() -> None:
    updates = [Update(i, vec(float(i)), 1 if i < 4 else 0) for i in range(6)]
    with pytest.raises(AggregationError, match="only 4 arrived"):
        run(krum(f=1), updates)


def test_a_cohort_too_small_for_the_assumption_is_refused_before_the_run() -> None:
    with pytest.raises(ConfigError) as info:
        bulyan(f=2).check_cohort(10)
    assert str(info.value) == (
        "strategy 'bulyan': Bulyan with f=2 assumes n >= 4f + 3 = 11 updates, but a round samples only 10 "
        "clients; raise strategy.fraction or strategy.min_clients, or lower the strategy's f"
    )
    bulyan(f=2).check_cohort(11)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (krum, {"f": -1}, "strategy.f must be >= 0 for krum, got -1"),
        (krum, {"f": 1.5}, "strategy.f must be a whole number for krum, got 1.5"),
        (multikrum, {"m": -1}, "strategy.m must be >= 0 for multikrum, got -1"),
        (trimmed_mean, {"beta": 0.5}, "strategy.beta must be > 0 and < 0.5 for trimmed_mean, got 0.5"),
        (median, {"f": "two"}, "strategy.f must be a whole number for median, got 'two'"),
    ],
)
def test_bad_settings_name_the_setting(factory: object, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory(**kwargs)  # type: ignore[operator]
    assert str(info.value) == message


def test_robust_aggregators_need_each_update() -> None:
    assert all(s.needs_updates for s in (median(), trimmed_mean(), krum(), multikrum(), bulyan()))
