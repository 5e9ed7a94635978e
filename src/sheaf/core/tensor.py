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

from collections.abc import Sequence
from typing import Any

import numpy as np

from sheaf.core.errors import SheafError

__all__ = ["ALLOWED_DTYPES", "array_from_record", "array_to_record"]

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

    Raises:
        SheafError: on an unknown dtype, a negative dimension or a size mismatch.
    """
    if dtype not in ALLOWED_DTYPES:
        raise SheafError(f"refusing array of dtype {dtype!r}; allowed: {sorted(ALLOWED_DTYPES)}")
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise SheafError(f"refusing array with negative dimension in shape {dims}")
    kind = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(dims, dtype=np.int64)) * kind.itemsize
    if expected != len(data):
        raise SheafError(f"array of shape {dims} and dtype {dtype} needs {expected} bytes, got {len(data)}")
    array = np.frombuffer(data, dtype=kind).reshape(dims)
    return array.astype(np.dtype(dtype), copy=False)
