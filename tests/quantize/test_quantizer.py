"""The quantiser: decoding a ring sum gives the plain sum within the stated error, never wraps
within the stated bound, and its rotation and random bits are what they claim."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.quantize import (
    Quantizer,
    RandomizedHadamard,
    SeededBits,
    block_size,
    choose_scale,
    clip_l2,
    ring_bound,
    ring_sum,
    stochastic_round,
    to_ring,
    to_signed,
    uniform_below,
    walsh_hadamard,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[Quantizer, list[np.ndarray], list[int]]:
    length = draw(st.integers(1, 300))
    inputs = draw(st.integers(1, 12))
    bits = draw(st.integers(20, 32))
    clip = draw(st.floats(0.01, 100.0))
    weighted = draw(st.booleans())
    max_weight = draw(st.integers(1, 50)) if weighted else 1
    scale = choose_scale(bits, clip=clip, max_weight=max_weight, inputs=inputs, length=length)
    quantizer = Quantizer(length, bits, scale, clip, max_weight, weighted)
    vectors = [np.array(draw(st.lists(finite, min_size=length, max_size=length))) for _ in range(inputs)]
    weights = [draw(st.integers(0, max_weight)) if weighted else 1 for _ in range(inputs)]
    return quantizer, vectors, weights


@settings(max_examples=60, deadline=None)
@given(cohorts(), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_decoding_the_ring_sum_gives_the_plain_sum_within_the_stated_error(
    cohort: tuple[Quantizer, list[np.ndarray], list[int]], rotation_seed: int, seed: int
) -> None:
    quantizer, vectors, weights = cohort
    bits = SeededBits(np.random.default_rng(seed))

    encoded = [quantizer.encode(x, weight=w, rotation_seed=rotation_seed, bits=bits) for x, w in zip(vectors, weights)]
    total, weight = quantizer.decode(ring_sum(encoded, quantizer.bits), rotation_seed)

    plain = sum(w * clip_l2(x, quantizer.clip) for x, w in zip(vectors, weights))
    error = float(np.linalg.norm(total - plain))
    scale_of_values = max(1.0, float(np.linalg.norm(plain)), sum(weights) * quantizer.clip)
    assert error <= quantizer.error_bound(len(vectors)) + 1e-12 * scale_of_values
    assert weight == (sum(weights) if quantizer.weighted else 0)


def test_stochastic_rounding_is_unbiased_and_within_one() -> None:
    values = np.full(200_000, 2.3)
    rounded = stochastic_round(values, SeededBits(np.random.default_rng(1)))
    assert set(np.unique(rounded).tolist()) == {2, 3}
    # mean 2.3, standard error sqrt(0.21 / 2e5) ~ 0.001: 5 standard errors
    assert abs(rounded.mean() - 2.3) < 0.005


def test_the_chosen_scale_keeps_the_worst_case_sum_inside_the_ring() -> None:
    # Every input at its clip norm, all mass on one coordinate, the largest weight: the
    # deterministic bound (|R X|_j <= |X|) must already fit for tiny blocks.
    length, inputs, clip, weight = 4, 10, 2.0, 7
    scale = choose_scale(16, clip=clip, max_weight=weight, inputs=inputs, length=length)
    quantizer = Quantizer(length, 16, scale, clip, weight, weighted=True)
    bits = SeededBits(np.random.default_rng(2))
    spike = np.array([clip, 0.0, 0.0, 0.0])
    encoded = [quantizer.encode(spike, weight=weight, rotation_seed=3, bits=bits) for _ in range(inputs)]
    total, summed = quantizer.decode(ring_sum(encoded, 16), 3)
    assert np.allclose(total, inputs * weight * spike, atol=quantizer.error_bound(inputs))
    assert summed == inputs * weight
    assert ring_bound(scale, clip=clip, max_weight=weight, inputs=inputs, length=length) <= 2**15 - 1


def test_a_ring_too_small_is_refused_with_what_to_change() -> None:
    with pytest.raises(ValueError, match="use more bits"):
        choose_scale(8, clip=1.0, max_weight=100, inputs=10, length=10)


def test_ring_arithmetic_wraps_and_reads_back_signed() -> None:
    values = np.array([-5, 0, 7, 2**15 - 1, -(2**15)], np.int64)
    ring = to_ring(values, 16)
    assert ring.dtype == np.uint32 and int(ring.max()) < 2**16
    assert to_signed(ring, 16).tolist() == values.tolist()
    assert to_signed(ring_sum([to_ring(np.array([2**15 - 1]), 16), to_ring(np.array([1]), 16)], 16), 16).tolist() == [
        -(2**15)
    ]


@pytest.mark.parametrize("length", [1, 3, 31, 32, 1000, 4810, 100_000])
def test_rotation_is_orthonormal_and_pads_little(length: int) -> None:
    rotation = RandomizedHadamard(length, seed=length)
    x = np.random.default_rng(length).normal(size=length)
    y = rotation.forward(x)
    assert math.isclose(float(np.linalg.norm(y)), float(np.linalg.norm(x)), rel_tol=1e-12)
    assert np.allclose(rotation.inverse(y), x, atol=1e-12 * max(1.0, float(np.abs(x).max())))
    if length >= 32:
        assert rotation.padded - length <= length / 32
    assert rotation.padded % rotation.block == 0 and rotation.block == block_size(length)


def test_walsh_hadamard_equals_the_hadamard_matrix() -> None:
    size = 8
    hadamard = np.array([[(-1) ** bin(i & j).count("1") for j in range(size)] for i in range(size)], float)
    x = np.random.default_rng(0).normal(size=(3, size))
    assert np.allclose(walsh_hadamard(x), x @ hadamard.T)


def test_the_rotation_spreads_a_spike_flat() -> None:
    rotation = RandomizedHadamard(1024, seed=5)
    spike = np.zeros(1024)
    spike[17] = 1.0
    assert np.allclose(np.abs(rotation.forward(spike)), 1 / math.sqrt(rotation.block))


def test_uniform_below_is_exactly_uniform_on_an_awkward_range() -> None:
    draws = uniform_below(SeededBits(np.random.default_rng(3)), np.full(60_000, 6))
    counts = np.bincount(draws, minlength=6)
    assert draws.min() >= 0 and draws.max() <= 5
    expected = 10_000
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # 99.9% quantile of chi-square with 5 degrees of freedom
