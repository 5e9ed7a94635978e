"""The arrays a run trains on: cast what is safe, refuse the rest before the first round.

Data from pandas and NumPy arrives in whatever types they chose — float64 features (pandas'
default), int8 or float labels, booleans. Torch models want float32 features and int64
class numbers, and a mismatch otherwise surfaces as a traceback from inside the round
loop. :func:`conform_federation` runs once before a simulation:

- features: float64, float16 and booleans become float32 (float32 keeps every value a model
  of float32 weights can use); integer features are kept (character and token indices,
  raw pixels) — a model that wants floats gets them from its own first layer; anything
  else (text, objects) is refused, and so are NaN or infinite features;
- labels: any integer or boolean type becomes int64; floats holding whole numbers become
  int64; anything else — fractions, NaN, text — is refused, and so is a class number
  outside ``0 .. num_classes - 1``.

Every refusal is one :class:`~sheaf.core.errors.DataError` line naming the split, the
problem and what to do.

Example:
    >>> import numpy as np
    >>> split = conform_split(Split(np.ones((2, 3)), np.array([0, 1], dtype=np.int8)), 2, "data")
    >>> split.x.dtype, split.y.dtype
    (dtype('float32'), dtype('int64'))
    >>> conform_split(Split(np.ones((2, 3)), np.array([0.5, 1.0])), 2, "client 3's data")
    Traceback (most recent call last):
    ...
    sheaf.core.errors.DataError: client 3's data: labels must be whole class numbers 0 to 1; found 0.5 (row 0); map them to class numbers first (e.g. pandas.factorize)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import DataError
from sheaf.data.dataset import Federation, Split

__all__ = ["conform_features", "conform_federation", "conform_labels", "conform_split"]


def conform_features(x: npt.NDArray[Any], who: str) -> npt.NDArray[Any]:
    """Features a model can take: float32 for floating and boolean data, integers as they are.

    Raises:
        DataError: for non-numeric features, or NaN or infinite values.
    """
    x = np.asarray(x)
    kind = x.dtype.kind
    if kind in "iu":
        return x
    if kind == "b":
        return x.astype(np.float32)
    if kind != "f":
        raise DataError(
            f"{who}: features must be numbers, got dtype {x.dtype}; encode text or categories first "
            "(e.g. a sheaf.data Pipeline with OneHot, or pandas.get_dummies)"
        )
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1)) if x.ndim > 1 else np.flatnonzero(~finite)
        raise DataError(
            f"{who}: features hold NaN or infinite values in {len(rows)} row(s) (first: row {int(rows[0])}); "
            "impute or drop them first (e.g. a sheaf.data Pipeline with Impute)"
        )
    return x.astype(np.float32, copy=False)


def conform_labels(y: npt.NDArray[Any], num_classes: int, who: str) -> npt.NDArray[np.int64]:
    """Labels as int64 class numbers in ``0 .. num_classes - 1``.

    Raises:
        DataError: for labels that are not whole numbers (or not numbers), or out of range.
    """
    y = np.asarray(y)
    wanted = f"whole class numbers 0 to {num_classes - 1}"
    advice = "map them to class numbers first (e.g. pandas.factorize)"
    if y.dtype.kind not in "iubf":
        example = y.flat[0] if y.size else None
        raise DataError(f"{who}: labels must be {wanted}, got dtype {y.dtype} (e.g. {example!r}); {advice}")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.floor(y))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{who}: labels must be {wanted}; found {y[row].item()!r} (row {row}); {advice}")
    labels = y.astype(np.int64, copy=False)
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise DataError(f"{who}: labels must be {wanted}; found {labels[row]} (row {row}); {advice}")
    return labels


def conform_split(split: Split, num_classes: int, who: str) -> Split:
    """A split whose features and labels a model can take (see the module docstring).

    Raises:
        DataError: if they cannot be cast safely.
    """
    x, y = conform_features(split.x, who), conform_labels(split.y, num_classes, who)
    return split if (x is split.x and y is split.y) else Split(x, y)


def conform_federation(federation: Federation) -> Federation:
    """The federation with its features and labels cast where safe, checked once for the run.

    Raises:
        DataError: naming the split whose features or labels cannot be used.
    """
    classes = federation.info.num_classes
    x = conform_features(federation.x, "the clients' features")
    y = conform_labels(federation.y, classes, "the clients' labels")
    central = conform_split(federation.central_test, classes, "the central test set")
    if x is federation.x and y is federation.y and central is federation.central_test:
        return federation
    info = dataclasses.replace(federation.info, input_dtype=x.dtype.name)
    return dataclasses.replace(federation, info=info, x=x, y=y, central_test=central)
