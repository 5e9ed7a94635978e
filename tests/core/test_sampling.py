from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.errors import ConfigError
from sheaf.core.sampling import cohort_size, sample_cohort, secret_cohort


@pytest.mark.parametrize(
    ("population", "fraction", "minimum", "expected"),
    [
        (20, 0.5, 2, 10),
        (20, 0.01, 2, 2),
        (20, 1.0, 2, 20),
        (3, 0.3, 1, 1),
        (10, 0.25, 1, 3),
        (1_000_000, 0.0001, 2, 100),
    ],
)
def test_cohort_size_is_the_fraction_rounded_up_with_a_minimum(
    population: int, fraction: float, minimum: int, expected: int
) -> None:
    assert cohort_size(population, fraction, minimum) == expected


def test_min_clients_above_the_population_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"strategy.min_clients \(5\) exceeds the number of clients \(4\)"):
        cohort_size(4, 0.5, 5)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01])
def test_fractions_outside_zero_one_are_refused(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"strategy.fraction must be in \(0, 1\]"):
        cohort_size(10, fraction, 1)


@given(st.integers(1, 10**6), st.integers(1, 200), st.integers(0, 2**20), st.integers(1, 1000))
def test_cohorts_are_distinct_sorted_in_range_and_reproducible(
    population: int, size: int, seed: int, round: int
) -> None:
    size = min(size, population)
    cohort = sample_cohort(population, size, seed=seed, round=round)
    assert len(cohort) == size
    assert len(set(cohort.tolist())) == size
    assert (cohort[:-1] < cohort[1:]).all()
    assert cohort.min() >= 0 and cohort.max() < population
    assert (cohort == sample_cohort(population, size, seed=seed, round=round)).all()


def test_rounds_sample_different_cohorts() -> None:
    cohorts = {tuple(sample_cohort(1000, 10, seed=0, round=r).tolist()) for r in range(1, 20)}
    assert len(cohorts) == 19


@given(st.integers(1, 10**5), st.integers(1, 200), st.binary(min_size=32, max_size=32), st.integers(1, 1000))
def test_secret_cohorts_are_distinct_sorted_in_range_and_reproducible_from_the_secret(
    population: int, size: int, secret: bytes, round: int
) -> None:
    size = min(size, population)
    cohort = secret_cohort(population, size, secret=secret, round=round)
    assert len(cohort) == size and len(set(cohort.tolist())) == size
    assert (cohort[:-1] < cohort[1:]).all() and cohort.min() >= 0 and cohort.max() < population
    assert (cohort == secret_cohort(population, size, secret=secret, round=round)).all()


def test_secret_cohorts_depend_on_the_secret_not_the_seed() -> None:
    one, other = bytes(32), bytes(31) + b"\x01"
    by_secret = [tuple(secret_cohort(1000, 10, secret=one, round=r).tolist()) for r in range(1, 20)]
    assert len(set(by_secret)) == 19  # every round its own
    assert all(c != tuple(sample_cohort(1000, 10, seed=0, round=r).tolist()) for r, c in enumerate(by_secret, 1))
    assert all(c != tuple(secret_cohort(1000, 10, secret=other, round=r).tolist()) for r, c in enumerate(by_secret, 1))


def test_secret_poisson_cohorts_include_each_client_with_the_rate() -> None:
    sizes = [len(secret_cohort(10_000, 0, secret=bytes(32), round=r, rate=0.1)) for r in range(1, 41)]
    # Binomial(10,000, 0.1) has mean 1,000 and standard deviation 30: 40 rounds' mean within 5 sd/sqrt(40).
    assert abs(sum(sizes) / len(sizes) - 1000) < 5 * 30 / 40**0.5
    assert len(secret_cohort(10, 0, secret=bytes(32), round=1, rate=1.0)) == 10


def test_a_secret_must_be_32_bytes() -> None:
    with pytest.raises(ConfigError, match="a run secret is 32 bytes, got 3"):
        secret_cohort(10, 2, secret=b"abc", round=1)
