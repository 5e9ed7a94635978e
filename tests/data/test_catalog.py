from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.config import DataConfig
from sheaf.core.errors import DataError
from sheaf.data.catalog import _sort_within_clients, assign_rows, available_datasets, build_federation, load_dataset
from sheaf.data.summary import partition_summary


def test_the_catalog_lists_the_bundled_datasets() -> None:
    assert {spec.name for spec in available_datasets()} >= {"digits", "heart"}


def test_unknown_dataset_names_the_valid_ones() -> None:
    with pytest.raises(
        DataError, match="unknown dataset 'mnist'; choose one of: chem97, digits, fashion_mnist, heart, shakespeare"
    ):
        load_dataset("mnist")


def test_digits_federation_has_disjoint_clients_and_a_held_out_central_test_set() -> None:
    config = DataConfig(clients=20)
    rows = assign_rows(config, load_dataset("digits"), seed=0)
    client_rows = rows.clients.indices
    assert rows.central_rows is not None
    assert len(np.intersect1d(client_rows, rows.central_rows)) == 0
    assert len(client_rows) + len(rows.central_rows) == 1797
    fed = build_federation(config, seed=0)
    assert fed.num_clients == 20
    assert len(fed.central_test) == len(rows.central_rows)
    assert fed.info.input_shape == (64,)
    assert float(fed.x.max()) <= 1.0
    for cid in range(20):
        data = fed.client(cid)
        assert len(data.train) == fed.train_counts[cid] > 0
        assert len(data.test) == fed.test_counts[cid]


def test_client_data_are_views_not_copies() -> None:
    fed = build_federation(DataConfig(clients=5, partition="iid"), seed=0)
    assert np.shares_memory(fed.client(3).train.x, fed.x)


def test_the_same_seed_gives_the_same_federation_and_another_seed_another() -> None:
    a = build_federation(DataConfig(), seed=3)
    b = build_federation(DataConfig(), seed=3)
    c = build_federation(DataConfig(), seed=4)
    assert np.array_equal(a.x, b.x)
    assert np.array_equal(a.offsets, b.offsets)
    assert not np.array_equal(a.offsets, c.offsets)


def test_heart_natural_partition_is_the_four_hospitals() -> None:
    fed = build_federation(DataConfig(dataset="heart", partition="natural", clients=4), seed=0)
    assert fed.client_names == ("Cleveland", "Hungary", "Switzerland", "VA Long Beach")
    assert fed.sizes.tolist() == [304, 293, 123, 200]
    assert fed.info.num_classes == 2
    assert len(fed.info.feature_names) == fed.info.input_shape[0] == 25
    # the central test set is the union of the hospitals' local test splits
    assert len(fed.central_test) == int(fed.test_counts.sum())
    assert np.isfinite(fed.x).all()


def test_heart_preprocessing_is_fitted_on_each_hospitals_own_training_rows_only() -> None:
    fed = build_federation(DataConfig(dataset="heart", partition="natural", clients=4), seed=0)
    for cid in range(4):
        train = fed.client(cid).train.x
        age = train[:, 0]  # standardised with this hospital's own mean and std
        assert abs(float(age.mean())) < 1e-5
        assert abs(float(age.std()) - 1.0) < 1e-4


def test_heart_clients_must_match_the_hospitals() -> None:
    with pytest.raises(
        DataError, match=r"has 4 natural clients \(Cleveland, Hungary, Switzerland, VA Long Beach\); set data.clients=4"
    ):
        build_federation(DataConfig(dataset="heart", partition="natural", clients=20), seed=0)
    assert build_federation(DataConfig(dataset="heart", partition="natural", clients=0), seed=0).num_clients == 4


def test_digits_has_no_natural_partition() -> None:
    with pytest.raises(DataError, match="has no natural partition; use one of: iid, dirichlet, shards, quantity"):
        build_federation(DataConfig(partition="natural"), seed=0)


def test_unknown_partitioner_names_the_valid_ones() -> None:
    with pytest.raises(
        DataError, match="unknown partition 'zipf'; choose one of: iid, dirichlet, shards, quantity, natural"
    ):
        build_federation(DataConfig(partition="zipf"), seed=0)


def test_more_clients_than_samples_is_refused() -> None:
    with pytest.raises(DataError, match="cannot give 5000 clients"):
        build_federation(DataConfig(clients=5000, partition="iid"), seed=0)


def test_each_client_keeps_a_local_test_share() -> None:
    fed = build_federation(DataConfig(clients=10, partition="iid", test_fraction=0.25), seed=0)
    np.testing.assert_allclose(fed.test_counts / fed.sizes, 0.25, atol=0.02)


def test_partition_summary_counts_every_row_by_label() -> None:
    fed = build_federation(DataConfig(clients=6, partition="shards", shards_per_client=2), seed=0)
    table = partition_summary(fed)
    label_columns = [c for c in table.columns if c.startswith("y=")]
    assert len(table) == 6
    assert (table[label_columns].sum(axis=1) == table["train"] + table["test"]).all()
    assert (table["classes"] <= 4).all()


def test_a_client_recomputes_its_own_local_split_from_its_rows_alone() -> None:
    from sheaf.data.catalog import local_split

    config = DataConfig(dataset="heart", partition="natural", clients=4)
    raw = load_dataset("heart")
    rows = assign_rows(config, raw, seed=5)
    for client in range(4):
        own = np.flatnonzero(raw.groups == rows.clients.names[client])  # the hospital's file, in order
        order, train = local_split(client, len(own), config.test_fraction, seed=5)
        assert own[order][:train].tolist() == rows.clients.client_indices(client)[: rows.train_counts[client]].tolist()
        assert own[order][train:].tolist() == rows.clients.client_indices(client)[rows.train_counts[client] :].tolist()


@given(
    sizes=st.lists(st.integers(0, 9), min_size=1, max_size=40),
    keys=st.lists(
        st.sampled_from([0.0, 0.25, 0.5, 0.9999999999999999]) | st.floats(0, 1, exclude_max=True),
        min_size=400,
        max_size=400,
    ),
)
def test_sorting_rows_within_clients_is_lexsort_exactly(sizes: list[int], keys: list[float]) -> None:
    owner = np.repeat(np.arange(len(sizes)), sizes)
    values = np.array(keys[: len(owner)])
    assert np.array_equal(_sort_within_clients(owner, values), np.lexsort((values, owner)))
