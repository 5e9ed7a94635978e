from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.errors import DataError
from sheaf.data.partition import (
    Partition,
    partition_dirichlet,
    partition_iid,
    partition_natural,
    partition_quantity,
    partition_shards,
)


@st.composite
def labelled(draw: st.DrawFn) -> tuple[np.ndarray, int, np.random.Generator]:
    classes = draw(st.integers(1, 6))
    n = draw(st.integers(10, 400))
    labels = np.asarray(draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)))
    clients = draw(st.integers(1, max(1, n // 5)))
    return labels, clients, np.random.default_rng(draw(st.integers(0, 2**32)))


def assert_disjoint(part: Partition, n: int) -> None:
    assert part.offsets[0] == 0
    assert (np.diff(part.offsets) >= 0).all()
    assert len(np.unique(part.indices)) == len(part.indices)
    assert ((part.indices >= 0) & (part.indices < n)).all()


@given(labelled())
def test_iid_deals_every_row_once_in_near_equal_parts(case: tuple[np.ndarray, int, np.random.Generator]) -> None:
    labels, clients, rng = case
    part = partition_iid(len(labels), clients, rng)
    assert_disjoint(part, len(labels))
    assert part.sizes.sum() == len(labels)
    assert part.sizes.max() - part.sizes.min() <= 1


@given(labelled(), st.floats(0.05, 100))
def test_dirichlet_deals_every_row_once_with_a_minimum_per_client(
    case: tuple[np.ndarray, int, np.random.Generator], alpha: float
) -> None:
    labels, clients, rng = case
    try:
        part = partition_dirichlet(labels, clients, alpha, rng, min_samples=1)
    except DataError as exc:  # a legitimate outcome for extreme draws: a clear message
        assert "raise alpha" in str(exc)
        return
    assert_disjoint(part, len(labels))
    assert part.sizes.sum() == len(labels)
    assert part.sizes.min() >= 1


def test_small_alpha_skews_labels_more_than_large_alpha() -> None:
    labels = np.repeat(np.arange(10), 200)

    def classes_per_client(alpha: float) -> float:
        part = partition_dirichlet(labels, 20, alpha, np.random.default_rng(0))
        return float(np.mean([len(np.unique(labels[part.client_indices(i)])) for i in range(20)]))

    assert classes_per_client(0.1) < classes_per_client(1.0) < classes_per_client(100.0)
    assert classes_per_client(100.0) == 10


@given(labelled(), st.integers(1, 3))
def test_shards_give_each_client_k_equal_shards_of_few_labels(
    case: tuple[np.ndarray, int, np.random.Generator], k: int
) -> None:
    labels, clients, rng = case
    if clients * k > len(labels):
        return
    part = partition_shards(labels, clients, k, rng)
    assert_disjoint(part, len(labels))
    assert len(set(part.sizes.tolist())) == 1
    shard = len(labels) // (clients * k)
    for i in range(clients):
        rows = part.client_indices(i)
        # each shard is a contiguous slice of the label-sorted rows
        for j in range(0, len(rows), shard):
            assert (np.diff(labels[rows[j : j + shard]]) >= 0).all()


def test_shards_are_pathological_when_shards_are_single_labels() -> None:
    labels = np.repeat(np.arange(10), 60)
    part = partition_shards(labels, 100, 2, np.random.default_rng(1))
    assert max(len(np.unique(labels[part.client_indices(i)])) for i in range(100)) <= 2


@given(st.integers(20, 2000), st.integers(1, 10), st.floats(0, 3), st.integers(0, 2**32))
def test_quantity_skew_sizes_sum_to_n_and_respect_the_minimum(n: int, clients: int, sigma: float, seed: int) -> None:
    part = partition_quantity(n, clients, sigma, np.random.default_rng(seed), min_samples=2)
    assert_disjoint(part, n)
    assert part.sizes.sum() == n
    assert part.sizes.min() >= 2


def test_quantity_skew_grows_with_sigma() -> None:
    def spread(sigma: float) -> float:
        sizes = partition_quantity(10_000, 50, sigma, np.random.default_rng(0)).sizes
        return float(sizes.std() / sizes.mean())

    assert spread(0.0) < 0.01 < spread(0.5) < spread(2.0)


def test_natural_partition_follows_the_key_in_the_given_order() -> None:
    groups = np.array(["b", "a", "b", "c", "a"])
    part = partition_natural(groups, order=("c", "b", "a"))
    assert part.names == ("c", "b", "a")
    assert [sorted(part.client_indices(i).tolist()) for i in range(3)] == [[3], [0, 2], [1, 4]]


def test_natural_partition_refuses_an_order_missing_a_key() -> None:
    with pytest.raises(DataError, match=r"no client for key values \['c'\]"):
        partition_natural(np.array(["a", "c"]), order=("a",))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda rng: partition_iid(5, 6, rng), "cannot give 6 clients at least 1 sample"),
        (
            lambda rng: partition_dirichlet(np.zeros(10), 2, 0.0, rng),
            "alpha must be > 0 for Dirichlet partitioning, got 0.0",
        ),
        (
            lambda rng: partition_dirichlet(np.zeros(10), 2, -1, rng),
            "alpha must be > 0 for Dirichlet partitioning, got -1",
        ),
        (lambda rng: partition_dirichlet(np.zeros(10), 6, 1.0, rng, min_samples=2), "use at most 5 clients"),
        (lambda rng: partition_shards(np.zeros(10), 6, 2, rng), "cannot give 12 clients"),
        (lambda rng: partition_quantity(10, 3, -1.0, rng), "sigma must be >= 0"),
    ],
)
def test_impossible_partitions_say_why(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=message):
        call(np.random.default_rng(0))


def test_partitions_cost_indices_not_copies_at_100k_clients() -> None:
    part = partition_iid(1_000_000, 100_000, np.random.default_rng(0))
    assert part.num_clients == 100_000
    assert part.indices.nbytes + part.offsets.nbytes < 10_000_000
