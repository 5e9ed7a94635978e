"""Offline dataset sources: raw rows, labels and (where there is one) a natural key.

A loader returns a :class:`RawDataset`: everything before partitioning. What happens next
— holding out a central test set, dealing rows to clients, each client's preprocessing —
is :func:`sheaf.data.build_federation`'s job.

Bundled here:

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), pixels
  scaled to [0, 1]. No natural partition.
- ``heart``: UCI Heart Disease from four hospitals (Cleveland 304, Hungary 293, VA Long
  Beach 200, Switzerland 123 patients), target "disease present" (``num > 0``); the
  natural key is the hospital. Missing values are imputed per client.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sheaf.core.errors import DataError
from sheaf.data.preprocess import TabularPreprocessor, TabularSchema

__all__ = ["HEART_SCHEMA", "RawDataset", "load_digits", "load_heart"]

HEART_SHA256 = "574f2fa2b43012fa25fca4fcdb36bd7c6bccdd0af4242f6c0e4c8633c5a072ae"

#: The heart data's columns: declared once, used by every hospital.
HEART_SCHEMA = TabularSchema(
    numeric=("age", "trestbps", "chol", "thalch", "oldpeak", "ca"),
    categorical={
        "sex": ("Female", "Male"),
        "cp": ("asymptomatic", "atypical angina", "non-anginal", "typical angina"),
        "fbs": ("False", "True"),
        "restecg": ("lv hypertrophy", "normal", "st-t abnormality"),
        "exang": ("False", "True"),
        "slope": ("downsloping", "flat", "upsloping"),
        "thal": ("fixed defect", "normal", "reversable defect"),
    },
    # A blood pressure or cholesterol of 0 is how the source records "not measured".
    missing_values={"trestbps": (0,), "chol": (0,)},
)


@dataclass(frozen=True)
class RawDataset:
    """A dataset before partitioning.

    Attributes:
        name: dataset name.
        features: one row per sample: a float array, or a DataFrame for tabular data
            that needs fitted preprocessing.
        labels: integer class per row.
        class_names: a readable name per class.
        groups: the natural key per row (e.g. hospital), if the data has one.
        group_order: the client order for a natural partition.
        test: an official central test set ``(features, labels)``, if the data has one.
        preprocessor: fitted per client on its own rows, if the features need it; when
            set, the central test set is the union of the clients' local test splits.
    """

    name: str
    features: npt.NDArray[Any] | pd.DataFrame
    labels: npt.NDArray[np.int64]
    class_names: tuple[str, ...]
    groups: npt.NDArray[Any] | None = None
    group_order: tuple[str, ...] = ()
    test: tuple[npt.NDArray[Any], npt.NDArray[np.int64]] | None = None
    preprocessor: TabularPreprocessor | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _digits_file() -> Path | None:
    # Importing scikit-learn costs ~2.5 s here; the digits ship as a CSV inside its
    # package, so read that file directly when it is where scikit-learn keeps it.
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def load_digits() -> RawDataset:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1]."""
    path = _digits_file()
    if path is not None:
        with gzip.open(path) as handle:
            table = np.loadtxt(handle, delimiter=",")
        pixels, target = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - scikit-learn moved its data; use its loader
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        pixels, target = bunch.data, bunch.target
    return RawDataset(
        name="digits",
        features=(pixels / 16.0).astype(np.float32),
        labels=target.astype(np.int64),
        class_names=tuple(str(c) for c in range(10)),
    )


def _heart_csv() -> bytes:
    data = resources.files("sheaf.data").joinpath("files/heart_disease_uci.csv").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != HEART_SHA256:
        raise DataError(
            f"bundled heart_disease_uci.csv has sha256 {digest[:12]}..., expected {HEART_SHA256[:12]}...; "
            "reinstall sheaf"
        )
    return data


def load_heart() -> RawDataset:
    """UCI Heart Disease of four hospitals; target is ``num > 0`` (disease present)."""
    import io

    frame = pd.read_csv(io.BytesIO(_heart_csv()))
    return RawDataset(
        name="heart",
        features=frame[list(HEART_SCHEMA.columns)],
        labels=(frame["num"].to_numpy() > 0).astype(np.int64),
        class_names=("no disease", "disease"),
        groups=frame["dataset"].astype(str).to_numpy(),
        group_order=("Cleveland", "Hungary", "Switzerland", "VA Long Beach"),
        preprocessor=TabularPreprocessor(HEART_SCHEMA),
    )
