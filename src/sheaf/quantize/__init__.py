"""Quantisation: vectors of floats as integers in a ring, with both halves side by side.

The one quantiser sheaf uses wherever it adds integers instead of floats — secure
aggregation (:mod:`sheaf.secagg`) now, update compression later: clipping, the randomised
Hadamard rotation, stochastic rounding, the ring Z_{2^b} with its wrap-around bound, and
the exactly uniform random bits they draw on.
"""

from sheaf.quantize.hadamard import MAX_BLOCK, RandomizedHadamard, block_size, walsh_hadamard
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
    "DEFAULT_FAILURE",
    "MAX_BITS",
    "MAX_BLOCK",
    "BitSource",
    "Quantizer",
    "RandomizedHadamard",
    "SecureBits",
    "SeededBits",
    "block_size",
    "choose_scale",
    "clip_l2",
    "ring_bound",
    "ring_sum",
    "stochastic_round",
    "to_ring",
    "to_signed",
    "uniform_below",
    "uniform_unit",
    "walsh_hadamard",
]
