"""Local preprocessing of tabular data, fitted on one client's own rows.

A :class:`TabularSchema` declares the columns once — which are numeric, which are
categorical with which categories, which raw values mean "missing". Every client then fits
a :class:`TabularPreprocessor` on its *own* training rows (median imputation, standard
scaling) and transforms its train and test rows with it. Because the categories are
declared, not learned, every client produces the same feature columns in the same order.

Example:
    >>> import pandas as pd
    >>> schema = TabularSchema(numeric=("age",), categorical={"sex": ("F", "M")})
    >>> frame = pd.DataFrame({"age": [30.0, None, 50.0], "sex": ["M", "F", None]})
    >>> fitted = TabularPreprocessor(schema).fit(frame)
    >>> fitted.transform(frame).astype(float).round(3).tolist()
    [[-1.225, 0.0, 1.0], [0.0, 1.0, 0.0], [1.225, 0.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sheaf.core.errors import DataError

__all__ = ["FittedTabular", "TabularPreprocessor", "TabularSchema"]


@dataclass(frozen=True)
class TabularSchema:
    """The columns of a tabular dataset, declared once for every client.

    Attributes:
        numeric: numeric feature columns.
        categorical: categorical column -> its categories (one-hot encoded, in this order;
            a missing or unseen value encodes as all zeros).
        missing_values: column -> raw values that mean "missing" (e.g. a cholesterol of 0).
    """

    numeric: tuple[str, ...] = ()
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    missing_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every input column, numeric first."""
        return self.numeric + tuple(self.categorical)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the output features, in order."""
        one_hot = tuple(f"{col}={cat}" for col, cats in self.categorical.items() for cat in cats)
        return self.numeric + one_hot

    def check(self, frame: pd.DataFrame) -> None:
        """Raise a clear error if ``frame`` lacks a declared column."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataError(f"data lacks the column(s) {missing} that the schema declares")


@dataclass(frozen=True)
class FittedTabular:
    """Imputation values and scaling fitted on one client's rows; applies them to others."""

    schema: TabularSchema
    medians: npt.NDArray[np.float64]
    means: npt.NDArray[np.float64]
    stds: npt.NDArray[np.float64]

    def transform(self, frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        """Impute, scale and one-hot encode ``frame`` into a float32 matrix."""
        self.schema.check(frame)
        numeric = _numeric_block(frame, self.schema)
        numeric = np.where(np.isnan(numeric), self.medians, numeric)
        scaled = (numeric - self.means) / self.stds
        # A column this client never observed is left at the (unknown) mean: zero.
        scaled = np.nan_to_num(scaled, nan=0.0)
        blocks = [scaled] + [_one_hot(frame[col], cats) for col, cats in self.schema.categorical.items()]
        return np.hstack(blocks).astype(np.float32)


@dataclass(frozen=True)
class TabularPreprocessor:
    """Fits per-client imputation and standard scaling for a :class:`TabularSchema`."""

    schema: TabularSchema

    def fit(self, frame: pd.DataFrame) -> FittedTabular:
        """Fit on one client's own rows (median imputation, then mean/std scaling).

        Raises:
            DataError: if a declared column is missing.
        """
        self.schema.check(frame)
        numeric = _numeric_block(frame, self.schema)
        observed = ~np.isnan(numeric)
        counts = observed.sum(axis=0)
        medians = np.array(
            [np.median(numeric[observed[:, j], j]) if counts[j] else np.nan for j in range(numeric.shape[1])]
        )
        # After median imputation a column is either fully observed or (never seen by this
        # client) fully NaN; the latter keeps NaN statistics and transforms to zero.
        seen = counts > 0
        imputed = np.where(observed, numeric, np.where(seen, medians, 0.0))
        rows = max(len(imputed), 1)
        means = np.where(seen, imputed.sum(axis=0) / rows, np.nan)
        stds = np.sqrt(np.where(seen, ((imputed - np.nan_to_num(means)) ** 2).sum(axis=0) / rows, np.nan))
        stds = np.where((stds > 0) & np.isfinite(stds), stds, 1.0)
        return FittedTabular(self.schema, medians, means, stds)


def _numeric_block(frame: pd.DataFrame, schema: TabularSchema) -> npt.NDArray[np.float64]:
    columns = []
    for col in schema.numeric:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        for marker in schema.missing_values.get(col, ()):
            values = np.where(values == marker, np.nan, values)
        columns.append(values)
    if not columns:
        return np.zeros((len(frame), 0))
    return np.column_stack(columns)


def _one_hot(column: pd.Series, categories: Sequence[str]) -> npt.NDArray[np.float64]:
    text = column.astype("string").fillna("").to_numpy(dtype=object)
    return (
        np.stack([(text == cat) for cat in categories], axis=1).astype(np.float64)
        if categories
        else np.zeros((len(column), 0))
    )
