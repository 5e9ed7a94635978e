"""Half-precision encoders: every coordinate as a 16-bit float (IEEE fp16, or bfloat16).

Both halve a float32 update and are deterministic (round to nearest even), so they need
no randomness and no seed.

- **fp16** (:class:`Float16Encoder`): 11 significant bits, range ±65,504. A coordinate
  within the range moves by at most ``2**-11`` of itself, or ``2**-25`` in absolute terms
  below the normal range (fp16's subnormals); one beyond it is sent as ±65,504
  (saturated, never infinite).
- **bf16** (:class:`BFloat16Encoder`): float32's 8-bit exponent with 8 significant bits —
  the range of float32, a coarser step: a coordinate moves by at most ``2**-8`` of itself
  (after its rounding to float32). NumPy has no bfloat16, so the 16 bits travel as
  ``int16``: the upper half of the float32's bits, rounded to nearest even.

Error bounds (L2, what :meth:`error_bound` returns and the tests check):
``‖fp16(x) - x‖ <= 2**-11 ‖x‖ + 2**-25 sqrt(d)`` for ``|x_i| <= 65504``;
``‖bf16(x) - x‖ <= (2**-8 + 2**-23) ‖x‖ + 2**-126 sqrt(d)``.

Example:
    >>> import numpy as np
    >>> x = np.array([1.0, -0.1, 3e-9, 1e6])
    >>> fp16 = Float16Encoder(4)
    >>> fp16.decode(fp16.encode(x, seed=0, bits=None), seed=0).tolist()
    [1.0, -0.0999755859375, 0.0, 65504.0]
    >>> bf16 = BFloat16Encoder(4)
    >>> bf16.decode(bf16.encode(x, seed=0, bits=None), seed=0).tolist()
    [1.0, -0.10009765625, 2.9976945370435715e-09, 999424.0]

References:
    IEEE 754-2008 (binary16). Kalamkar et al. A Study of BFLOAT16 for Deep Learning
    Training. arXiv:1905.12322, 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sheaf.core.encoded import Encoded, EncodedLayout
from sheaf.quantize.randomness import BitSource

__all__ = ["BFloat16Encoder", "Float16Encoder", "from_bfloat16", "to_bfloat16"]

F64 = npt.NDArray[np.float64]

#: The largest finite fp16.
FP16_MAX = 65504.0
#: The largest finite bfloat16 (float32's exponent, 8 significant bits).
BF16_MAX = float(np.frombuffer(np.array([0x7F7F0000], np.uint32).tobytes(), np.float32)[0])


def to_bfloat16(x: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """The bfloat16 bits of ``x`` (cast to float32, then rounded to nearest even), as int16.

    Finite values beyond bfloat16's range are saturated to ±its largest finite value.
    """
    values = np.clip(np.asarray(x, dtype=np.float64), -BF16_MAX, BF16_MAX).astype(np.float32)
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    return rounded.astype(np.uint16).view(np.int16)


def from_bfloat16(bits: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """The float32 values of bfloat16 bits (the inverse of :func:`to_bfloat16`'s rounding)."""
    wide = np.asarray(bits, dtype=np.int16).view(np.uint16).astype(np.uint32) << np.uint32(16)
    return wide.view(np.float32)


def _values(encoded: Encoded, dtype: str, length: int) -> npt.NDArray[np.generic]:
    values = encoded["values"]
    if values.dtype.name != dtype or values.shape != (length,):
        raise ValueError(f"expected {length} {dtype} values, got {values.dtype.name} {values.shape}")
    return values


@dataclass(frozen=True)
class Float16Encoder:
    """fp16: each coordinate as an IEEE half-precision float (module docstring).

    Attributes:
        length: coordinates of the vectors.
    """

    length: int

    @property
    def name(self) -> str:
        """``fp16``."""
        return "fp16"

    @property
    def unbiased(self) -> bool:
        """False: rounding to nearest is deterministic."""
        return False

    @property
    def layout(self) -> EncodedLayout:
        """One float16 per coordinate."""
        return (("values", "float16", (self.length,)),)

    def encode(self, x: F64, *, seed: int, bits: BitSource | None) -> Encoded:
        """``x`` rounded to fp16 (saturated at ±65,504)."""
        return Encoded({"values": np.clip(np.asarray(x, np.float64), -FP16_MAX, FP16_MAX).astype(np.float16)})

    def decode(self, encoded: Encoded, *, seed: int) -> F64:
        """The values, as float64.

        Raises:
            ValueError: if they are not ``length`` finite fp16 values.
        """
        values = _values(encoded, "float16", self.length).astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("fp16 values are not finite")
        return values

    def scaled(self, encoded: Encoded, factor: float) -> Encoded:
        """The encoding of ``factor`` times the decoded vector."""
        return self.encode(self.decode(encoded, seed=0) * factor, seed=0, bits=None)

    def error_bound(self, x: F64, encoded: Encoded) -> float:
        """``2**-11 ‖x‖ + 2**-25 sqrt(d)`` (for coordinates within ±65,504)."""
        return 2.0**-11 * float(np.linalg.norm(x)) + 2.0**-25 * math.sqrt(self.length)


@dataclass(frozen=True)
class BFloat16Encoder:
    """bf16: each coordinate as a bfloat16, sent as its 16 bits in an int16 (module docstring).

    Attributes:
        length: coordinates of the vectors.
    """

    length: int

    @property
    def name(self) -> str:
        """``bf16``."""
        return "bf16"

    @property
    def unbiased(self) -> bool:
        """False: rounding to nearest is deterministic."""
        return False

    @property
    def layout(self) -> EncodedLayout:
        """One int16 (bfloat16 bits) per coordinate."""
        return (("values", "int16", (self.length,)),)

    def encode(self, x: F64, *, seed: int, bits: BitSource | None) -> Encoded:
        """``x`` rounded to bfloat16."""
        return Encoded({"values": to_bfloat16(x)})

    def decode(self, encoded: Encoded, *, seed: int) -> F64:
        """The values, as float64.

        Raises:
            ValueError: if they are not ``length`` bfloat16s of finite values.
        """
        values = from_bfloat16(_values(encoded, "int16", self.length)).astype(np.float64)  # type: ignore[arg-type]
        if not np.isfinite(values).all():
            raise ValueError("bfloat16 values are not finite")
        return values

    def scaled(self, encoded: Encoded, factor: float) -> Encoded:
        """The encoding of ``factor`` times the decoded vector."""
        return self.encode(self.decode(encoded, seed=0) * factor, seed=0, bits=None)

    def error_bound(self, x: F64, encoded: Encoded) -> float:
        """``(2**-8 + 2**-23) ‖x‖ + 2**-126 sqrt(d)``."""
        return (2.0**-8 + 2.0**-23) * float(np.linalg.norm(x)) + 2.0**-126 * math.sqrt(self.length)
