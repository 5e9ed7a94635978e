"""A client's own file gives exactly the rows, split and preprocessing of the simulation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sheaf.core.config import load_config
from sheaf.core.errors import ConfigError, DataError
from sheaf.data.catalog import build_federation
from sheaf.deploy.local import catalog_info, deployment_task, load_client_data, load_test_data
from tests.deploy.conftest import ROOT

HEART = ROOT / "examples" / "heart"


def test_each_hospitals_own_csv_gives_its_simulated_client_data_exactly(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(HEART / "split_csv.py"), "--out", str(tmp_path)], check=True)
    config = load_config(HEART / "heart.toml", ["seed=3"])
    federation = build_federation(config.data, config.seed)
    files = sorted(tmp_path.glob("*.csv"))
    assert [f.name for f in files] == ["0-cleveland.csv", "1-hungary.csv", "2-switzerland.csv", "3-va-long-beach.csv"]
    for client_id, path in enumerate(files):
        mine = load_client_data(
            path, client_id, dataset="heart", test_fraction=0.2, split_seed=3, info=catalog_info("heart")
        )
        simulated = federation.client(client_id)
        for got, want in ((mine.train, simulated.train), (mine.test, simulated.test)):
            assert got.x.dtype == want.x.dtype and np.array_equal(got.x, want.x)
            assert np.array_equal(got.y, want.y)


def test_npz_files_split_locally_or_bring_their_own_test_split(tmp_path: Path) -> None:
    x, y = np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 3
    np.savez(tmp_path / "a.npz", x=x, y=y)
    data = load_client_data(tmp_path / "a.npz", 4, test_fraction=0.25)
    assert (len(data.train), len(data.test)) == (15, 5)
    assert sorted(np.concatenate([data.train.y, data.test.y]).tolist()) == sorted(y.tolist())
    np.savez(tmp_path / "b.npz", x=x, y=y, x_test=x[:3], y_test=y[:3])
    data = load_client_data(tmp_path / "b.npz", 4, test_fraction=0.25)
    assert (len(data.train), len(data.test)) == (20, 3)


def test_a_plain_table_has_a_label_column_and_numeric_features(tmp_path: Path) -> None:
    config = load_config(overrides=["dataset=mine"])
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0, 1, 0, 1], "target": [0, 1, 1, 0]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_client_data(tmp_path / "t.csv", 0, dataset="mine", test_fraction=0.5, label="target")
    assert data.train.x.shape == (2, 2) and data.train.x.dtype == np.float32
    with pytest.raises(DataError, match="no label column 'label'"):
        load_client_data(tmp_path / "t.csv", 0, dataset="mine")
    frame.assign(a=["x", "y", "z", "w"]).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(DataError, match=r"feature columns \['a'\] are not numeric"):
        load_client_data(tmp_path / "s.csv", 0, label="target")
    frame.assign(a=[1.0, None, 3.0, 4.0]).to_csv(tmp_path / "n.csv", index=False)
    with pytest.raises(DataError, match="missing feature values"):
        load_client_data(tmp_path / "n.csv", 0, label="target")
    assert len(load_test_data(tmp_path / "t.csv", config, label="target")) == 4


def test_unusable_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_client_data(tmp_path / "missing.csv", 0)
    (tmp_path / "data.txt").write_text("1,2")
    with pytest.raises(DataError, match=r"must be \.csv, \.parquet or \.npz"):
        load_client_data(tmp_path / "data.txt", 0)
    np.savez(tmp_path / "x.npz", features=np.ones(3))
    with pytest.raises(DataError, match=r"lacks the array\(s\) \['x', 'y'\]"):
        load_client_data(tmp_path / "x.npz", 0)
    np.savez(tmp_path / "shape.npz", x=np.ones((4, 3), np.float32), y=np.zeros(4))
    with pytest.raises(DataError, match=r"samples of shape \(3,\), the run's model expects \(64,\)"):
        load_client_data(tmp_path / "shape.npz", 0, info=catalog_info("digits"))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="cannot read"):
        load_client_data(tmp_path / "objects.npz", 0)


def test_the_task_comes_from_the_config_or_the_catalogs_info() -> None:
    assert type(deployment_task(load_config())).__name__ == "TorchTask"
    custom = deployment_task(load_config(overrides=["task=tests.deploy.tasks:softmax"]))
    assert custom.init_params(0)["w"].shape == (64, 10)
    with pytest.raises(ConfigError, match="not in sheaf's catalog"):
        deployment_task(load_config(overrides=["dataset=private"]))
    assert catalog_info("private") is None


def test_parquet_files_read_like_their_csv(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(HEART / "split_csv.py"), "--out", str(tmp_path)], check=True)
    config = load_config(HEART / "heart.toml")
    pd.read_csv(tmp_path / "1-hungary.csv").to_parquet(tmp_path / "hungary.parquet")
    from_parquet = load_client_data(tmp_path / "hungary.parquet", 1, dataset="heart", split_seed=config.seed)
    simulated = build_federation(config.data, config.seed).client(1)
    assert np.array_equal(from_parquet.train.x, simulated.train.x)
    assert np.array_equal(from_parquet.test.y, simulated.test.y)
