"""The discrete Gaussian sampler against its exact distribution (chi-square, fixed seeds)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy import stats

from sheaf.quantize import SecureBits, SeededBits
from sheaf.secagg.discrete_gaussian import MAX_VARIANCE, bernoulli_exp, discrete_gaussian, discrete_gaussian_pmf

# the module itself (the package re-exports a function of the same name)
dg = importlib.import_module("sheaf.secagg.discrete_gaussian")


def chi_square_p_value(draws: np.ndarray, variance: float) -> float:
    """Pearson's test against N_Z(0, variance): the integers from -5σ to 5σ in bins of equal
    width (one value each for small σ), both tails pooled into one bin each; every bin's
    expected count is at least 5 for the sample sizes used here."""
    sigma = variance**0.5
    width = max(1, int(sigma / 8))
    half = int(5 * sigma / width) * width + width // 2
    edges = np.arange(-half, half + width + 1, width)  # bins [edges[i], edges[i+1])
    span = int(45 * sigma) + 2
    support = np.arange(-span, span + 1)
    pmf = discrete_gaussian_pmf(variance, support)
    index = np.searchsorted(edges, support, side="right")  # 0: below, len(edges): above
    expected = np.bincount(index, weights=pmf, minlength=len(edges) + 1) * draws.size
    observed = np.bincount(np.searchsorted(edges, draws, side="right"), minlength=len(edges) + 1)
    keep = expected > 0
    statistic = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    return float(stats.chi2.sf(statistic, df=int(keep.sum()) - 1))


@pytest.mark.parametrize(("variance", "seed"), [(1, 11), (7, 12), (250, 13), (40_000, 14)])
def test_the_sampler_fits_the_exact_distribution(variance: int, seed: int) -> None:
    draws = discrete_gaussian(variance, 200_000, SeededBits(np.random.default_rng(seed)))
    # Fixed seeds: the verdict is the same on every run.
    assert chi_square_p_value(draws, variance) > 1e-3


def test_the_python_integer_path_fits_the_same_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    # Send every Laplace draw beyond 0.5 scales, and every Algorithm 1 loop past its first
    # step, through the exact Python-integer path that the rare far-tail draws take.
    monkeypatch.setattr(dg, "_MAX_SCALES", 0.5)
    monkeypatch.setattr(dg, "_MAX_STEPS", 1)
    draws = discrete_gaussian(9, 20_000, SeededBits(np.random.default_rng(21)))
    assert chi_square_p_value(draws, 9) > 1e-3


def test_bernoulli_exp_matches_its_probability_for_large_and_fractional_gammas() -> None:
    source = SeededBits(np.random.default_rng(5))
    for a, b in [(0, 1), (1, 3), (7, 2), (30, 7)]:
        draws = bernoulli_exp(np.full(100_000, a), np.full(100_000, b), source)
        p = float(np.exp(-a / b))
        assert abs(draws.mean() - p) <= 5 * (p * (1 - p) / 100_000) ** 0.5 + 1e-12


def test_the_largest_variance_stays_exact_in_int64() -> None:
    draws = discrete_gaussian(MAX_VARIANCE, 50_000, SeededBits(np.random.default_rng(8)))
    assert chi_square_p_value(draws, MAX_VARIANCE) > 1e-3


def test_secure_bits_draw_from_the_same_algorithm() -> None:
    draws = discrete_gaussian(4, 1000, SecureBits())
    assert draws.dtype == np.int64 and draws.size == 1000


@pytest.mark.parametrize("variance", [-1, MAX_VARIANCE + 1, 2.5])
def test_variances_out_of_range_are_refused(variance: float) -> None:
    with pytest.raises(ValueError, match="whole number"):
        discrete_gaussian(variance, 3, SecureBits())  # type: ignore[arg-type]
