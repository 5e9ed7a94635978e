"""ExactSum: the total is exact, so order and grouping never change a bit."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sheaf.core import exactsum
from sheaf.core.errors import SheafError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.update import Update

LIKE = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}

# Any finite float32, from subnormal to huge: the sum must stay exact over all of them.
any_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
terms = st.lists(
    st.tuples(
        st.fixed_dictionaries(
            {name: hnp.arrays(np.float32, a.shape, elements=any_float32) for name, a in LIKE.items()}
        ),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=12,
)


def summed(items: list[tuple[dict[str, np.ndarray], int]]) -> ExactSum:
    total = ExactSum(LIKE)
    for delta, weight in items:
        total.add(delta, weight)
    return total


def bits_equal(a: Params, b: Params) -> bool:
    return all(np.array_equal(a[k], b[k]) and (np.signbit(a[k]) == np.signbit(b[k])).all() for k in a)


@given(items=terms, seed=st.integers(0, 10_000), groups=st.integers(1, 4))
def test_order_and_grouping_do_not_change_a_bit(items: list, seed: int, groups: int) -> None:
    whole = summed(items).total()
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    parts = [summed(shuffled[i::groups]) for i in range(groups)]
    merged = ExactSum(LIKE)
    for part in reversed(parts):
        merged.merge(part)
    assert bits_equal(whole, merged.total())


@given(items=terms)
def test_stacked_adds_equal_single_adds(items: list) -> None:
    stacked = ExactSum(LIKE)
    stacked.add_stacked({k: np.stack([d[k] for d, _ in items]) for k in LIKE}, [w for _, w in items])
    one = summed(items)
    assert bits_equal(stacked.total(), one.total())
    assert (stacked.weight, stacked.count) == (one.weight, one.count)


@given(items=terms)
def test_the_total_is_the_exact_sum_within_one_unit_in_the_last_place(items: list) -> None:
    total = summed(items).total()
    for name, like in LIKE.items():
        for index in np.ndindex(like.shape):
            exact = sum(Fraction(float(d[name][index])) * w for d, w in items)
            got = float(total[name][index])
            # faithful: at most one float64 step from the exact value
            assert abs(Fraction(got) - exact) <= Fraction(np.spacing(abs(float(exact)))), (exact, got)


def test_cancellation_that_plain_float_addition_loses_is_kept() -> None:
    like = {"x": np.zeros(1)}
    total = ExactSum(like)
    for value in (1e16, 1.0, -1e16):
        total.add({"x": np.array([value])}, 1)
    assert total.total()["x"].tolist() == [1.0]


def test_infinities_and_nan_sum_as_ieee_says_in_any_order() -> None:
    like = {"x": np.zeros(3)}
    values = [np.array([np.inf, np.inf, np.nan]), np.array([1.0, -np.inf, 2.0]), np.array([2.0, 5.0, 3.0])]
    forward, backward = ExactSum(like), ExactSum(like)
    for v in values:
        forward.add({"x": v}, 2)
    for v in reversed(values):
        backward.add({"x": v}, 2)
    out = forward.total()["x"]
    assert out[0] == np.inf and np.isnan(out[1]) and np.isnan(out[2])
    assert np.array_equal(out, backward.total()["x"], equal_nan=True)


def test_weight_and_count_ignore_zero_weights() -> None:
    total = summed([(dict(LIKE), 0), ({k: np.ones_like(v) for k, v in LIKE.items()}, 5)])
    assert (total.weight, total.count) == (5, 1)
    assert total.total()["b"].tolist() == [5.0, 5.0, 5.0]


def test_add_updates_matches_adding_each_delta() -> None:
    rng = np.random.default_rng(0)
    updates = [
        Update(i, Params({k: rng.normal(size=v.shape).astype(np.float32) for k, v in LIKE.items()}), i)
        for i in range(9)
    ]
    one = ExactSum(LIKE)
    for u in updates:
        one.add(u.delta, u.num_examples)
    batch = ExactSum(LIKE)
    batch.add_updates(updates)
    assert bits_equal(one.total(), batch.total())


@given(items=terms)
def test_a_sum_survives_transport_as_arrays(items: list) -> None:
    original = summed(items)
    header, arrays = original.to_arrays()
    copy = ExactSum.from_arrays(LIKE, header, [a.copy() for a in arrays])
    assert bits_equal(original.total(), copy.total())
    assert (copy.weight, copy.count) == (original.weight, original.count)


@pytest.mark.parametrize(
    ("header", "arrays", "message"),
    [
        ({"weight": 1, "count": 1}, [], "malformed exact sum header"),
        ({"weight": 1, "count": 1, "slots": [0]}, [np.zeros(8)], r"holds float64\[8\]"),
        ({"weight": 1, "count": 1, "slots": [99]}, [np.zeros(9)], "slot 99"),
        ({"weight": 1, "count": 1, "slots": [0, 0]}, [np.zeros(9), np.zeros(9)], "do not fit"),
        ({"weight": -1, "count": 1, "slots": []}, [], "do not fit"),
        ({"weight": 1, "count": 1, "slots": [0]}, [np.zeros(6, np.float32)], "holds float32"),
    ],
)
def test_malformed_transported_sums_are_refused(header: dict, arrays: list, message: str) -> None:
    with pytest.raises(SheafError, match=message):
        ExactSum.from_arrays(LIKE, header, arrays)


def test_wrong_shapes_names_and_weights_are_refused() -> None:
    total = ExactSum(LIKE)
    with pytest.raises(SheafError, match="do not match"):
        total.add({"w": LIKE["w"]}, 1)
    with pytest.raises(SheafError, match="shape"):
        total.add({"w": np.zeros((3, 2)), "b": LIKE["b"]}, 1)
    with pytest.raises(SheafError, match=r"must be in \[0, 536870911\], got -1"):
        total.add(LIKE, -1)
    with pytest.raises(SheafError, match="got 9223372036854775807"):
        total.add(LIKE, 2**63 - 1)  # once summed as int64, it wrapped the weight negative
    with pytest.raises(SheafError, match="different tensors"):
        total.merge(ExactSum({"w": LIKE["w"]}))


def test_more_terms_than_an_exact_sum_holds_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exactsum, "MAX_TERMS", 3)
    total = ExactSum(LIKE)
    total.add_stacked({k: np.stack([v] * 3) for k, v in LIKE.items()}, [1, 1, 1])
    with pytest.raises(SheafError, match="at most 3 terms"):
        total.add(LIKE, 1)


def test_a_total_made_elsewhere_joins_exactly_with_its_weight_and_count() -> None:
    rng = np.random.default_rng(1)
    rows = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in LIKE.items()} for _ in range(4)]
    made = {k: sum(r[k].astype(np.float64) * 2 for r in rows[:3]) for k in LIKE}
    total = ExactSum(LIKE)
    total.add_total(made, weight=6, count=3)
    total.add(rows[3], 2)
    other = ExactSum(LIKE)
    other.add(rows[3], 2)
    other.add_total(made, weight=6, count=3)
    assert bits_equal(total.total(), other.total())
    assert (total.weight, total.count) == (8, 4)
    with pytest.raises(SheafError, match=">= 0"):
        total.add_total(made, weight=-1, count=1)


def test_weights_add_up_in_python_integers_that_never_wrap() -> None:
    total = ExactSum(LIKE)
    for _ in range(40):
        total.add(LIKE, exactsum.MAX_EXAMPLES)
    assert total.weight == 40 * (2**29 - 1)  # past int32; exact, whatever the count
