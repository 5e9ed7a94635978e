"""Every strategy, through the same rules. Add each new strategy to STRATEGIES below."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.config import StrategyConfig
from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.core.tree import decode_tree, encode_tree
from sheaf.core.update import Update
from sheaf.run.store import RunStore
from sheaf.strategies.base import RoundContext, Strategy, sum_updates
from sheaf.strategies.registry import STRATEGIES, build_strategy
from tests.helpers import rounds_of_updates

#: name -> hyperparameters used for the conformance properties.
CONFORMANCE: dict[str, dict[str, object]] = {"fedavg": {}, "fedprox": {"mu": 0.1}}


def test_every_registered_strategy_is_in_the_conformance_suite() -> None:
    assert set(STRATEGIES) == set(CONFORMANCE)


def build(name: str) -> Strategy:
    return STRATEGIES[name](**CONFORMANCE[name])


def aggregate(strategy: Strategy, start: Params, updates: list[Update], round: int = 1) -> Params:
    new, _, _ = strategy.aggregate(updates, strategy.init(start), RoundContext(round, start, 0, 100))
    return new


names = pytest.mark.parametrize("name", sorted(CONFORMANCE))


@names
@given(case=rounds_of_updates(), seed=st.integers(0, 1000))
def test_order_of_updates_does_not_matter(name: str, case: tuple[Params, list[Update]], seed: int) -> None:
    start, updates = case
    shuffled = updates[:]
    random.Random(seed).shuffle(shuffled)
    strategy = build(name)
    assert aggregate(strategy, start, updates).array_equal(aggregate(strategy, start, shuffled))


@names
@given(case=rounds_of_updates(), extra=rounds_of_updates())
def test_clients_with_zero_examples_are_ignored(
    name: str, case: tuple[Params, list[Update]], extra: tuple[Params, list[Update]]
) -> None:
    start, updates = case
    used = {u.client_id for u in updates}
    zero = [
        Update(cid, start.map(lambda a: np.full_like(a, 7.0)), 0)
        for cid in range(2000, 2000 + len(extra[1]))
        if cid not in used
    ]
    strategy = build(name)
    assert aggregate(strategy, start, updates).array_equal(aggregate(strategy, start, updates + zero))


@names
@given(case=rounds_of_updates(min_clients=2))
def test_identical_updates_aggregate_to_that_update(name: str, case: tuple[Params, list[Update]]) -> None:
    start, updates = case
    delta = updates[0].delta
    same = [Update(u.client_id, delta, u.num_examples) for u in updates]
    result = aggregate(build(name), start, same)
    expected = start + delta
    for key in start:
        np.testing.assert_allclose(result[key], expected[key], rtol=1e-5, atol=1e-4)


@names
@given(case=rounds_of_updates())
def test_names_dtypes_and_shapes_are_preserved(name: str, case: tuple[Params, list[Update]]) -> None:
    start, updates = case
    result = aggregate(build(name), start, updates)
    assert result.same_structure(start)
    assert list(result) == list(start)


@names
def test_state_round_trips_through_the_run_store(name: str, tmp_path: Path) -> None:
    strategy = build(name)
    start = Params({"w": np.zeros((2, 3), np.float32), "b": np.ones(3, np.float64)})
    state = strategy.init(start)
    updates = [Update(i, start.map(lambda a, i=i: np.full_like(a, i + 1.0)), 5 + i) for i in range(4)]
    params, state, _ = strategy.aggregate(updates, state, RoundContext(1, start, 0, 4))
    with RunStore.create(tmp_path / "run.sqlite", {}, start, strategy.init(start)) as store:
        from sheaf.evaluation.history import RoundRecord

        store.commit_round(RoundRecord(1, 4, 4), params, state)
    with RunStore.open(tmp_path / "run.sqlite") as store:
        restored = store.state(template=strategy.init(start))
    assert encode_tree(restored)[0] == encode_tree(state)[0]
    # and the restored state continues exactly like the original
    ctx = RoundContext(2, params, 0, 4)
    a, _, _ = strategy.aggregate(updates, state, ctx)
    b, _, _ = strategy.aggregate(updates, restored, ctx)
    assert a.array_equal(b)
    structure, arrays = encode_tree(state)
    assert encode_tree(decode_tree(structure, arrays, strategy.init(start)))[0] == structure


@names
def test_unknown_hyperparameters_are_refused_with_the_valid_ones(name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown setting strategy.bogus for '{name}'.*valid: fraction, min_clients"):
        build_strategy(StrategyConfig(name=name, options={"bogus": 1}))


def test_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'fedsgd'; choose one of: fedavg, fedprox"):
        build_strategy(StrategyConfig(name="fedsgd"))


@names
@given(case=rounds_of_updates())
def test_sum_only_strategies_give_the_same_result_from_the_weighted_sum(
    name: str, case: tuple[Params, list[Update]]
) -> None:
    strategy = build(name)
    if strategy.needs_updates:
        return
    start, updates = case
    from_sum, _, _ = strategy.aggregate(sum_updates(updates, start), strategy.init(start), RoundContext(1, start, 0, 9))
    assert from_sum.array_equal(aggregate(strategy, start, updates))
