"""Distributed DP accounting: the discrete Gaussian sum's RDP, amplified by a bound that holds
for any mechanism, converted to epsilon by dp-accounting."""

from __future__ import annotations

import logging

import dp_accounting
import pytest
from dp_accounting import rdp

from sheaf.core.config import load_config
from sheaf.secagg.accounting import (
    ORDERS,
    DistributedMechanism,
    calibrate_distributed,
    epsilon_from_rdp,
    planned_epsilon,
    rounded_sensitivity,
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
def test_with_sampling_the_general_bound_is_never_below_the_sampled_gaussians(z: float) -> None:
    l2, shares, q = 5000.0, 99, 0.1
    mechanism = DistributedMechanism(l2, l2 * 30, 900, (z * l2) ** 2 / shares, rate=q)
    ours = epsilon_from_rdp(50 * mechanism.round_rdp(shares), 1e-5)
    sampled = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    reference = gaussian_epsilon(dp_accounting.SelfComposedDpEvent(sampled, 50))
    unsampled = epsilon_from_rdp(50 * mechanism.round_rdp(shares, sampled=False), 1e-5)
    assert reference <= ours * (1 + 1e-9) <= unsampled * (1 + 1e-9)


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
