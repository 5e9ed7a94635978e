"""Update encoders: the :class:`Encoder` contract, the quantising encoders, and one way to build any.

An encoder turns a client's flat float64 delta (``length`` coordinates) into an
:class:`~sheaf.core.encoded.Encoded` of a fixed layout, and back. It is framework-free
and stateless; what persists (error feedback's residual) is the client step's
(:mod:`sheaf.compress.step`). Every encoder states an L2 bound on its round trip
(:meth:`Encoder.error_bound`), which the tests check for every encoder on arbitrary
vectors.

| name | what each coordinate costs | round trip |
| --- | --- | --- |
| ``fp16``, ``bf16`` | 2 bytes (:mod:`sheaf.compress.floats`) | relative ``2**-11``, ``2**-8`` |
| ``q8``, ``q4``, ``q2`` | 8, 4, 2 bits + 4 bytes per 512 (:class:`LevelEncoder`) | unbiased, below one level |
| ``topk`` | ``k`` float32 values and a bitmap (:mod:`sheaf.compress.topk`) | keeps the ``k`` largest |

The quantising encoders are :class:`~sheaf.quantize.LevelQuantizer` — the quantiser
secure aggregation uses (its rotation, its stochastic rounding, its bits) with per-bucket
levels — optionally rotated first (``+rotation``, Suresh et al. 2017).

Example:
    >>> import numpy as np
    >>> from sheaf.quantize import SeededBits
    >>> q4 = build_encoder("q4", 1000, rotate=True)
    >>> x = np.random.default_rng(0).normal(size=1000)
    >>> sent = q4.encode(x, seed=7, bits=SeededBits(np.random.default_rng(1)))
    >>> q4.name, sent.nbytes, 4 * 1000 / sent.nbytes > 7.5
    ('q4+rotation', 520, True)
    >>> bool(np.linalg.norm(q4.decode(sent, seed=7) - x) <= q4.error_bound(x, sent))
    True

References:
    Suresh, Yu, Kumar, McMahan. Distributed Mean Estimation with Limited Communication.
    ICML 2017. Stich, Cordonnier, Jaggi. Sparsified SGD with Memory. NeurIPS 2018.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sheaf.compress.floats import BFloat16Encoder, Float16Encoder
from sheaf.compress.topk import TopKEncoder, top_k_count
from sheaf.core.encoded import Encoded, EncodedLayout
from sheaf.quantize.levels import LevelQuantizer
from sheaf.quantize.randomness import BitSource

__all__ = ["QUANTIZERS", "Encoder", "LevelEncoder", "build_encoder"]

F64 = npt.NDArray[np.float64]

#: The quantising encoders and their bits per coordinate.
QUANTIZERS = {"q8": 8, "q4": 4, "q2": 2}


class Encoder(Protocol):
    """Both halves of one encoding for vectors of a fixed length (see the module docstring)."""

    @property
    def name(self) -> str:
        """What it is called in messages and records (``q4+rotation``)."""
        ...

    @property
    def unbiased(self) -> bool:
        """Whether ``E[decode(encode(x))] = x`` over the encoder's randomness."""
        ...

    @property
    def layout(self) -> EncodedLayout:
        """What every encoding holds: each array's name, dtype and shape."""
        ...

    def encode(self, x: F64, *, seed: int, bits: BitSource) -> Encoded:
        """The encoding of ``x`` (the client half). ``seed`` is the round's public seed (the
        rotation's signs); ``bits`` the randomness of stochastic rounding."""
        ...

    def decode(self, encoded: Encoded, *, seed: int) -> F64:
        """The vector ``encoded`` stands for (the server half).

        Raises:
            ValueError: if ``encoded`` is not something this encoder sends.
        """
        ...

    def scaled(self, encoded: Encoded, factor: float) -> Encoded:
        """An encoding whose decoding is ``factor`` (in (0, 1]) times ``encoded``'s, to within
        its rounding (used to keep a decoded update within a clip norm)."""
        ...

    def error_bound(self, x: F64, encoded: Encoded) -> float:
        """An upper bound on ``‖decode(encoded) - x‖₂`` for ``encoded = encode(x)``."""
        ...


def _round_down_float32(values: F64) -> npt.NDArray[np.float32]:
    low = values.astype(np.float32)
    above = low.astype(np.float64) > values
    return np.where(above, np.nextafter(low, np.float32(0)), low).astype(np.float32)


@dataclass(frozen=True)
class LevelEncoder:
    """``q8``, ``q4``, ``q2``: stochastic uniform quantisation (:class:`~sheaf.quantize.LevelQuantizer`).

    Attributes:
        length: coordinates of the vectors.
        bits: bits per coordinate.
        rotate: rotate with the round's randomised Hadamard transform first.
    """

    length: int
    bits: int
    rotate: bool = False
    quantizer: LevelQuantizer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantizer", LevelQuantizer(self.length, self.bits, self.rotate))

    @property
    def name(self) -> str:
        """``q<bits>``, with ``+rotation`` when it rotates."""
        return f"q{self.bits}" + ("+rotation" if self.rotate else "")

    @property
    def unbiased(self) -> bool:
        """True: stochastic rounding is unbiased, and the rotation is linear."""
        return True

    @property
    def layout(self) -> EncodedLayout:
        """The packed codes, then one float32 range per bucket."""
        q = self.quantizer
        return (("codes", "uint8", (q.code_bytes,)), ("scales", "float32", (q.buckets,)))

    def encode(self, x: F64, *, seed: int, bits: BitSource) -> Encoded:
        """The codes and ranges of ``x``."""
        codes, scales = self.quantizer.encode(x, rotation_seed=seed, bits=bits)
        return Encoded({"codes": codes, "scales": scales})

    def decode(self, encoded: Encoded, *, seed: int) -> F64:
        """The decoded vector (see :meth:`LevelQuantizer.decode`)."""
        return self.quantizer.decode(encoded["codes"], encoded["scales"], rotation_seed=seed)

    def scaled(self, encoded: Encoded, factor: float) -> Encoded:
        """The same codes with every range times ``factor``, rounded down to float32."""
        scales = _round_down_float32(encoded["scales"].astype(np.float64) * factor)
        return Encoded({"codes": encoded["codes"], "scales": scales})

    def error_bound(self, x: F64, encoded: Encoded) -> float:
        """``sqrt(Σ n Δ²)`` from the sent ranges, plus float64 rounding (``2**-40 ‖x‖``)."""
        return self.quantizer.error_bound(encoded["scales"]) + 2.0**-40 * float(np.linalg.norm(x))


def build_encoder(name: str, length: int, *, rotate: bool = False, k: float = 0.1) -> Encoder:
    """The encoder called ``name`` for vectors of ``length`` coordinates.

    Args:
        name: ``fp16``, ``bf16``, ``q8``, ``q4``, ``q2`` or ``topk``.
        length: coordinates of the vectors.
        rotate: quantisers: rotate first.
        k: ``topk``: the share of coordinates sent.

    Raises:
        ValueError: on an unknown name or an unusable setting.
    """
    if name == "fp16":
        return Float16Encoder(length)
    if name == "bf16":
        return BFloat16Encoder(length)
    if name in QUANTIZERS:
        return LevelEncoder(length, QUANTIZERS[name], rotate)
    if name == "topk":
        return TopKEncoder(length, top_k_count(length, k))
    raise ValueError(f"unknown encoder {name!r}; choose one of: fp16, bf16, {', '.join(QUANTIZERS)}, topk")
