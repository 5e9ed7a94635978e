"""The level quantiser (compression's codebook) and its bit packing: round trips within the
stated bounds, unbiased, the same rotation and rounding as secure aggregation's quantiser."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sheaf.quantize import (
    PACKED_BITS,
    LevelQuantizer,
    RandomizedHadamard,
    SeededBits,
    pack_codes,
    packed_size,
    unpack_codes,
)

vectors = st.integers(1, 700).flatmap(
    lambda n: hnp.arrays(np.float64, n, elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
)


@given(bits=st.sampled_from(PACKED_BITS), data=st.data())
def test_codes_pack_into_exactly_their_bits_and_unpack_to_themselves(bits: int, data: st.DataObject) -> None:
    codes = data.draw(hnp.arrays(np.uint8, st.integers(0, 100), elements=st.integers(0, (1 << bits) - 1)))

    packed = pack_codes(codes, bits)

    assert packed.dtype == np.uint8 and packed.size == packed_size(codes.size, bits) == -(-codes.size * bits // 8)
    assert unpack_codes(packed, bits, codes.size).tolist() == codes.tolist()


def test_packing_refuses_a_code_too_wide_and_a_wrong_length() -> None:
    with pytest.raises(ValueError, match="below 4"):
        pack_codes(np.array([4], np.uint8), 2)
    with pytest.raises(ValueError, match="take 1 bytes"):
        unpack_codes(np.zeros(2, np.uint8), 4, 2)


@settings(max_examples=60, deadline=None)
@given(x=vectors, bits=st.sampled_from((1, 2, 4, 8)), rotate=st.booleans(), seed=st.integers(0, 2**32))
def test_every_round_trip_is_within_the_stated_bound(x: np.ndarray, bits: int, rotate: bool, seed: int) -> None:
    q = LevelQuantizer(x.size, bits, rotate)

    codes, scales = q.encode(x, rotation_seed=seed, bits=SeededBits(np.random.default_rng(seed)))
    y = q.decode(codes, scales, rotation_seed=seed)

    assert codes.nbytes + scales.nbytes == q.nbytes
    assert np.linalg.norm(y - x) <= q.error_bound(scales) * (1 + 1e-9) + 1e-9 * np.linalg.norm(x)
    if not rotate:  # each coordinate within one level of its bucket
        step = np.repeat(scales.astype(np.float64) * 2 / ((1 << bits) - 1), q.bucket)[: x.size]
        assert np.all(np.abs(y - x) <= step * (1 + 1e-12))


def test_rounding_is_unbiased() -> None:
    # The mean of many independent encodings converges to x at the rate of the variance bound.
    x = np.random.default_rng(0).normal(size=300)
    q = LevelQuantizer(x.size, 2, rotate=True)
    bits = SeededBits(np.random.default_rng(1))
    draws = 2000
    total = np.zeros_like(x)
    for _ in range(draws):
        total += q.decode(*q.encode(x, rotation_seed=5, bits=bits), rotation_seed=5)
    _, scales = q.encode(x, rotation_seed=5, bits=bits)
    variance = (q.error_bound(scales) ** 2) / 4  # total per-vector variance bound: Σ n Δ² / 4
    assert np.linalg.norm(total / draws - x) < 5 * np.sqrt(variance / draws)


def test_the_rotation_is_secure_aggregations_and_the_rotated_range_is_smaller() -> None:
    # A spike: without rotation its bucket's range is the spike; rotated, it spreads over a block.
    x = np.zeros(1024)
    x[7] = 10.0
    plain = LevelQuantizer(1024, 4).encode(x, rotation_seed=3, bits=SeededBits(np.random.default_rng(0)))[1]
    rotated = LevelQuantizer(1024, 4, rotate=True).encode(x, rotation_seed=3, bits=SeededBits(np.random.default_rng(0)))
    assert plain.max() == 10.0 and rotated[1].max() < 0.32
    y = LevelQuantizer(1024, 4, rotate=True).decode(*rotated, rotation_seed=3)
    expected = RandomizedHadamard(1024, 3).inverse(RandomizedHadamard(1024, 3).forward(x))
    assert np.linalg.norm(y - expected) < 1.0


def test_decoding_refuses_what_the_quantiser_cannot_send() -> None:
    q = LevelQuantizer(10, 4)
    codes, scales = q.encode(np.ones(10), rotation_seed=0, bits=SeededBits(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="range"):
        q.decode(codes, np.array([np.inf], np.float32), 0)
    with pytest.raises(ValueError, match="range"):
        q.decode(codes, np.array([-1.0], np.float32), 0)
    with pytest.raises(ValueError, match="float32 ranges"):
        q.decode(codes, np.ones(2, np.float32), 0)
    with pytest.raises(ValueError, match="bytes of codes"):
        q.decode(codes[:-1], scales, 0)
