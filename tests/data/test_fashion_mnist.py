from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from sheaf.core.config import DataConfig
from sheaf.core.errors import DataError
from sheaf.data.catalog import build_federation, load_dataset
from sheaf.data.sources import FASHION_MNIST_DIR, read_idx

installed = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)


@installed
def test_fashion_mnist_loads_from_the_debian_package() -> None:
    raw = load_dataset("fashion_mnist")
    assert np.asarray(raw.features).shape == (60_000, 1, 28, 28)
    assert raw.test is not None
    assert raw.test[0].shape == (10_000, 1, 28, 28)
    assert np.bincount(raw.labels).tolist() == [6000] * 10
    assert float(np.asarray(raw.features).min()) >= 0.0 and float(np.asarray(raw.features).max()) <= 1.0


@installed
def test_fashion_mnist_federation_uses_the_official_test_set() -> None:
    fed = build_federation(DataConfig(dataset="fashion_mnist", clients=100, alpha=0.5), seed=0)
    assert len(fed.central_test) == 10_000
    assert fed.info.input_shape == (1, 28, 28)
    assert int(fed.sizes.sum()) == 60_000


def test_missing_files_say_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHEAF_FASHION_MNIST_DIR", str(tmp_path))
    load_dataset.cache_clear()
    try:
        with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
            load_dataset("fashion_mnist")
    finally:
        load_dataset.cache_clear()


def test_read_idx_validates_the_header_and_size(tmp_path: Path) -> None:
    good = tmp_path / "ok-idx1-ubyte.gz"
    good.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])))
    assert read_idx(good).tolist() == [7, 8, 9]
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)
    junk = tmp_path / "junk"
    junk.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(junk)
