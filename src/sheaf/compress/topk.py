"""Top-k sparsification: send the ``k`` largest coordinates, and where they are.

The client sends the ``k`` coordinates of largest magnitude (ties broken by position:
the stable order of NumPy's sort) as float32 values, and their positions — as a bitmap
of ``ceil(d / 8)`` bytes when that is smaller than ``k`` 32-bit indices (a share above
1/32), else as ``uint32`` indices in increasing order. The layout is fixed by ``d`` and
``k`` before the round, and the server refuses a bitmap that does not mark exactly ``k``
positions or indices that are not ``k`` distinct positions in increasing order.

Top-k is *biased*: what it leaves out is lost unless the client keeps it and adds it to
its next update — error feedback (Stich, Cordonnier, Jaggi 2018), which
:mod:`sheaf.compress.step` keeps in the client's own state. It is a contraction:
``‖x - topk(x)‖² <= (1 - k/d) ‖x‖²``, the property their analysis needs; with the float32
rounding of the sent values, ``‖x - decode(encode(x))‖ <= sqrt(1 - k/d) ‖x‖ + 2**-24 ‖x‖
+ 2**-149 sqrt(k)`` (:meth:`TopKEncoder.error_bound`; the last term is float32's subnormals).

Example:
    >>> import numpy as np
    >>> topk = TopKEncoder(length=6, k=2)
    >>> sent = topk.encode(np.array([0.1, -3.0, 0.2, 0.0, 2.5, -0.3]), seed=0, bits=None)
    >>> sent.layout, sent["values"].tolist()
    ((('positions', 'uint8', (1,)), ('values', 'float32', (2,))), [-3.0, 2.5])
    >>> topk.decode(sent, seed=0).tolist()
    [0.0, -3.0, 0.0, 0.0, 2.5, 0.0]

References:
    Stich, Cordonnier, Jaggi. Sparsified SGD with Memory. NeurIPS 2018. Aji, Heafield.
    Sparse Communication for Distributed Gradient Descent. EMNLP 2017.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sheaf.core.encoded import Encoded, EncodedLayout
from sheaf.quantize.randomness import BitSource

__all__ = ["TopKEncoder", "top_k_count"]

F64 = npt.NDArray[np.float64]


def top_k_count(length: int, share: float) -> int:
    """How many coordinates a share keeps: ``round(share * length)``, at least 1.

    Example:
        >>> top_k_count(28938, 0.1), top_k_count(5, 0.01)
        (2894, 1)
    """
    if not 0 < share <= 1:
        raise ValueError(f"the share of coordinates top-k keeps must be in (0, 1], got {share}")
    return min(length, max(1, round(share * length)))


@dataclass(frozen=True)
class TopKEncoder:
    """Both halves of top-k for vectors of ``length`` floats (module docstring).

    Attributes:
        length: coordinates of the vectors (``d``).
        k: coordinates sent.
    """

    length: int
    k: int

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.length:
            raise ValueError(f"top-k needs 1 <= k <= length, got k={self.k}, length={self.length}")

    @property
    def name(self) -> str:
        """``topk``."""
        return "topk"

    @property
    def unbiased(self) -> bool:
        """False: what is left out is lost without error feedback."""
        return False

    @property
    def bitmap(self) -> bool:
        """Whether positions travel as a bitmap (smaller than ``k`` indices)."""
        return math.ceil(self.length / 8) < 4 * self.k

    @property
    def layout(self) -> EncodedLayout:
        """The positions (bitmap or indices), then the values."""
        positions = ("uint8", (math.ceil(self.length / 8),)) if self.bitmap else ("uint32", (self.k,))
        return (("positions", *positions), ("values", "float32", (self.k,)))

    def encode(self, x: F64, *, seed: int, bits: BitSource | None) -> Encoded:
        """The ``k`` largest coordinates of ``x`` by magnitude, and where they are."""
        vector = np.asarray(x, np.float64).ravel()
        if vector.size != self.length:
            raise ValueError(f"top-k of {self.length} coordinates got a vector of {vector.size}")
        order = np.argsort(-np.abs(vector), kind="stable")
        chosen = np.sort(order[: self.k])
        if self.bitmap:
            marks = np.zeros(self.length, np.uint8)
            marks[chosen] = 1
            positions = np.packbits(marks, bitorder="little")
        else:
            positions = chosen.astype(np.uint32)
        return Encoded({"positions": positions, "values": vector[chosen].astype(np.float32)})

    def _chosen(self, positions: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
        if self.bitmap:
            marks = np.unpackbits(np.asarray(positions, np.uint8), bitorder="little")
            if marks[self.length :].any():
                raise ValueError("the bitmap marks positions past the vector's end")
            chosen = np.flatnonzero(marks[: self.length])
        else:
            chosen = np.asarray(positions, np.int64)
            if chosen.size and (chosen[-1] >= self.length or (np.diff(chosen) <= 0).any()):
                raise ValueError("top-k indices are not distinct positions in increasing order")
        if chosen.size != self.k:
            raise ValueError(f"top-k marks {chosen.size} positions, its encoder sends {self.k}")
        return chosen

    def decode(self, encoded: Encoded, *, seed: int) -> F64:
        """The sparse vector: the values at their positions, zero elsewhere.

        Raises:
            ValueError: if the positions are not exactly ``k`` distinct ones, or a value
                is not finite.
        """
        values = encoded["values"].astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("top-k values are not finite")
        out = np.zeros(self.length, np.float64)
        out[self._chosen(encoded["positions"])] = values
        return out

    def scaled(self, encoded: Encoded, factor: float) -> Encoded:
        """The same positions with their values times ``factor``."""
        values = (encoded["values"].astype(np.float64) * factor).astype(np.float32)
        return Encoded({"positions": encoded["positions"], "values": values})

    def error_bound(self, x: F64, encoded: Encoded) -> float:
        """``sqrt(1 - k/d) ‖x‖ + 2**-24 ‖x‖ + 2**-149 sqrt(k)`` (module docstring)."""
        norm = float(np.linalg.norm(x))
        return math.sqrt(1.0 - self.k / self.length) * norm + 2.0**-24 * norm + 2.0**-149 * math.sqrt(self.k)
