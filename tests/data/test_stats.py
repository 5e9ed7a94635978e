"""Federated statistics: merging clients' summaries equals summarising the pooled values."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.errors import DataError
from sheaf.data.federated_stats import compute_stats, merge_answers, merge_stats
from sheaf.data.stats import CategoricalStats, ColumnQuery, NumericStats, histogram_edges, stats_from_dict

values = st.lists(
    st.one_of(st.none(), st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)),
    min_size=1,
    max_size=60,
)


def split(items: list[float | None], cuts: list[int]) -> list[list[float | None]]:
    points = sorted({min(c, len(items)) for c in cuts})
    return [items[a:b] for a, b in zip([0, *points], [*points, len(items)])]


def numeric(items: list[float | None], query: ColumnQuery) -> NumericStats:
    frame = pd.DataFrame({"x": pd.Series(items, dtype="float64")})
    stats = compute_stats(frame, [query])["x"]
    assert isinstance(stats, NumericStats)
    return stats


@given(values, st.lists(st.integers(0, 60), max_size=5), st.floats(-100, 100))
def test_merged_clients_equal_the_pooled_values(items: list[float | None], cuts: list[int], center: float) -> None:
    observed = [v for v in items if v is not None]
    edges = histogram_edges(min(observed), max(observed), 7) if observed else ()
    query = ColumnQuery("x", "numeric", edges, center)
    merged = merge_stats([numeric(part, query) for part in split(items, cuts)])
    pooled = numeric(items, query)
    assert (merged.count, merged.missing, merged.min, merged.max, merged.hist) == (
        pooled.count,
        pooled.missing,
        pooled.min,
        pooled.max,
        pooled.hist,
    )
    assert merged.total == pytest.approx(pooled.total, rel=1e-12, abs=1e-9)
    assert merged.total_sq == pytest.approx(pooled.total_sq, rel=1e-12, abs=1e-9)
    if observed:
        assert merged.mean == pytest.approx(float(np.mean(observed)), rel=1e-9, abs=1e-9)
        assert merged.std == pytest.approx(float(np.std(observed)), rel=1e-7, abs=1e-6)


@given(
    st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=1, max_size=80),
    st.floats(0, 1),
    st.integers(1, 64),
)
def test_a_quantile_is_within_one_bin_of_numpys(items: list[float], q: float, bins: int) -> None:
    edges = histogram_edges(min(items), max(items), bins)
    stats = numeric(list(items), ColumnQuery("x", "numeric", edges))
    width = (max(items) - min(items)) / bins
    assert abs(stats.quantile(q) - float(np.quantile(items, q))) <= width * (1 + 1e-9) + 1e-9
    assert min(items) <= stats.quantile(q) <= max(items)


def test_quantiles_need_a_histogram_and_a_valid_level() -> None:
    stats = numeric([1.0, 2.0], ColumnQuery("x", "numeric"))
    with pytest.raises(DataError, match="no histogram; ask for bin edges"):
        stats.quantile(0.5)
    with pytest.raises(DataError, match=r"quantile must be in \[0, 1\], got 2"):
        stats.quantile(2)


def test_a_column_nobody_observed_has_no_mean_and_no_quantile() -> None:
    stats = numeric([None, None], ColumnQuery("x", "numeric", (0.0, 1.0)))
    assert stats.count == 0 and stats.missing == 2
    assert math.isnan(stats.mean) and math.isnan(stats.quantile(0.5))


@given(values, st.lists(st.integers(0, 60), max_size=4))
def test_statistics_survive_json_and_their_additive_vector(items: list[float | None], cuts: list[int]) -> None:
    observed = [v for v in items if v is not None]
    query = ColumnQuery("x", "numeric", histogram_edges(min(observed), max(observed), 5) if observed else ())
    stats = numeric(items, query)
    assert stats_from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    assert stats.with_additive(stats.additive()) == stats
    # the additive parts of clients sum to the additive part of the merge (what secure aggregation needs)
    parts = [numeric(p, query) for p in split(items, cuts)]
    np.testing.assert_allclose(sum(p.additive() for p in parts), merge_stats(parts).additive(), rtol=1e-12, atol=1e-9)


def test_categorical_counts_open_and_declared() -> None:
    frame = pd.DataFrame({"c": ["b", "a", None, "b", "z"]})
    open_stats = compute_stats(frame, [ColumnQuery("c", "categorical")])["c"]
    declared = compute_stats(frame, [ColumnQuery("c", "categorical", categories=("b", "a", "q"))])["c"]
    assert open_stats == CategoricalStats(4, 1, {"a": 1, "b": 2, "z": 1})
    assert declared == CategoricalStats(4, 1, {"b": 2, "a": 1, "q": 0}, other=1, declared=True)
    assert open_stats.most_frequent() == "b"
    assert open_stats.vocabulary(min_count=2) == ("b",)
    np.testing.assert_array_equal(declared.additive(), [4, 1, 1, 2, 1, 0])
    with pytest.raises(DataError, match="open vocabulary is not a fixed-length sum; declare the categories"):
        open_stats.additive()


def test_vocabularies_merge_to_the_pooled_one() -> None:
    a = compute_stats(pd.DataFrame({"c": ["x", "y"]}), [ColumnQuery("c", "categorical")])
    b = compute_stats(pd.DataFrame({"c": ["y", "w", None]}), [ColumnQuery("c", "categorical")])
    merged = merge_answers([a, b])["c"]
    assert merged == CategoricalStats(4, 1, {"w": 1, "x": 1, "y": 2})
    assert isinstance(merged, CategoricalStats) and list(merged.counts) == ["w", "x", "y"]


def test_ties_for_most_frequent_go_to_the_first_value_in_sorted_order() -> None:
    assert CategoricalStats(4, 0, {"b": 2, "a": 2}).most_frequent() == "a"
    assert CategoricalStats(0, 3, {}).most_frequent() is None


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], "no client answered"),
        (
            [
                NumericStats(1, 0, 0.0, 0.0, 1.0, 1.0, center=0.0),
                NumericStats(1, 0, 0.0, 0.0, 1.0, 1.0, center=1.0),
            ],
            "different requests",
        ),
        ([NumericStats(1, 0, 0.0, 0.0, 1.0, 1.0), CategoricalStats(1, 0, {"a": 1})], "different requests"),
        (
            [CategoricalStats(1, 0, {"a": 1}, declared=True), CategoricalStats(1, 0, {"b": 1}, declared=True)],
            "different declared categories",
        ),
    ],
)
def test_merging_mismatched_answers_is_refused(parts: list[NumericStats | CategoricalStats], message: str) -> None:
    with pytest.raises(DataError, match=message):
        merge_stats(parts)


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "numeric", "count": 2, "missing": 0, "total": 1, "total_sq": 1, "min": 0, "max": 1, "hist": [1]},
        {"kind": "numeric", "count": -1, "missing": 0, "total": 1, "total_sq": 1, "min": 0, "max": 1},
        {"kind": "categorical", "count": 1, "missing": 0, "counts": {"a": -1}},
        {"kind": "weird"},
        {"count": 1},
    ],
)
def test_malformed_statistics_from_a_client_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(DataError, match="malformed column statistics"):
        stats_from_dict(raw)


def test_a_query_checks_its_settings() -> None:
    with pytest.raises(DataError, match="kind must be 'numeric' or 'categorical'"):
        ColumnQuery("x", "text")
    with pytest.raises(DataError, match="at least two non-decreasing numbers"):
        ColumnQuery("x", "numeric", edges=(2.0, 1.0))
    with pytest.raises(DataError, match="lacks"):
        compute_stats(pd.DataFrame({"y": [1.0]}), [ColumnQuery("x", "numeric")])
