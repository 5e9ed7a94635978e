"""Arrays as raw bytes + dtype + shape: the only way sheaf stores or sends a tensor.

Nothing is pickled. Decoding accepts only plain numeric dtypes from an allow-list and
checks that the byte count matches the shape, so a corrupt or hostile record gives a
clear error instead of running code or reading past a buffer.

Example:
    >>> import numpy as np
    >>> record = array_to_record(np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> array_from_record(*record).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from sheaf.core.errors import SheafError

__all__ = ["ALLOWED_DTYPES", "MAX_DIMS", "array_from_record", "array_to_record"]

#: The most dimensions a decoded array may have.
MAX_DIMS = 32

#: dtype names (little-endian on the wire) that may be decoded.
ALLOWED_DTYPES = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32", "uint64", "bool"}
)


def array_to_record(array: np.ndarray[Any, Any]) -> tuple[str, tuple[int, ...], bytes]:
    """Return ``(dtype name, shape, little-endian C-order bytes)`` for an array.

    Raises:
        SheafError: if the dtype is not a plain numeric one.
    """
    name = array.dtype.name
    if name not in ALLOWED_DTYPES:
        raise SheafError(f"cannot encode an array of dtype {name}; use one of {sorted(ALLOWED_DTYPES)}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return name, tuple(int(d) for d in array.shape), np.ascontiguousarray(little).tobytes()


def array_from_record(dtype: str, shape: Sequence[int], data: bytes) -> np.ndarray[Any, Any]:
    """Rebuild an array from :func:`array_to_record`'s output, validating everything.

    The shape's size is computed in Python integers (NumPy's int64 product wraps, and a
    wrapped size of 0 once matched empty data), each dimension must be a whole number, and
    there are at most :data:`MAX_DIMS` of them.

    Raises:
        SheafError: on an unknown dtype, a shape that is not a sequence of at most
            :data:`MAX_DIMS` non-negative whole numbers, a size mismatch, or an array NumPy
            cannot represent.
    """
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise SheafError(f"refusing array of dtype {str(dtype)[:40]!r}; allowed: {sorted(ALLOWED_DTYPES)}")
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise SheafError(f"refusing array with shape {str(shape)[:80]}: not a sequence of whole numbers") from None
    if len(dims) > MAX_DIMS or any(d < 0 for d in dims):
        raise SheafError(
            f"refusing array with shape {dims[: MAX_DIMS + 1]}: at most {MAX_DIMS} dimensions, none negative"
        )
    kind = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(dims) * kind.itemsize  # Python ints: no overflow
    try:
        size = len(data)
        if expected != size:
            raise SheafError(f"array of shape {dims} and dtype {dtype} needs {expected} bytes, got {size}")
        array = np.frombuffer(data, dtype=kind).reshape(dims)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. (0, 2**62): no elements, but too big to index
        raise SheafError(f"refusing array of shape {dims} and dtype {dtype}: {exc}") from None
    return array.astype(np.dtype(dtype), copy=False)
