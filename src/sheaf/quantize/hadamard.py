"""The randomised Hadamard rotation: spread a vector's mass evenly over its coordinates.

``R x = H D x / sqrt(B)`` blockwise: ``D`` flips the sign of each coordinate at random
(from a seed every client of a round shares), ``H`` is the Walsh–Hadamard matrix of size
``B`` (a power of two), applied to each block of ``B`` consecutive coordinates after the
vector is padded with zeros to a whole number of blocks. ``R`` is orthonormal, so it keeps
L2 norms and sums (``R Σ x_i = Σ R x_i``) and its inverse is ``D H / sqrt(B)``.

Why rotate before quantising into a small ring: after ``R``, every coordinate of a block
is a sum of the block's entries with independent random signs, so for a vector ``x`` that
does not depend on the signs, ``P(|(R x)_j| >= u) <= 2 exp(-u² B / (2 ‖x_block‖²))``
(Hoeffding) — a spike of size ``‖x‖`` becomes ``B`` entries of size ``‖x‖ / sqrt(B)``, and
the ring needs ``log2(sqrt(B))`` fewer bits for the same scale.

Why blocks rather than one power of two: padding a vector to the next power of two can
nearly double it (10^5 coordinates become 131,072), and what is padded is uploaded. The
block size is the largest power of two (up to :data:`MAX_BLOCK`) that pads the vector by
at most 1/32 of its length (:func:`block_size`): 10^4 coordinates become 5 blocks of
2,048 (2.4% padding), 10^5 become 25 blocks of 4,096 (2.4%), 10^6 become 31 blocks of
32,768 (1.6%).

Example:
    >>> import numpy as np
    >>> rotation = RandomizedHadamard(5, seed=1)
    >>> x = np.array([3.0, 0.0, 0.0, 4.0, 0.0])
    >>> y = rotation.forward(x)
    >>> y.size, round(float(np.linalg.norm(y)), 12), bool(np.allclose(rotation.inverse(y), x))
    (8, 5.0, True)

References:
    Ailon, Chazelle. The Fast Johnson–Lindenstrauss Transform and Approximate Nearest
    Neighbors. SIAM J. Comput. 2009. Suresh, Yu, Kumar, McMahan. Distributed Mean
    Estimation with Limited Communication. ICML 2017. Kairouz, Liu, Steinke. The
    Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation.
    ICML 2021 (Section 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_BLOCK", "RandomizedHadamard", "block_size", "walsh_hadamard"]

#: The largest block the rotation uses (2**20 coordinates, 8 MiB of float64).
MAX_BLOCK = 1 << 20

#: At most this share of a vector is padding (see :func:`block_size`).
_MAX_PADDING = 1 / 32


def block_size(length: int) -> int:
    """The rotation's block size for a vector of ``length`` coordinates.

    The largest power of two ``B <= MAX_BLOCK`` whose padding ``ceil(length / B) * B -
    length`` is at most ``length / 32``; a vector of fewer than 32 coordinates is one block
    (the next power of two).

    Example:
        >>> [block_size(n) for n in (1, 5, 4810, 10_000, 100_000, 1_000_000)]
        [1, 8, 256, 2048, 4096, 32768]
    """
    if length < 1:
        raise ValueError(f"a rotation needs at least one coordinate, got {length}")
    size = min(1 << (length - 1).bit_length(), MAX_BLOCK)
    if length < 32:
        return size
    while size > 1 and math.ceil(length / size) * size - length > length * _MAX_PADDING:
        size //= 2
    return size


def walsh_hadamard(blocks: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The unnormalised Walsh–Hadamard transform of each row of ``blocks`` (rows of 2**k).

    ``log2(B)`` butterfly passes over the whole array, each vectorised: the cost is
    ``B log2 B`` additions per block, in NumPy.
    """
    rows, size = blocks.shape
    out = blocks.copy()
    half = 1
    while half < size:
        view = out.reshape(rows, size // (2 * half), 2, half)
        left = view[:, :, 0, :].copy()
        view[:, :, 0, :] += view[:, :, 1, :]
        view[:, :, 1, :] = left - view[:, :, 1, :]
        half *= 2
    return out


@dataclass(frozen=True)
class RandomizedHadamard:
    """The rotation of one round for vectors of ``length`` coordinates.

    Attributes:
        length: coordinates of the vectors it rotates.
        seed: the round's rotation seed (public: every client and the server use it).
        block: the block size (:func:`block_size` of ``length``).
        padded: the rotated vectors' length, a whole number of blocks.
    """

    length: int
    seed: int
    block: int = field(init=False)
    padded: int = field(init=False)

    def __post_init__(self) -> None:
        block = block_size(self.length)
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "padded", math.ceil(self.length / block) * block)

    def _signs(self) -> npt.NDArray[np.float64]:
        generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed)))
        return generator.integers(0, 2, size=self.padded).astype(np.float64) * 2.0 - 1.0

    def forward(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``R x``: pad, flip signs, transform each block, normalise (float64)."""
        vector = np.asarray(x, dtype=np.float64).ravel()
        if vector.size != self.length:
            raise ValueError(f"rotation of {self.length} coordinates got a vector of {vector.size}")
        padded = np.zeros(self.padded, np.float64)
        padded[: self.length] = vector
        padded *= self._signs()
        return walsh_hadamard(padded.reshape(-1, self.block)).ravel() / math.sqrt(self.block)

    def inverse(self, y: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``R⁻¹ y``: transform each block, normalise, flip signs, drop the padding."""
        vector = np.asarray(y, dtype=np.float64).ravel()
        if vector.size != self.padded:
            raise ValueError(f"inverse rotation of {self.padded} coordinates got a vector of {vector.size}")
        back = walsh_hadamard(vector.reshape(-1, self.block)).ravel() / math.sqrt(self.block)
        return (back * self._signs())[: self.length]
