"""Gaussian noise from a seeded stream (simulation) or a cryptographically secure source.

Differential privacy is only as good as its noise is unpredictable. Two sources:

- :class:`SeededNoise` — a NumPy generator derived from the run seed (``Purpose.NOISE``),
  so a simulation gives the same model every time and on every backend. Anyone who knows
  the seed can subtract this noise: it protects nothing outside a simulation.
- :class:`SecureNoise` — uniform bits from the operating system's cryptographically secure
  generator (``os.urandom``: ``getrandom(2)`` on Linux) turned into Gaussians with the
  Box–Muller transform. Not reproducible, by design: a client's local noise.
- :class:`KeyedNoise` — the same Box–Muller transform on a ChaCha20 key stream of a secret
  only the server holds and the round (:mod:`sheaf.core.keyed`). As unpredictable as
  :class:`SecureNoise` to anyone without the secret, and reproducible by its holder: a
  deployed server that redoes a round after a crash releases the *same* noised aggregate
  again instead of a second, independent draw (two draws of one round would each reveal
  the round's sum under fresh noise, and averaging them halves the noise's variance).

The choice is explicit (``privacy.noise = "seeded" | "secure"``; a deployed server turns
"secure" into keyed noise of its run secret); a client that adds its own noise (local DP)
uses secure noise unless its own policy allows seeded noise, whatever the server asks
(:mod:`sheaf.privacy.ledger`).

Two limits, quantified in ``docs/privacy.md`` ("The noise's limits"):

- **Truncation.** Secure noise's uniforms are at least 2⁻⁵³, so the Box–Muller radius
  ``sqrt(-2 ln u)`` is at most ``sqrt(106 ln 2) = 8.5717``: every value lies within
  ±8.57σ. An exact Gaussian pair goes beyond with probability 2⁻⁵³ ≈ 1.1e-16 (one
  coordinate beyond ±8.57σ: 1.0e-17). Outputs only one of two neighbouring inputs can
  produce cost δ: with the sensitivity in one pair of coordinates, at most
  ``exp(-(8.5717 - 1/z')**2 / 2)`` per round for noise z' times the sensitivity — 3.6e-13
  at z' = 1, 4.2e-10 at 0.5, 1.1e-6 at 0.3 — which the reported δ does not include.
- **Floating point.** This is not a discrete Gaussian. Floating-point noise leaks through
  which floats it can output (Mironov 2012 for Laplace; Jin et al. 2022 for Gaussians).
  Noise is sampled and added in float64 and the result cast to the model's dtype: for a
  float32 model that rounds away the low-order bits those attacks read (in all but the
  rarest far-tail outputs; not a proof); for a float64 model the cast keeps every bit,
  and the attacks apply as published.

Example:
    >>> round(math.sqrt(-2 * math.log(2.0**-53)), 4)   # the largest |value| / σ of secure noise
    8.5717
    >>> from sheaf.core.rng import Purpose, stream
    >>> a = SeededNoise(stream(0, Purpose.NOISE, round=1)).normal((3,), 2.0)
    >>> b = SeededNoise(stream(0, Purpose.NOISE, round=1)).normal((3,), 2.0)
    >>> bool((a == b).all()), SecureNoise().normal((2, 2), 1.0).shape
    (True, (2, 2))

References:
    Box, Muller. A Note on the Generation of Random Normal Deviates. Ann. Math. Statist.
    1958. Mironov. On Significance of the Least Significant Bits for Differential Privacy.
    CCS 2012. Jin, McMurtry, Rubinstein, Ohrimenko. Are We There Yet? Timing and
    Floating-Point Attacks on Differential Privacy Systems. IEEE S&P 2022. Canonne,
    Kamath, Steinke. The Discrete Gaussian for Differential Privacy. NeurIPS 2020.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import ConfigError
from sheaf.core.keyed import keyed_stream
from sheaf.core.rng import Purpose, stream

__all__ = [
    "NOISE_SOURCES",
    "KeyedNoise",
    "NoiseSource",
    "SecureNoise",
    "SeededNoise",
    "secure_uniform",
    "server_noise",
]

#: The noise sources a run can choose (``privacy.noise``).
NOISE_SOURCES = ("seeded", "secure")

_TWO_TO_MINUS_53 = 1.0 / (1 << 53)


class NoiseSource(Protocol):
    """Draws Gaussian noise."""

    def normal(self, shape: tuple[int, ...], std: float) -> npt.NDArray[np.float64]:
        """Independent N(0, std²) values of the given shape, in float64."""
        ...


class SeededNoise:
    """Gaussian noise from a NumPy generator (reproducible; for simulation).

    Args:
        generator: e.g. ``stream(seed, Purpose.NOISE, round=r)``.
    """

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator

    def normal(self, shape: tuple[int, ...], std: float) -> npt.NDArray[np.float64]:
        """N(0, std²) values from the generator."""
        return self.generator.normal(0.0, std, size=shape)


def secure_uniform(count: int) -> npt.NDArray[np.float64]:
    """``count`` uniform numbers in (0, 1] from ``os.urandom`` (53 random bits each).

    Example:
        >>> u = secure_uniform(1000)
        >>> bool(((u > 0) & (u <= 1)).all())
        True
    """
    raw = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    # The top 53 bits, shifted to (0, 1] so that log(u) below is finite.
    return ((raw >> np.uint64(11)).astype(np.float64) + 1.0) * _TWO_TO_MINUS_53


def _box_muller(
    uniform: Callable[[int], npt.NDArray[np.float64]], shape: tuple[int, ...], std: float
) -> npt.NDArray[np.float64]:
    """N(0, std²) values of ``shape`` from uniforms in (0, 1]: ``sqrt(-2 ln u1)`` times the
    cosine and the sine of ``2π u2`` are two independent standard normals."""
    count = math.prod(shape)
    pairs = (count + 1) // 2
    u = uniform(2 * pairs)
    radius = np.sqrt(-2.0 * np.log(u[:pairs]))
    angle = (2.0 * math.pi) * u[pairs:]
    values = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    return (values * std).reshape(shape)


class SecureNoise:
    """Gaussian noise from the operating system's cryptographically secure generator.

    Box–Muller on uniforms from :func:`secure_uniform`: ``sqrt(-2 ln u1)`` times the
    cosine and the sine of ``2π u2`` are two independent standard normals — truncated at
    8.5717σ, since ``u1 >= 2**-53`` (see the module docstring).
    """

    def normal(self, shape: tuple[int, ...], std: float) -> npt.NDArray[np.float64]:
        """N(0, std²) values from ``os.urandom``."""
        return _box_muller(secure_uniform, shape, std)


class KeyedNoise:
    """Gaussian noise of one round from a secret: secure to others, reproducible to its holder.

    Box–Muller, as :class:`SecureNoise`, on the 53-bit uniforms in (0, 1] of the ChaCha20
    stream ``keyed_stream(secret, "noise", round=round)``; successive calls continue the
    stream, so a round that draws the same shapes in the same order gets the same noise.

    Args:
        secret: the server's run secret (32 bytes).
        round: the round the noise is for.

    Example:
        >>> a = KeyedNoise(bytes(32), round=2).normal((3,), 1.0)
        >>> bool((a == KeyedNoise(bytes(32), round=2).normal((3,), 1.0)).all())
        True
    """

    def __init__(self, secret: bytes, round: int) -> None:
        self._stream = keyed_stream(secret, "noise", round=round)

    def _uniform(self, count: int) -> npt.NDArray[np.float64]:
        raw = self._stream.uint64(count)
        return ((raw >> np.uint64(11)).astype(np.float64) + 1.0) * _TWO_TO_MINUS_53

    def normal(self, shape: tuple[int, ...], std: float) -> npt.NDArray[np.float64]:
        """N(0, std²) values, the stream's next."""
        return _box_muller(self._uniform, shape, std)


def server_noise(kind: str, seed: int, round: int, key: bytes = b"") -> NoiseSource:
    """The server's noise for one round: seeded from (seed, round), or secure — keyed by
    the server's secret ``key`` and the round where it has one (deployment), else fresh.

    Raises:
        ConfigError: on an unknown kind.
    """
    if kind == "seeded":
        return SeededNoise(stream(seed, Purpose.NOISE, round=round))
    if kind == "secure":
        return KeyedNoise(key, round) if key else SecureNoise()
    raise ConfigError(f"privacy.noise must be one of: {', '.join(NOISE_SOURCES)}, got {kind!r}")
