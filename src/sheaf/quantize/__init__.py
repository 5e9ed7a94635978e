"""Quantisation: vectors of floats as small integers, with both halves side by side.

The one quantiser sheaf uses wherever floats become integers — secure aggregation
(:mod:`sheaf.secagg`) and update compression (:mod:`sheaf.compress`): the randomised
Hadamard rotation, unbiased stochastic rounding and the exactly uniform random bits it
draws on, with two codebooks — the ring Z_{2^b} with its wrap-around bound, for sums
(:class:`Quantizer`, which also clips), and ``2**b`` levels per bucket packed ``b`` bits
each, for one vector on the wire (:class:`LevelQuantizer`).
"""

from sheaf.quantize.hadamard import MAX_BLOCK, RandomizedHadamard, block_size, walsh_hadamard
from sheaf.quantize.levels import BUCKET, LevelQuantizer
from sheaf.quantize.packing import PACKED_BITS, pack_codes, packed_size, unpack_codes
from sheaf.quantize.quantizer import (
    DEFAULT_FAILURE,
    MAX_BITS,
    Quantizer,
    choose_scale,
    clip_l2,
    ring_bound,
    ring_sum,
    stochastic_round,
    to_ring,
    to_signed,
)
from sheaf.quantize.randomness import BitSource, SecureBits, SeededBits, uniform_below, uniform_unit

__all__ = [
    "BUCKET",
    "DEFAULT_FAILURE",
    "MAX_BITS",
    "MAX_BLOCK",
    "PACKED_BITS",
    "BitSource",
    "LevelQuantizer",
    "Quantizer",
    "RandomizedHadamard",
    "SecureBits",
    "SeededBits",
    "block_size",
    "choose_scale",
    "clip_l2",
    "pack_codes",
    "packed_size",
    "ring_bound",
    "ring_sum",
    "stochastic_round",
    "to_ring",
    "to_signed",
    "uniform_below",
    "uniform_unit",
    "unpack_codes",
    "walsh_hadamard",
]
