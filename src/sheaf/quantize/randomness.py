"""Uniform random bits for quantisation and discrete noise: seeded or from the OS.

Stochastic rounding and discrete noise need *exactly* uniform integers, not floats. A
:class:`BitSource` hands out uniform 64-bit words; :func:`uniform_below` turns them into
exactly uniform integers in ``[0, h)`` (rejection of the biased top of the 64-bit range,
the method of Lemire 2019 without its multiplication trick), vectorised over an array of
bounds; :func:`uniform_unit` gives uniform numbers in ``[0, 1)`` with 53 random bits.

Two sources, chosen explicitly, like :mod:`sheaf.privacy.noise`'s:

- :class:`SecureBits` — ``os.urandom`` (``getrandom(2)`` on Linux). Not reproducible, by
  design: what a deployed client uses.
- :class:`SeededBits` — a NumPy generator, for simulations that must give the same model
  from the same seed. Whoever knows the seed knows the bits: it protects nothing outside
  a simulation, so only a caller that asks for it explicitly gets it.

Example:
    >>> import numpy as np
    >>> bits = SeededBits(np.random.default_rng(0))
    >>> values = uniform_below(bits, np.array([1, 6, 6, 2**40]))
    >>> bool(values[0] == 0 and (values[1:3] < 6).all())
    True
    >>> u = uniform_unit(SecureBits(), 1000)
    >>> bool(((u >= 0) & (u < 1)).all())
    True

References:
    Lemire. Fast Random Integer Generation in an Interval. ACM TOMACS 2019.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["BitSource", "SecureBits", "SeededBits", "uniform_below", "uniform_unit"]


class BitSource(Protocol):
    """Hands out independent, uniformly distributed 64-bit words."""

    def words(self, count: int) -> npt.NDArray[np.uint64]:
        """``count`` uniform 64-bit words."""
        ...


class SecureBits:
    """Uniform words from the operating system's cryptographically secure generator."""

    def words(self, count: int) -> npt.NDArray[np.uint64]:
        """``count`` words from ``os.urandom``."""
        return np.frombuffer(os.urandom(8 * count), dtype="<u8").astype(np.uint64)


class SeededBits:
    """Uniform words from a NumPy generator (reproducible; for simulation only).

    Args:
        generator: e.g. ``stream(seed, Purpose.NOISE, round=r, client=c)``.
    """

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator

    def words(self, count: int) -> npt.NDArray[np.uint64]:
        """``count`` words from the generator's bit generator (its raw 64-bit output)."""
        words: npt.NDArray[np.uint64] = self.generator.bit_generator.random_raw(count)
        return words


def uniform_below(source: BitSource, highs: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Exactly uniform integers in ``[0, h)``, one for each bound ``h`` in ``highs``.

    A 64-bit word ``w`` is accepted when it lies below the largest multiple of ``h`` that
    fits in 64 bits, and then ``w mod h`` is exactly uniform; a rejected word (probability
    below ``h / 2**64``) is redrawn.

    Args:
        source: where the bits come from.
        highs: bounds, each in ``[1, 2**63)``.

    Raises:
        ValueError: if a bound is out of range.
    """
    bounds = np.asarray(highs, dtype=np.int64)
    if bounds.size and (bounds.min() < 1):
        raise ValueError("uniform_below needs bounds >= 1")
    flat = bounds.ravel().astype(np.uint64)
    out = np.empty(flat.shape, dtype=np.uint64)
    # The largest multiple of h below 2**64: 2**64 - (2**64 mod h), computed without 2**64.
    limit = np.uint64(0) - (np.uint64(0) - flat) % flat
    todo = np.arange(flat.size)
    while todo.size:
        draw = source.words(todo.size)
        # limit is 2**64 (0 in uint64) when h divides 2**64: every word is accepted then.
        ok = (draw < limit[todo]) | (limit[todo] == 0)
        out[todo[ok]] = draw[ok] % flat[todo[ok]]
        todo = todo[~ok]
    return out.astype(np.int64).reshape(bounds.shape)


def uniform_unit(source: BitSource, count: int) -> npt.NDArray[np.float64]:
    """``count`` uniform numbers in ``[0, 1)``, multiples of ``2**-53``."""
    return (source.words(count) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
