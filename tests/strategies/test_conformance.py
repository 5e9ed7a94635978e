"""Every strategy, through the same rules. Add each new strategy to CONFORMANCE below."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.config import StrategyConfig
from sheaf.core.errors import ConfigError, StrategyError
from sheaf.core.params import Params
from sheaf.core.tree import decode_tree, encode_tree
from sheaf.core.update import Update
from sheaf.evaluation.history import RoundRecord
from sheaf.run.store import RunStore
from sheaf.strategies.base import RoundContext, Strategy, sum_updates
from sheaf.strategies.registry import STRATEGIES, build_strategy
from tests.helpers import rounds_of_updates

#: What a client's half of a strategy adds to an update: (update, key) -> update. The key
#: sets the values; the same key gives the same metrics and extras.
Decorate = Callable[[Update, int], Update]


def plain(update: Update, key: int) -> Update:
    return update


def with_steps(update: Update, key: int) -> Update:
    return Update(update.client_id, update.delta, update.num_examples, {"fednova_norm": 1.0 + key % 3})


def with_loss(update: Update, key: int) -> Update:
    metrics = {"qffl_loss": 0.25 + key % 4, "qffl_lipschitz": 10.0}
    return Update(update.client_id, update.delta, update.num_examples, metrics)


def with_control(update: Update, key: int) -> Update:
    control = update.delta.map(lambda a: np.full_like(a, (key % 5) - 2.0))
    return Update(update.client_id, update.delta, update.num_examples, {}, {"scaffold": control})


@dataclass(frozen=True)
class Case:
    """How the suite builds a strategy and the updates its clients would send."""

    hyper: dict[str, object] = field(default_factory=dict)
    decorate: Decorate = plain
    bad: dict[str, object] = field(default_factory=dict)
    #: Why the aggregate step does not map identical updates to that update (empty: it does).
    not_identity: str = ""


#: name -> how to run it through the properties.
CONFORMANCE: dict[str, Case] = {
    "fedavg": Case(),
    "fedprox": Case({"mu": 0.1}, bad={"mu": -1.0}),
    "fedavgm": Case({"lr": 0.5, "momentum": 0.9}, bad={"momentum": 1.0}),
    "fedadam": Case({"lr": 0.1}, bad={"tau": 0.0}),
    "fedyogi": Case({"lr": 0.1}, bad={"beta2": 1.5}),
    "fedadagrad": Case({"lr": 0.1}, bad={"lr": -0.1}),
    "scaffold": Case({"lr": 1.0}, with_control, bad={"lr": 0}),
    "fednova": Case({}, with_steps),
    "qfedavg": Case(
        {"q": 1.0}, with_loss, bad={"q": -1.0}, not_identity="q-FFL's step is shrunk by the estimate h of its curvature"
    ),
    "median": Case({"f": 1}, bad={"f": -1}),
    "trimmed_mean": Case({"beta": 0.2}, bad={"beta": 0.5}),
    "krum": Case({"f": 1}, bad={"f": 1.5}),
    "multikrum": Case({"f": 1, "m": 3}, bad={"m": -2}),
    "bulyan": Case({"f": 1}, bad={"f": "one"}),
    "fedper": Case({"head": ""}, bad={"head": 3}),
    "ditto": Case({"lam": 0.5}, bad={"lam": -1.0}),
}


def test_every_registered_strategy_is_in_the_conformance_suite() -> None:
    assert set(STRATEGIES) == set(CONFORMANCE)


def build(name: str) -> Strategy:
    return STRATEGIES[name](**CONFORMANCE[name].hyper)


def decorated(name: str, updates: list[Update]) -> list[Update]:
    return [CONFORMANCE[name].decorate(u, u.client_id) for u in updates]


def aggregate(strategy: Strategy, start: Params, updates: list[Update], round: int = 1) -> Params:
    new, _, _ = strategy.aggregate(updates, strategy.init(start), RoundContext(round, start, 0, 100))
    return new


names = pytest.mark.parametrize("name", sorted(CONFORMANCE))


def fitting(updates: list[Update]) -> list[str]:
    """The strategies whose assumption a round of these updates meets."""
    n = sum(1 for u in updates if u.num_examples > 0)
    return [name for name in sorted(CONFORMANCE) if build(name).min_updates <= n]


# One drawn round goes through every strategy it suits: drawing rounds is the slow part.
some_rounds = rounds_of_updates(min_clients=1, max_clients=9)


@given(case=some_rounds, seed=st.integers(0, 1000))
def test_order_of_updates_does_not_matter(case: tuple[Params, list[Update]], seed: int) -> None:
    start, raw = case
    for name in fitting(raw):
        updates = decorated(name, raw)
        shuffled = updates[:]
        random.Random(seed).shuffle(shuffled)
        strategy = build(name)
        assert aggregate(strategy, start, updates).array_equal(aggregate(strategy, start, shuffled)), name


@given(case=some_rounds, extra=st.integers(1, 4))
def test_clients_with_zero_examples_are_ignored(case: tuple[Params, list[Update]], extra: int) -> None:
    start, raw = case
    used = {u.client_id for u in raw}
    zero = [
        Update(cid, start.map(lambda a: np.full_like(a, 7.0)), 0)
        for cid in range(2000, 2000 + extra)
        if cid not in used
    ]
    for name in fitting(raw):
        updates = decorated(name, raw)
        strategy = build(name)
        assert aggregate(strategy, start, updates).array_equal(aggregate(strategy, start, updates + zero)), name


@given(case=some_rounds)
def test_the_aggregate_step_maps_identical_updates_to_that_update(case: tuple[Params, list[Update]]) -> None:
    start, raw = case
    delta = raw[0].delta
    for name in fitting(raw):
        case_ = CONFORMANCE[name]
        if case_.not_identity:
            continue
        same = [case_.decorate(Update(u.client_id, delta, u.num_examples), 0) for u in raw]
        strategy = build(name)
        state = strategy.init(start)[len(strategy.update_steps)]
        result, _ = strategy.aggregator.apply(same, state, RoundContext(1, start, 0, 100))
        for key in start:
            np.testing.assert_allclose(result[key], delta[key], rtol=1e-5, atol=1e-4, err_msg=name)


@given(case=some_rounds, copies=st.integers(0, 3))
def test_how_many_clients_send_the_same_update_does_not_matter(case: tuple[Params, list[Update]], copies: int) -> None:
    start, raw = case
    for name in sorted(CONFORMANCE):
        strategy = build(name)
        decorate = CONFORMANCE[name].decorate
        least = max(1, strategy.min_updates)
        few = [decorate(Update(i, raw[0].delta, 5), 0) for i in range(least)]
        many = [decorate(Update(i, raw[0].delta, 5), 0) for i in range(least + copies)]
        a, b = aggregate(strategy, start, few), aggregate(strategy, start, many)
        for key in start:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-4, err_msg=name)


@given(case=some_rounds)
def test_names_dtypes_and_shapes_are_preserved(case: tuple[Params, list[Update]]) -> None:
    start, raw = case
    for name in fitting(raw):
        result = aggregate(build(name), start, decorated(name, raw))
        assert result.same_structure(start), name
        assert list(result) == list(start), name


@names
def test_state_round_trips_through_the_run_store_and_continues_exactly(name: str, tmp_path: Path) -> None:
    strategy = build(name)
    start = Params({"w": np.zeros((2, 3), np.float32), "b": np.ones(3, np.float64)})
    n = max(4, strategy.min_updates)
    raw = [Update(i, start.map(lambda a, i=i: np.full_like(a, (-1) ** i * (i + 1.0))), 5 + i) for i in range(n)]
    updates = decorated(name, raw)
    params, state, _ = strategy.aggregate(updates, strategy.init(start), RoundContext(1, start, 0, n))
    with RunStore.create(tmp_path / "run.sqlite", {}, start, strategy.init(start)) as store:
        store.commit_round(RoundRecord(1, n, n), params, state)
    with RunStore.open(tmp_path / "run.sqlite") as store:
        restored = store.state(template=strategy.init(start))
    assert encode_tree(restored)[0] == encode_tree(state)[0]
    # and the restored state continues exactly like the original, for what it sends too
    ctx = RoundContext(2, params, 0, n)
    a, next_a, _ = strategy.aggregate(updates, state, ctx)
    b, next_b, _ = strategy.aggregate(updates, restored, ctx)
    assert a.array_equal(b)
    assert encode_tree(next_a)[0] == encode_tree(next_b)[0]
    sent_a, sent_b = strategy.configure(state, ctx), strategy.configure(restored, ctx)
    assert sent_a[0] == sent_b[0]
    assert sent_a[1].keys() == sent_b[1].keys()
    assert all(sent_a[1][k].array_equal(sent_b[1][k]) for k in sent_a[1])
    structure, arrays = encode_tree(state)
    assert encode_tree(decode_tree(structure, arrays, strategy.init(start)))[0] == structure


@names
def test_unknown_hyperparameters_are_refused_with_the_valid_ones(name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown setting strategy.bogus for '{name}'.*valid: fraction, min_clients"):
        build_strategy(StrategyConfig(name=name, options={"bogus": 1}))


@names
def test_a_bad_hyperparameter_is_one_clear_error_naming_it(name: str) -> None:
    bad = CONFORMANCE[name].bad
    if not bad:
        assert not build_strategy(StrategyConfig(name=name)).client_options.get("bogus")
        return
    ((key, value),) = bad.items()
    with pytest.raises(ConfigError, match=rf"(?i)strategy\.{key} must be .* for {name}, got"):
        build_strategy(StrategyConfig(name=name, options={**CONFORMANCE[name].hyper, key: value}))


@names
def test_updates_missing_what_the_strategy_reads_are_refused_before_aggregation(name: str) -> None:
    strategy = build(name)
    like = Params({"w": np.zeros(2, np.float32)})
    bare = Update(3, like, 4)
    if not strategy.update_rule.reads_updates:
        strategy.check_update(bare, like)
        return
    with pytest.raises(StrategyError, match=f"client 3: strategy {name!r} needs"):
        strategy.check_update(bare, like)
    strategy.check_update(CONFORMANCE[name].decorate(bare, 1), like)
    strategy.check_update(Update(4, like, 0), like)  # a client that did not train is never refused


def test_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match="unknown strategy 'fedsgd'; choose one of: bulyan, ditto, fedadagrad, fedadam"
    ):
        build_strategy(StrategyConfig(name="fedsgd"))


@given(case=some_rounds)
def test_sum_only_strategies_give_the_same_result_from_the_weighted_sum(case: tuple[Params, list[Update]]) -> None:
    start, raw = case
    for name in fitting(raw):
        strategy = build(name)
        if strategy.needs_updates:
            continue
        updates = decorated(name, raw)
        from_sum, _, _ = strategy.aggregate(
            sum_updates(updates, start), strategy.init(start), RoundContext(1, start, 0, 9)
        )
        assert from_sum.array_equal(aggregate(strategy, start, updates)), name


def test_every_strategy_is_exercised_by_the_drawn_rounds() -> None:
    assert fitting([Update(i, Params({"w": np.zeros(1)}), 1) for i in range(9)]) == sorted(CONFORMANCE)


def test_which_strategies_need_each_update() -> None:
    sum_only = {name for name in CONFORMANCE if not build(name).needs_updates}
    assert sum_only == {"fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedper", "ditto"}
