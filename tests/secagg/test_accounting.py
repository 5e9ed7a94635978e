"""Distributed DP accounting: the discrete Gaussian sum's RDP, amplified by the expansion its
symmetry allows (never above Zhu and Wang's general bound, never below the sampled
Gaussian's), checked against the exact divergences of a small discrete sum, converted to
epsilon by dp-accounting."""

from __future__ import annotations

import logging
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from sheaf.core.config import load_config
from sheaf.secagg.accounting import (
    ORDERS,
    DistributedMechanism,
    calibrate_distributed,
    epsilon_from_rdp,
    planned_epsilon,
    poisson_subsampled_rdp,
    rounded_sensitivity,
    symmetric_subsampled_rdp,
)
from sheaf.secagg.plan import secagg_plan


def gaussian_epsilon(event: dp_accounting.DpEvent, delta: float = 1e-5) -> float:
    accountant = rdp.RdpAccountant(orders=[float(a) for a in ORDERS])
    logging.getLogger("absl").setLevel(logging.ERROR)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("z", [0.7, 1.0, 2.5])
def test_without_sampling_a_large_variance_sum_is_accounted_exactly_as_the_gaussian(z: float) -> None:
    # tau vanishes at these variances: the curve is the Gaussian's, alpha / (2 z^2)
    l2, shares = 5000.0, 49
    mechanism = DistributedMechanism(l2, l2 * 30, 900, (z * l2) ** 2 / shares)
    ours = epsilon_from_rdp(100 * mechanism.round_rdp(shares), 1e-5)
    reference = gaussian_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 100))
    assert ours == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("z", [0.8, 1.5, 3.0])
def test_with_sampling_a_large_variance_sum_is_accounted_as_the_sampled_gaussian(z: float) -> None:
    # tau vanishes: the symmetric expansion is Mironov, Talwar and Zhang's sampled Gaussian,
    # never below it, and below both Zhu and Wang's general bound and the unsampled curve
    l2, shares, q = 5000.0, 99, 0.1
    mechanism = DistributedMechanism(l2, l2 * 30, 900, (z * l2) ** 2 / shares, rate=q)
    ours = epsilon_from_rdp(50 * mechanism.round_rdp(shares), 1e-5)
    sampled = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    reference = gaussian_epsilon(dp_accounting.SelfComposedDpEvent(sampled, 50))
    curve = mechanism.unsampled(shares)
    general = poisson_subsampled_rdp(q, curve)
    general_epsilon = epsilon_from_rdp(50 * np.array([general[a] for a in ORDERS]), 1e-5)
    unsampled = epsilon_from_rdp(50 * mechanism.round_rdp(shares, sampled=False), 1e-5)
    assert ours == pytest.approx(reference, rel=1e-9)
    assert reference <= ours * (1 + 1e-9)
    assert ours < general_epsilon <= unsampled * (1 + 1e-9)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(1e-4, 0.999),
    slope=st.floats(1e-4, 5.0),
    offset=st.floats(0.0, 2.0),
)
def test_the_symmetric_expansion_is_never_above_the_general_bound(rate: float, slope: float, offset: float) -> None:
    curve = {a: slope * a + offset for a in range(2, 65)}
    ours = symmetric_subsampled_rdp(rate, curve)
    general = poisson_subsampled_rdp(rate, curve)
    for alpha in curve:
        assert 0 <= ours[alpha] <= general[alpha] * (1 + 1e-12) + 1e-15
        assert ours[alpha] <= curve[alpha]


def _renyi(log_p: np.ndarray, log_q: np.ndarray, alpha: int) -> float:
    """D_alpha(p || q) of two distributions on the same support, from their log masses."""
    return float(logsumexp(alpha * log_p - (alpha - 1) * log_q)) / (alpha - 1)


def _log_discrete_gaussian_sum(variance: float, shares: int, reach: int) -> np.ndarray:
    """Log masses on -reach..reach of the sum of `shares` independent N_Z(0, variance)."""
    wide = np.arange(-shares * reach, shares * reach + 1)
    normaliser = logsumexp(-(np.arange(-10 * reach, 10 * reach + 1) ** 2) / (2 * variance))
    one = -(wide.astype(np.float64) ** 2) / (2 * variance) - normaliser
    total = one
    differences = wide[:, None] - wide[None, :]  # k - j
    for _ in range(shares - 1):  # log-space convolution over the wide support
        total = logsumexp(total[None, :] - differences**2 / (2 * variance) - normaliser, axis=1)
    middle = len(wide) // 2
    return np.asarray(total[middle - reach : middle + reach + 1])


@pytest.mark.parametrize(
    ("variance", "shares", "shift", "rate"), [(0.4, 3, 1, 0.3), (1.0, 4, 2, 0.1), (2.0, 2, 3, 0.6)]
)
def test_the_exact_divergences_of_a_sampled_discrete_sum_are_within_the_bound(
    variance: float, shares: int, shift: int, rate: float
) -> None:
    # The real mechanism, small enough to sum exactly: the sum of `shares` discrete Gaussians,
    # in two dimensions (a product), shifted by x = (shift, shift - 1). Both directions of the
    # Poisson-sampled pair, P against (1-q) P + q Q, stay within the accountant's curve, and the
    # remove direction (the one the symmetry argument bounds) does not exceed the add direction.
    reach = 40  # the masses left out are below exp(-reach^2 / (2 shares variance)) < 1e-30
    line = _log_discrete_gaussian_sum(variance, shares, reach + shift)
    x = (shift, shift - 1)
    inner = slice(shift, shift + 2 * reach + 1)
    log_p = line[inner][:, None] + line[inner][None, :]
    log_q = (
        line[shift - x[0] : shift - x[0] + 2 * reach + 1][:, None]
        + line[shift - x[1] : shift - x[1] + 2 * reach + 1][None, :]
    )
    log_mixture = np.logaddexp(math.log1p(-rate) + log_p, math.log(rate) + log_q)
    l2 = math.hypot(*x)
    bound = DistributedMechanism(l2, float(sum(x)), 2, variance, rate).round_rdp(shares)
    for index, alpha in enumerate(ORDERS[:20]):
        add, remove = _renyi(log_mixture, log_p, alpha), _renyi(log_p, log_mixture, alpha)
        assert remove <= add * (1 + 1e-9) + 1e-12
        assert add <= bound[index] * (1 + 1e-9) + 1e-12


def test_without_symmetry_the_remove_direction_can_exceed_the_expansion() -> None:
    # Why the symmetric expansion is not used for any mechanism: for an asymmetric pair the
    # remove direction is larger than the add direction the expansion describes.
    p, q, rate = np.array([0.5, 0.5]), np.array([0.99, 0.01]), 0.5
    mixture = np.log((1 - rate) * p + rate * q)
    assert _renyi(np.log(p), mixture, 2) > _renyi(mixture, np.log(p), 2)


def test_small_variances_pay_for_the_discreteness_of_the_sum() -> None:
    # tau grows as the shares' variance shrinks: the same total noise is worth less
    coarse = DistributedMechanism(10.0, 100.0, 64, 0.5).round_rdp(20, sampled=False)
    fine = DistributedMechanism(10_000.0, 100_000.0, 64, 0.5e6).round_rdp(20, sampled=False)
    assert (coarse >= fine).all() and (coarse > fine).any()


def test_fewer_surviving_shares_spend_more() -> None:
    mechanism = DistributedMechanism(1000.0, 30_000.0, 900, 20_000.0, rate=0.1)
    spent = [epsilon_from_rdp(10 * mechanism.round_rdp(s), 1e-5) for s in (10, 40, 90)]
    assert spent[0] > spent[1] > spent[2]


def test_calibration_reaches_the_target_from_the_safe_side() -> None:
    z = calibrate_distributed(3.0, rate=0.1, shares=99, rounds=100, delta=1e-5)
    assert planned_epsilon(z, rate=0.1, shares=99, rounds=100, delta=1e-5) <= 3.0
    assert planned_epsilon(z * 0.99, rate=0.1, shares=99, rounds=100, delta=1e-5) > 3.0 * 0.98


def test_the_plan_noises_with_the_rounded_sensitivity_and_reaches_its_target() -> None:
    config = load_config(
        overrides=[
            "secagg.enabled=true",
            "secagg.dp=distributed",
            "sampling=poisson",
            "fraction=0.1",
            "privacy.target_epsilon=3",
            "privacy.clip=0.5",
            "rounds=100",
        ]
    )
    plan = secagg_plan(config, population=1000, length=4810)
    assert plan is not None
    l2, l1 = plan.sensitivity
    assert (l2, l1) == rounded_sensitivity(plan.scale * 0.5, plan.padded)
    assert plan.variance * plan.shares >= (plan.noise_multiplier * l2) ** 2 * (1 - 1e-12)
    assert plan.planned_epsilon <= 3.0 + 1e-6
