"""Central evaluation in shards: the shards partition the test set; combining them is exact."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.params import Params
from sheaf.data.dataset import Split
from sheaf.evaluation.central import central_shards, combine_shards, evaluate_shards
from sheaf.task.base import EvalResult

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
results = st.lists(
    st.builds(
        lambda loss, n, acc: EvalResult(loss, n, {"accuracy": acc}),
        values,
        st.integers(min_value=0, max_value=10_000),
        st.floats(min_value=0, max_value=1),
    ),
    min_size=2,
    max_size=12,
)


@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=0, max_value=700))
def test_shards_cover_the_rows_in_order_each_at_most_shard_rows(rows: int, shard_rows: int) -> None:
    shards = central_shards(rows, shard_rows)
    assert [i for shard in shards for i in shard] == list(range(rows))
    if shard_rows:
        assert all(len(shard) <= shard_rows for shard in shards)
        assert all(len(shard) == shard_rows for shard in shards[:-1])
    else:
        assert len(shards) == 1


@given(results, st.randoms(use_true_random=False))
def test_combining_does_not_depend_on_the_order_the_shards_come_back_in(shards: list[EvalResult], rng: object) -> None:
    shuffled = list(shards)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = combine_shards(shards), combine_shards(shuffled)
    assert a.num_examples == b.num_examples
    assert (a.loss, a.metrics) == (b.loss, b.metrics) or (math.isnan(a.loss) and math.isnan(b.loss))


@given(results)
def test_the_combination_is_the_exact_weighted_mean_rounded_once(shards: list[EvalResult]) -> None:
    combined = combine_shards(shards)
    weight = sum(r.num_examples for r in shards)
    if weight == 0:
        assert math.isnan(combined.loss)
        return
    exact = sum((Fraction(r.loss) * r.num_examples for r in shards), Fraction(0)) / weight
    assert combined.loss == float(exact)
    exact_acc = sum((Fraction(r.metrics["accuracy"]) * r.num_examples for r in shards), Fraction(0)) / weight
    assert combined.metrics["accuracy"] == float(exact_acc)


@given(values, st.lists(st.integers(min_value=1, max_value=1000), min_size=2, max_size=10))
def test_shards_that_agree_give_their_common_value(value: float, sizes: list[int]) -> None:
    combined = combine_shards([EvalResult(value, n, {"m": value}) for n in sizes])
    assert (combined.loss, combined.metrics["m"]) == (value, value)


def test_empty_shards_carry_no_weight_and_non_finite_values_propagate() -> None:
    empty = EvalResult(math.nan, 0, {"accuracy": math.nan})
    assert combine_shards([EvalResult(0.5, 4, {"accuracy": 1.0}), empty]).metrics == {"accuracy": 1.0}
    assert math.isinf(combine_shards([EvalResult(math.inf, 4, {}), EvalResult(1.0, 2, {})]).loss)
    assert math.isnan(combine_shards([EvalResult(math.nan, 4, {}), EvalResult(1.0, 2, {})]).loss)


def test_one_shard_is_the_task_s_own_result_unchanged() -> None:
    result = EvalResult(0.1 + 0.2, 7, {"accuracy": 1 / 3})
    assert combine_shards([result]) is result


def test_evaluate_shards_gives_each_shard_its_own_rows() -> None:
    class Rows:
        def evaluate(self, params: Params, data: Split) -> EvalResult:
            return EvalResult(float(data.x.sum()), len(data), {})

    test = Split(np.arange(10.0).reshape(10, 1), np.zeros(10))
    got = evaluate_shards(Rows(), Params({}), test, central_shards(10, 4))  # type: ignore[arg-type]
    assert [(r.loss, r.num_examples) for r in got] == [(6.0, 4), (22.0, 4), (17.0, 2)]
