"""Vectors of floats as integers in the ring Z_{2^b}, so that sums survive modular arithmetic.

The ring codebook of sheaf's one quantiser, for every place where it adds integers instead
of floats (secure aggregation); update compression quantises with the same rotation,
rounding and bits into per-bucket levels instead (:mod:`sheaf.quantize.levels`). Both
halves sit here, side by side.

**Encode** (a client): clip ``x`` to L2 norm ``C``; multiply by the client's integer
weight ``w`` (at most ``W``); rotate (:class:`~sheaf.quantize.hadamard.RandomizedHadamard`,
seeded by the round); multiply by the scale ``s``; round each coordinate *stochastically*
to an integer (up with probability equal to its fractional part, so the rounding is
unbiased); optionally add integer noise (distributed DP); reduce mod ``2**b``. With
``weighted`` set, one more coordinate carries ``w`` itself, so the server learns
``Σ w_i`` beside ``Σ w_i x_i`` and FedAvg's weighted mean still works; with uniform weights
(what differential privacy needs: every client moves the sum by at most C) ``W = 1`` and
there is no weight coordinate — the count of inputs is known to the server anyway.

**Decode** (the server, after the ring sum): read each coordinate as a signed integer in
``[-2**(b-1), 2**(b-1))``, divide by ``s``, rotate back, drop the padding.

**Error.** Each client's rounding moves each rotated coordinate by less than 1, so for
``n`` inputs, ``‖decode(Σ encode(x_i)) - Σ w_i clip(x_i)‖₂ < n sqrt(d') / s`` (``d'`` the
padded length; the rotation is orthonormal), plus float64 rounding; the error is unbiased,
with variance at most ``n / (4 s²)`` per coordinate.

**Wrap-around.** Decoding is exact only if no coordinate of the true integer sum leaves
``[-2**(b-1), 2**(b-1))``. With ``n`` inputs, ``X = Σ w_i clip(x_i)`` has ``‖X‖ <= n W C``;
for clients whose vectors do not depend on the round's signs, Hoeffding's inequality over
the signs bounds every rotated coordinate of a block of size ``B`` by
``u = n W C min(1, sqrt(2 ln(4 d' / β) / B))`` except with probability ``β / 2`` (union
over the ``d'`` coordinates; the ``min`` is the deterministic bound ``|(R X)_j| <= ‖X‖``).
Rounding adds less than ``n``. Noise shares of variance ``σ²`` that are σ²-subgaussian
(the discrete Gaussian is: Canonne, Kamath, Steinke 2020) add at most
``v = sqrt(2 n σ² ln(4 d' / β))`` except with probability ``β / 2``. So

    P(any coordinate wraps) <= β    whenever    s u + n + v <= 2**(b-1) - 1,

and the weight coordinate never wraps when ``n W <= 2**(b-1) - 1``. :func:`choose_scale`
picks the largest ``s`` that satisfies this (β = 2**-40 by default: below 10^-12 per
round). A client that lies (sends anything it likes in the ring) can always corrupt the
sum; secure aggregation does not check inputs.

Example:
    >>> import numpy as np
    >>> from sheaf.quantize.randomness import SeededBits
    >>> q = Quantizer(length=3, bits=32, scale=choose_scale(32, clip=1.0, max_weight=5, inputs=2, length=3),
    ...               clip=1.0, max_weight=5, weighted=True)
    >>> bits = SeededBits(np.random.default_rng(0))
    >>> a = q.encode(np.array([0.6, 0.0, 0.8]), weight=2, rotation_seed=9, bits=bits)
    >>> b = q.encode(np.array([0.0, 3.0, 0.0]), weight=5, rotation_seed=9, bits=bits)   # clipped to norm 1
    >>> total, weight = q.decode(ring_sum([a, b], 32), rotation_seed=9)
    >>> np.round(total, 6).tolist(), weight
    ([1.2, 5.0, 1.6], 7)

References:
    Suresh, Yu, Kumar, McMahan. Distributed Mean Estimation with Limited Communication.
    ICML 2017. Bonawitz, Salehi, Konečný, McMahan, Gruteser. Federated Learning with
    Autotuned Communication-Efficient Secure Aggregation. Asilomar 2019. Kairouz, Liu,
    Steinke. The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
    Aggregation. ICML 2021. Canonne, Kamath, Steinke. The Discrete Gaussian for
    Differential Privacy. NeurIPS 2020.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sheaf.quantize.hadamard import RandomizedHadamard
from sheaf.quantize.randomness import BitSource, uniform_unit

__all__ = [
    "DEFAULT_FAILURE",
    "MAX_BITS",
    "Quantizer",
    "choose_scale",
    "clip_l2",
    "ring_bound",
    "ring_sum",
    "stochastic_round",
    "to_ring",
    "to_signed",
]

#: The widest ring: sums are held in uint32, whose arithmetic wraps mod 2**32 for free.
MAX_BITS = 32
#: β, the wrap-around probability :func:`choose_scale` allows per round.
DEFAULT_FAILURE = 2.0**-40
#: Clip a hair inside C, so that float rounding cannot leave a clipped vector longer than C.
_INSIDE = 1.0 - 2.0**-40

Ring = npt.NDArray[np.uint32]


def _check_bits(bits: int) -> None:
    if not 2 <= bits <= MAX_BITS:
        raise ValueError(f"a ring needs 2 to {MAX_BITS} bits, got {bits}")


def to_ring(values: npt.NDArray[np.int64], bits: int) -> Ring:
    """Integers reduced mod ``2**bits`` (two's complement makes negatives wrap right)."""
    _check_bits(bits)
    mask = np.uint64((1 << bits) - 1)
    return (values.astype(np.int64).view(np.uint64) & mask).astype(np.uint32)


def to_signed(values: Ring, bits: int) -> npt.NDArray[np.int64]:
    """Ring elements read as integers in ``[-2**(bits-1), 2**(bits-1))``."""
    _check_bits(bits)
    wide = values.astype(np.int64)
    return np.where(wide >= (1 << (bits - 1)), wide - (1 << bits), wide)


def ring_sum(vectors: Sequence[Ring], bits: int) -> Ring:
    """The sum of ring vectors mod ``2**bits``."""
    _check_bits(bits)
    total = np.zeros(vectors[0].shape, np.uint32) if vectors else np.zeros(0, np.uint32)
    for vector in vectors:
        total += vector  # uint32 addition wraps mod 2**32
    return total & np.uint32((1 << bits) - 1) if bits < 32 else total


def clip_l2(x: npt.NDArray[np.float64], clip: float) -> npt.NDArray[np.float64]:
    """``x`` scaled down to L2 norm at most ``clip`` (unchanged if it is shorter)."""
    norm = float(np.linalg.norm(x))
    if norm <= clip * _INSIDE:
        return x
    return x * (clip * _INSIDE / norm)


def stochastic_round(values: npt.NDArray[np.float64], bits: BitSource) -> npt.NDArray[np.int64]:
    """Each value rounded up with probability equal to its fractional part, else down.

    Unbiased (to within 2**-53 per coordinate: the uniforms have 53 bits); every result
    is within 1 of its value.
    """
    low = np.floor(values)
    up = uniform_unit(bits, values.size).reshape(values.shape) < (values - low)
    return low.astype(np.int64) + up.astype(np.int64)


def _log_term(padded: int, failure: float) -> float:
    return math.log(4.0 * padded / failure)


def ring_bound(
    scale: float,
    *,
    clip: float,
    max_weight: int,
    inputs: int,
    length: int,
    noise_variance: float = 0.0,
    failure: float = DEFAULT_FAILURE,
) -> float:
    """The bound ``s u + n + v`` on every coordinate of the integer sum (module docstring),
    holding except with probability ``failure``."""
    rotation = RandomizedHadamard(length, 0)
    log = _log_term(rotation.padded, failure)
    spread = min(1.0, math.sqrt(2.0 * log / rotation.block))
    signal = inputs * max_weight * clip * spread
    noise = math.sqrt(2.0 * inputs * noise_variance * log)
    return scale * signal + inputs + noise


def choose_scale(
    bits: int,
    *,
    clip: float,
    max_weight: int,
    inputs: int,
    length: int,
    noise_variance: float = 0.0,
    failure: float = DEFAULT_FAILURE,
) -> float:
    """The largest scale for which a sum of ``inputs`` encodings wraps with probability at
    most ``failure`` (the bound in the module docstring).

    Raises:
        ValueError: if no scale fits (the ring is too small for that many inputs, weights
            or that much noise): use more bits, fewer inputs or a smaller weight cap.
    """
    _check_bits(bits)
    room = float((1 << (bits - 1)) - 1)
    fixed = ring_bound(
        0.0,
        clip=clip,
        max_weight=max_weight,
        inputs=inputs,
        length=length,
        noise_variance=noise_variance,
        failure=failure,
    )
    per_unit = ring_bound(1.0, clip=clip, max_weight=max_weight, inputs=inputs, length=length) - inputs
    if inputs * max_weight > room or fixed >= room or per_unit <= 0:
        raise ValueError(
            f"a {bits}-bit ring cannot hold the sum of {inputs} inputs (weights up to {max_weight}"
            + (f", noise variance {noise_variance:g}" if noise_variance else "")
            + "); use more bits or a smaller cohort or weight cap"
        )
    return (room - fixed) / per_unit


@dataclass(frozen=True)
class Quantizer:
    """Both halves of the quantiser for vectors of ``length`` floats (module docstring).

    Attributes:
        length: coordinates of the vectors (``d``).
        bits: the ring is Z_{2**bits}.
        scale: integer units per unit of value (``s``).
        clip: every vector is clipped to this L2 norm before it is weighted (``C``).
        max_weight: the largest weight an encoding may carry (``W``; 1 for uniform weights).
        weighted: append the weight as one more ring coordinate.
    """

    length: int
    bits: int
    scale: float
    clip: float
    max_weight: int = 1
    weighted: bool = False

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if self.length < 1 or not self.scale > 0 or not self.clip > 0 or self.max_weight < 1:
            raise ValueError(f"quantizer needs length >= 1, scale > 0, clip > 0, max_weight >= 1: {self}")

    def rotation(self, rotation_seed: int) -> RandomizedHadamard:
        """The round's rotation."""
        return RandomizedHadamard(self.length, rotation_seed)

    @property
    def padded(self) -> int:
        """Rotated coordinates per vector (``d'``)."""
        return RandomizedHadamard(self.length, 0).padded

    @property
    def ring_length(self) -> int:
        """Ring coordinates per encoding: the rotated vector, and the weight if weighted."""
        return self.padded + int(self.weighted)

    def integers(self, x: npt.ArrayLike, weight: int, rotation_seed: int, bits: BitSource) -> npt.NDArray[np.int64]:
        """The integer vector before noise and reduction: ``round(s R (w clip(x)))``."""
        if not 0 <= weight <= self.max_weight or (weight != 1 and not self.weighted):
            raise ValueError(f"weight must be in [0, {self.max_weight}] (1 unless weighted), got {weight}")
        vector = np.asarray(x, dtype=np.float64).ravel()
        rotated = self.rotation(rotation_seed).forward(clip_l2(vector, self.clip) * float(weight))
        return stochastic_round(rotated * self.scale, bits)

    def encode(
        self,
        x: npt.ArrayLike,
        *,
        weight: int = 1,
        rotation_seed: int,
        bits: BitSource,
        noise: npt.NDArray[np.int64] | None = None,
    ) -> Ring:
        """One client's ring vector (the client half).

        Args:
            x: the client's vector (``length`` floats).
            weight: its weight (an integer in ``[0, max_weight]``; 1 when not weighted).
            rotation_seed: the round's rotation seed.
            bits: randomness for the stochastic rounding.
            noise: integer noise added to the rotated, rounded coordinates (distributed DP).
        """
        rounded = self.integers(x, weight, rotation_seed, bits)
        if noise is not None:
            rounded = rounded + noise
        if self.weighted:
            rounded = np.append(rounded, np.int64(weight))
        return to_ring(rounded, self.bits)

    def decode(self, total: Ring, rotation_seed: int) -> tuple[npt.NDArray[np.float64], int]:
        """The sum of values and of weights from the ring sum of encodings (the server half).

        Returns:
            ``Σ w_i clip(x_i)`` (float64, ``length`` values, within the error bound of the
            module docstring) and ``Σ w_i`` (0 when not weighted).

        Raises:
            ValueError: if ``total`` is not a ring vector of :attr:`ring_length`.
        """
        if total.shape != (self.ring_length,):
            raise ValueError(f"a ring sum of {self.ring_length} coordinates was expected, got shape {total.shape}")
        signed = to_signed(total, self.bits)
        weight = int(signed[-1]) if self.weighted else 0
        values = signed[: self.padded].astype(np.float64) / self.scale
        return self.rotation(rotation_seed).inverse(values), weight

    def error_bound(self, inputs: int) -> float:
        """The L2 bound on the decoding error of a sum of ``inputs`` encodings (rounding only)."""
        return inputs * math.sqrt(self.padded) / self.scale
