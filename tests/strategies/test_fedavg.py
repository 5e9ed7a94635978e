from __future__ import annotations

import numpy as np
import pytest

from sheaf.core.errors import StrategyError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import AggregateStep, RoundContext, ServerStep, UpdateStep, WeightedSum, chain
from sheaf.strategies.fedavg import fedavg


def p(*values: float) -> Params:
    return Params({"w": np.array(values, np.float32)})


def test_fedavg_is_the_mean_weighted_by_examples_hand_computed() -> None:
    start = p(1.0, 1.0)
    updates = [Update(0, p(1.0, -2.0), 10), Update(1, p(4.0, 2.0), 30), Update(2, p(-8.0, 0.0), 20)]
    strategy = fedavg()
    new, state, metrics = strategy.aggregate(updates, strategy.init(start), RoundContext(1, start, 0, 3))
    # (10*1 + 30*4 + 20*-8) / 60 = -30/60 = -0.5 ; (10*-2 + 30*2 + 0) / 60 = 40/60
    np.testing.assert_allclose(new["w"], [0.5, 1 + 2 / 3], rtol=1e-6)
    assert metrics["update_norm"] == pytest.approx(np.hypot(0.5, 2 / 3), rel=1e-5)
    assert state == ((),)


def test_a_round_where_nobody_had_examples_leaves_the_model_unchanged() -> None:
    start = p(3.0)
    new, _, _ = fedavg().aggregate([Update(0, p(9.0), 0)], ((),), RoundContext(1, start, 0, 1))
    assert new.array_equal(start)


def test_fedavg_needs_only_the_weighted_sum() -> None:
    assert fedavg().needs_updates is False


def test_the_weighted_sum_is_accumulated_in_float64_in_client_order() -> None:
    start = Params({"w": np.zeros(1, np.float32)})
    updates = [Update(i, Params({"w": np.array([v], np.float32)}), 1) for i, v in enumerate([1e8, 1.0, -1e8, 1.0])]
    summed = sum_of(updates, start)
    assert summed.total["w"].dtype == np.float64
    assert summed.total["w"][0] == 2.0
    assert summed.weight == 4
    assert summed.count == 4


def sum_of(updates: list[Update], like: Params) -> WeightedSum:
    from sheaf.strategies.base import sum_updates

    return sum_updates(list(reversed(updates)), like)


def noop_server() -> ServerStep:
    return ServerStep(lambda params: 0, lambda delta, state, ctx: (delta, state + 1), "count")


def noop_updates() -> UpdateStep:
    return UpdateStep(lambda params: (), lambda updates, state, ctx: (list(updates), state), "identity")


def test_chain_keeps_one_state_per_step_and_returns_it() -> None:
    strategy = chain(noop_updates(), weighted_mean(), noop_server(), noop_server(), name="x")
    start = p(0.0)
    state = strategy.init(start)
    assert state == ((), (), 0, 0)
    _, state, _ = strategy.aggregate([Update(0, p(1.0), 1)], state, RoundContext(1, start, 0, 1))
    assert state == ((), (), 1, 1)
    assert strategy.needs_updates  # an update step must see each update


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), "exactly one aggregate step, got 0"),
        ((weighted_mean(), weighted_mean()), "exactly one aggregate step, got 2"),
        ((noop_server(), weighted_mean()), r"steps \['count'\] are out of place"),
        ((weighted_mean(), noop_updates()), r"steps \['identity'\] are out of place"),
    ],
)
def test_chain_refuses_steps_out_of_order(steps: tuple[AggregateStep, ...], message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        chain(*steps, name="bad")


def test_a_chain_that_needs_updates_refuses_a_sum() -> None:
    strategy = chain(noop_updates(), weighted_mean(), name="x")
    start = p(0.0)
    with pytest.raises(StrategyError, match="needs each client's update"):
        strategy.aggregate(WeightedSum(start, 1.0, 1), strategy.init(start), RoundContext(1, start, 0, 1))


def test_state_of_the_wrong_length_is_refused() -> None:
    start = p(0.0)
    with pytest.raises(StrategyError, match="has 1 steps but the state has 2"):
        fedavg().aggregate([], ((), ()), RoundContext(1, start, 0, 1))
