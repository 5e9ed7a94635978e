"""Named float arrays: the model parameters that travel between server and clients.

``Params`` is an immutable, ordered mapping from a name to a floating-point NumPy array.
It knows nothing of torch or any other framework, so strategies, the run store and the
wire format can all work on it. Arithmetic is element-wise per name and keeps each
array's dtype.

Example:
    >>> import numpy as np
    >>> p = Params({"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)})
    >>> q = p + p * 0.5
    >>> float(q["w"][0, 0]), q["w"].dtype.name
    (1.5, 'float32')
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

from sheaf.core.errors import SheafError

__all__ = ["Array", "ParamSpec", "Params", "sum_of_squares"]

# OpenBLAS's ddot (numpy's dot of two float64 vectors) splits a vector of more than 10,000
# elements between its threads and adds the parts, so its result depends on how many threads
# it has (one per core of the machine), and on a busy machine the caller waits milliseconds
# for the other thread: 80 ms for one client's norm of the Fashion-MNIST CNN at load 11 here.
_DOT_THREADED = 10_000


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def sum_of_squares(values: npt.NDArray[Any]) -> float:
    """``v · v`` of a flat float64 array, the same bits on every machine, on this thread.

    Vectors longer than OpenBLAS's threading threshold are cut in two (the first half
    rounded up) and each half is summed on one BLAS thread, then the halves added: the
    bits numpy's ``dot`` gives on two cores, whatever the cores, and without threads.

    Example:
        >>> sum_of_squares(np.arange(4.0)), sum_of_squares(np.ones(30_001))
        (14.0, 30001.0)
    """
    if len(values) <= _DOT_THREADED:
        return float(np.dot(values, values))
    first, second = values[: (len(values) + 1) // 2], values[(len(values) + 1) // 2 :]
    with _blas().limit(limits=1, user_api="blas"):
        return 0.0 + float(np.dot(first, first)) + float(np.dot(second, second))


Array = npt.NDArray[np.floating[Any]]

#: The shape and dtype of every named array, used to validate incoming updates.
ParamSpec = Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]]


def _as_float_array(name: str, value: npt.ArrayLike) -> Array:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise SheafError(
            f"parameter {name!r} must be a floating-point array, got dtype {array.dtype}; "
            "cast it (e.g. .astype(np.float32)) before building Params"
        )
    return array


class Params(Mapping[str, Array]):
    """An immutable ordered mapping of names to floating-point arrays.

    Args:
        arrays: name -> array-like of a floating dtype. Arrays are not copied: Params holds
            read-only views of them (changing the originals would show through).

    Raises:
        SheafError: if an array is not of a floating dtype.
    """

    __slots__ = ("_arrays",)

    def __init__(self, arrays: Mapping[str, npt.ArrayLike]) -> None:
        converted: dict[str, Array] = {}
        for name, value in arrays.items():
            # A read-only view: nobody changes params in place through a Params (the global
            # params are shared by every client of a round), while the caller's own array
            # stays writable and nothing is copied.
            view = _as_float_array(name, value).view()
            view.flags.writeable = False
            converted[name] = view
        self._arrays = converted

    # Mapping protocol -------------------------------------------------------------
    def __getitem__(self, name: str) -> Array:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.dtype.name}{list(v.shape)}" for k, v in self.items())
        return f"Params({inner})"

    # Structure -------------------------------------------------------------------
    @property
    def spec(self) -> ParamSpec:
        """Shape and dtype of every array, in order."""
        return {k: (tuple(v.shape), v.dtype) for k, v in self._arrays.items()}

    @property
    def num_elements(self) -> int:
        """Total number of scalars over all arrays."""
        return sum(int(v.size) for v in self._arrays.values())

    @property
    def nbytes(self) -> int:
        """Total size of the arrays in bytes."""
        return sum(int(v.nbytes) for v in self._arrays.values())

    def same_structure(self, other: Mapping[str, Array]) -> bool:
        """Whether ``other`` has the same names, shapes and dtypes (name order aside)."""
        if len(self) != len(other) or set(self) != set(other):
            return False
        return all(self[k].shape == other[k].shape and self[k].dtype == other[k].dtype for k in self)

    # Element-wise arithmetic ------------------------------------------------------
    def map(self, fn: Callable[[Array], npt.ArrayLike]) -> Params:
        """Apply ``fn`` to every array, keeping each array's dtype."""
        return Params({k: np.asarray(fn(v)).astype(v.dtype, copy=False) for k, v in self.items()})

    def zip_map(self, other: Mapping[str, Array], fn: Callable[[Array, Array], Any]) -> Params:
        """Combine with ``other`` name by name (in this Params' order); names must match."""
        if len(self) != len(other) or set(self) != set(other):
            raise SheafError(f"cannot combine Params with different names: {list(self)} vs {list(other)}")
        return Params({k: np.asarray(fn(v, other[k])).astype(v.dtype, copy=False) for k, v in self.items()})

    def __add__(self, other: Mapping[str, Array]) -> Params:
        return self.zip_map(other, np.add)

    def __sub__(self, other: Mapping[str, Array]) -> Params:
        return self.zip_map(other, np.subtract)

    def __mul__(self, factor: float) -> Params:
        return self.map(lambda a: a * factor)

    __rmul__ = __mul__

    def __neg__(self) -> Params:
        return self.map(np.negative)

    def l2_norm(self) -> float:
        """Euclidean norm of all arrays taken together (computed in float64)."""
        total = sum(sum_of_squares(v.ravel()) for v in self.astype(np.float64).values())
        return float(np.sqrt(total))

    def astype(self, dtype: npt.DTypeLike) -> Params:
        """A copy with every array cast to ``dtype``."""
        return Params({k: v.astype(dtype) for k, v in self.items()})

    def zeros_like(self) -> Params:
        """Arrays of zeros with the same names, shapes and dtypes."""
        return Params({k: np.zeros_like(v) for k, v in self.items()})

    def copy(self) -> Params:
        """A deep copy (fresh writable buffers, then frozen)."""
        return Params({k: v.copy() for k, v in self.items()})

    def all_finite(self) -> bool:
        """Whether no array holds NaN or infinity."""
        return all(bool(np.isfinite(v).all()) for v in self.values())

    def array_equal(self, other: Mapping[str, Array]) -> bool:
        """Bit-for-bit equality of names, dtypes, shapes and values."""
        return self.same_structure(other) and all(np.array_equal(v, other[k]) for k, v in self.items())

    # Flat views ------------------------------------------------------------------
    def flatten(self, dtype: npt.DTypeLike = np.float64) -> npt.NDArray[Any]:
        """All arrays concatenated into one vector (in name order), cast to ``dtype``."""
        if not self._arrays:
            return np.zeros(0, dtype=dtype)
        return np.concatenate([v.ravel().astype(dtype, copy=False) for v in self.values()])

    def unflatten(self, vector: npt.ArrayLike) -> Params:
        """Params with this structure, filled from ``vector`` (inverse of :meth:`flatten`)."""
        flat = np.asarray(vector)
        if flat.ndim != 1 or flat.size != self.num_elements:
            raise SheafError(
                f"cannot unflatten a vector of shape {flat.shape} into Params of {self.num_elements} elements"
            )
        out: dict[str, Array] = {}
        offset = 0
        for k, v in self.items():
            out[k] = flat[offset : offset + v.size].reshape(v.shape).astype(v.dtype)
            offset += v.size
        return Params(out)
