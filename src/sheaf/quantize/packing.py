"""Small integers packed into bytes: ``8 / b`` codes of ``b`` bits per byte.

A quantised vector's codes are integers in ``[0, 2**b)``; on the wire each takes exactly
``b`` bits (b in 1, 2, 4, 8), little end first within a byte: code ``i`` sits in byte
``i * b // 8`` at bit offset ``(i * b) % 8``. The last byte's unused bits are zero when
packed and ignored when unpacked, so the packed size is ``ceil(n * b / 8)`` bytes.

Example:
    >>> import numpy as np
    >>> packed = pack_codes(np.array([3, 0, 1, 2, 3], np.uint8), bits=2)
    >>> packed.tolist(), unpack_codes(packed, bits=2, count=5).tolist()
    ([147, 3], [3, 0, 1, 2, 3])
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["PACKED_BITS", "pack_codes", "packed_size", "unpack_codes"]

#: The code widths that pack whole codes into a byte.
PACKED_BITS = (1, 2, 4, 8)


def _check(bits: int) -> None:
    if bits not in PACKED_BITS:
        raise ValueError(f"codes pack at {', '.join(map(str, PACKED_BITS))} bits, got {bits}")


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take."""
    _check(bits)
    return math.ceil(count * bits / 8)


def pack_codes(codes: npt.NDArray[np.uint8], bits: int) -> npt.NDArray[np.uint8]:
    """``codes`` (each below ``2**bits``) packed ``8 // bits`` to a byte.

    Raises:
        ValueError: if ``bits`` is not a packing width or a code does not fit in it.
    """
    _check(bits)
    flat = np.asarray(codes, dtype=np.uint8).ravel()
    if flat.size and int(flat.max()) >= 1 << bits:
        raise ValueError(f"a code of {bits} bits is below {1 << bits}, got {int(flat.max())}")
    if bits == 8:
        return flat.copy()
    per = 8 // bits
    padded = np.zeros(packed_size(flat.size, bits) * per, np.uint8)
    padded[: flat.size] = flat
    groups = padded.reshape(-1, per)
    out = np.zeros(groups.shape[0], np.uint8)
    for slot in range(per):
        out |= groups[:, slot] << np.uint8(slot * bits)
    return out


def unpack_codes(packed: npt.NDArray[np.uint8], bits: int, count: int) -> npt.NDArray[np.uint8]:
    """The first ``count`` codes of ``bits`` bits in ``packed``.

    Raises:
        ValueError: if ``packed`` is not exactly :func:`packed_size` bytes.
    """
    _check(bits)
    data = np.asarray(packed, dtype=np.uint8).ravel()
    if data.size != packed_size(count, bits):
        raise ValueError(f"{count} codes of {bits} bits take {packed_size(count, bits)} bytes, got {data.size}")
    if bits == 8:
        return data.copy()
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    out = np.empty((data.size, per), np.uint8)
    for slot in range(per):
        out[:, slot] = (data >> np.uint8(slot * bits)) & mask
    return out.ravel()[:count]
