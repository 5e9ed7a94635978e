"""Python API data types: cast what is safe before the run, refuse the rest in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sheaf.core.config import DataConfig
from sheaf.core.errors import DataError
from sheaf.data.catalog import build_federation
from sheaf.data.dataset import Split
from sheaf.data.dtypes import conform_federation, conform_split
from sheaf.data.sources import RawDataset
from sheaf.run.simulate import simulate

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("x", "y", "x_dtype"),
    [
        (RNG.random((4, 2)), np.array([0, 1, 2, 1], dtype=np.int8), np.float32),  # pandas' float64, int8
        (RNG.random((4, 2)).astype(np.float16), np.array([0, 1, 2, 1], dtype=np.uint16), np.float32),
        (RNG.random((4, 2)) > 0.5, np.array([True, False, True, True]), np.float32),
        (np.arange(8, dtype=np.uint8).reshape(4, 2), np.array([0.0, 1.0, 2.0, 1.0]), np.uint8),  # token ids
    ],
)
def test_safe_types_are_cast(x: np.ndarray, y: np.ndarray, x_dtype: type) -> None:
    split = conform_split(Split(x, y), 3, "data")
    assert split.x.dtype == x_dtype and split.y.dtype == np.int64
    np.testing.assert_array_equal(split.y, y.astype(np.int64))


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.ones((2, 2)), np.array([0.5, 1.0]), "labels must be whole class numbers 0 to 2; found 0.5 (row 0)"),
        (np.ones((2, 2)), np.array([0.0, np.nan]), "found nan (row 1)"),
        (np.ones((2, 2)), np.array(["yes", "no"]), "labels must be whole class numbers 0 to 2, got dtype <U3"),
        (np.ones((2, 2)), np.array([0, 3]), "found 3 (row 1)"),
        (np.ones((2, 2)), np.array([-1, 0]), "found -1 (row 0)"),
        (np.array([["a", "b"], ["c", "d"]]), np.array([0, 1]), "features must be numbers, got dtype <U1"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), np.array([0, 1]), "NaN or infinite values in 1 row(s) (first: row 0)"),
    ],
)
def test_what_cannot_be_cast_is_one_clear_line(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=None) as error:
        conform_split(Split(x, y), 3, "client 2's data")
    assert str(error.value).startswith("client 2's data: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_federation_already_in_shape_is_left_as_it_is() -> None:
    federation = build_federation(DataConfig(clients=4, partition="iid"), seed=0)
    assert conform_federation(federation) is federation


def raw(features: np.ndarray, labels: np.ndarray) -> RawDataset:
    return RawDataset("mine", features, labels, class_names=("no", "yes"))


def test_a_run_on_float64_features_and_int8_labels_trains(tmp_path: Path) -> None:
    x = RNG.normal(size=(300, 5))
    y = (x[:, 0] > 0).astype(np.int8)
    config = DataConfig(clients=4, partition="iid")
    federation = build_federation(config, 0, raw=raw(x, y))
    assert federation.x.dtype == np.float64 and federation.y.dtype == np.int8

    result = simulate(
        overrides=["rounds=3", "clients=4", "partition=iid", f"runs_dir={tmp_path}"], federation=federation
    )

    assert result.history.final_central["accuracy"] > 0.7


def test_a_run_on_labels_it_cannot_use_stops_before_its_first_round(tmp_path: Path) -> None:
    x = RNG.normal(size=(100, 3))
    federation = build_federation(DataConfig(clients=4, partition="iid"), 0, raw=raw(x, (x[:, 0] > 0) / 2))

    with pytest.raises(DataError, match="the clients' labels: labels must be whole class numbers 0 to 1"):
        simulate(overrides=["rounds=3", f"runs_dir={tmp_path}"], federation=federation)
    assert not list(tmp_path.glob("*.sqlite"))  # refused before a store, or a round, was made
