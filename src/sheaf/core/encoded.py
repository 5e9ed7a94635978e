"""An update as its encoder sent it: named arrays of raw numbers, and the layout they must have.

A compressed update does not travel as a delta shaped like the model: a client sends its
encoder's own arrays — packed 4-bit codes (``uint8``), per-bucket ranges (``float32``),
a bitmap and the values it marks, half-precision floats — and the server's half of the
same step decodes them (:mod:`sheaf.compress`). :class:`Encoded` holds those arrays
(allow-listed numeric dtypes only, as everywhere tensors travel: :mod:`sheaf.core.tensor`;
never pickled), and :data:`EncodedLayout` says what one encoder sends for one model:
each array's name, dtype and shape. The layout is fixed before the round starts, so an
encoded update is bounded by it — the deployed server checks a result's declared tensors
against it before it takes any bytes, and refuses anything else (:func:`layout_problem`).

Example:
    >>> import numpy as np
    >>> sent = Encoded({"codes": np.zeros(3, np.uint8), "scales": np.ones(1, np.float32)})
    >>> sent.nbytes, sent.layout
    (7, (('codes', 'uint8', (3,)), ('scales', 'float32', (1,))))
    >>> layout_problem(sent, (("codes", "uint8", (4,)), ("scales", "float32", (1,))))
    "encoded array 'codes' is uint8 (3,), its encoder sends uint8 (4,)"
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import SheafError
from sheaf.core.tensor import ALLOWED_DTYPES

__all__ = ["Encoded", "EncodedLayout", "layout_bytes", "layout_problem"]

#: What an encoder sends for one model: ``(name, dtype name, shape)`` of each array, in order.
EncodedLayout = tuple[tuple[str, str, tuple[int, ...]], ...]


def layout_bytes(layout: EncodedLayout) -> int:
    """The bytes an encoding with ``layout`` takes.

    Example:
        >>> layout_bytes((("codes", "uint8", (3,)), ("scales", "float32", (2,))))
        11
    """
    return sum(math.prod(shape) * np.dtype(dtype).itemsize for _, dtype, shape in layout)


class Encoded(Mapping[str, npt.NDArray[Any]]):
    """An immutable ordered mapping of names to arrays of allow-listed numeric dtypes.

    Args:
        arrays: name -> array. Held as read-only views (not copied).

    Raises:
        SheafError: if a name is empty or an array's dtype may not travel.
    """

    __slots__ = ("_arrays",)

    def __init__(self, arrays: Mapping[str, npt.ArrayLike]) -> None:
        held: dict[str, npt.NDArray[Any]] = {}
        for name, value in arrays.items():
            array = np.asarray(value)
            if not name or array.dtype.name not in ALLOWED_DTYPES:
                raise SheafError(
                    f"encoded array {name!r} of dtype {array.dtype.name} cannot travel; "
                    f"use a non-empty name and one of {sorted(ALLOWED_DTYPES)}"
                )
            view = array.view()
            view.flags.writeable = False
            held[name] = view
        self._arrays = held

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.dtype.name}{list(v.shape)}" for k, v in self.items())
        return f"Encoded({inner})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Encoded) or self.layout != other.layout:
            return False
        return all(np.array_equal(self[k], other[k]) for k in self)

    __hash__ = None  # type: ignore[assignment]

    @property
    def nbytes(self) -> int:
        """The bytes of every array: what the encoding costs on the wire (before framing)."""
        return sum(int(array.nbytes) for array in self._arrays.values())

    @property
    def layout(self) -> EncodedLayout:
        """Each array's name, dtype and shape."""
        return tuple((name, array.dtype.name, tuple(int(d) for d in array.shape)) for name, array in self.items())


def layout_problem(encoded: Encoded, layout: EncodedLayout) -> str | None:
    """Why ``encoded`` is not what an encoder with ``layout`` sends, as one line (None if it is)."""
    names = [name for name, _, _ in layout]
    if list(encoded) != names:
        return f"encoded update has arrays {list(encoded)[:8]}, its encoder sends {names[:8]}"
    for name, dtype, shape in layout:
        got = encoded[name]
        if got.dtype.name != dtype or got.shape != shape:
            return f"encoded array {name!r} is {got.dtype.name} {got.shape}, its encoder sends {dtype} {shape}"
    return None
