"""The epsilon sheaf reports is dp-accounting's epsilon for the same mechanism."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from sheaf.core.errors import ConfigError
from sheaf.privacy import (
    PLD_DISCRETIZATION,
    RoundMechanism,
    calibrate_noise_multiplier,
    epsilon,
    epsilon_of,
)

POISSON = RoundMechanism("poisson", 1.1, rate=0.1)
FIXED = RoundMechanism("fixed", 1.1, population=100, cohort=10)
LOCAL = RoundMechanism("local", 4.0)


def direct_poisson(z: float, q: float, rounds: int, delta: float, accountant: str) -> float:
    """The textbook dp-accounting recipe for DP-FedAvg with Poisson sampling."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
    )
    acc = (
        rdp.RdpAccountant()
        if accountant == "rdp"
        else pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    )
    return float(acc.compose(event).get_epsilon(delta))


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize("rounds", [1, 7, 60])
def test_poisson_rounds_spend_what_dp_accounting_says(accountant: str, rounds: int) -> None:
    assert epsilon(POISSON, rounds, 1e-5, accountant) == direct_poisson(1.1, 0.1, rounds, 1e-5, accountant)


def test_fixed_cohorts_are_replace_one_sampling_without_replacement_with_half_the_multiplier() -> None:
    acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    event = dp_accounting.SampledWithoutReplacementDpEvent(100, 10, dp_accounting.GaussianDpEvent(1.1 / 2))
    expected = acc.compose(dp_accounting.SelfComposedDpEvent(event, 25)).get_epsilon(1e-5)
    assert epsilon(FIXED, 25, 1e-5) == expected


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_local_updates_are_gaussian_mechanisms_of_sensitivity_two_clips(accountant: str) -> None:
    acc = (
        rdp.RdpAccountant()
        if accountant == "rdp"
        else pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    )
    expected = acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0), 9)).get_epsilon(1e-6)
    assert epsilon(LOCAL, 9, 1e-6, accountant) == expected


def test_epsilon_grows_with_rounds_and_shrinks_with_noise() -> None:
    spent = [epsilon(POISSON, t, 1e-5) for t in (0, 1, 10, 100)]
    assert spent[0] == 0.0 and spent == sorted(spent) and len(set(spent)) == 4
    assert epsilon(POISSON._replace(noise_multiplier=2.0), 10, 1e-5) < spent[2]
    assert epsilon(POISSON._replace(noise_multiplier=0.0), 10, 1e-5) == math.inf


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_a_composition_of_different_rounds_matches_the_accountant(accountant: str) -> None:
    other = POISSON._replace(noise_multiplier=2.0)
    acc = (
        rdp.RdpAccountant()
        if accountant == "rdp"
        else pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    )
    from sheaf.privacy import dp_event

    acc.compose(dp_event(POISSON, 3)).compose(dp_event(other, 4))
    assert epsilon_of([(POISSON, 3), (other, 4)], 1e-5, accountant) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)


def test_pld_refuses_fixed_size_cohorts_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match="strategy.sampling=poisson"):
        epsilon(FIXED, 3, 1e-5, "pld")


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_calibration_finds_the_smallest_noise_within_the_target(accountant: str) -> None:
    # Full participation keeps each evaluation fast; sampled rounds are calibrated in test_private_runs.
    mechanism = RoundMechanism("poisson", 1.0, rate=1.0)
    z = calibrate_noise_multiplier(4.0, 1e-5, rounds=30, mechanism=mechanism, accountant=accountant)
    assert epsilon(mechanism._replace(noise_multiplier=z), 30, 1e-5, accountant) <= 4.0
    assert epsilon(mechanism._replace(noise_multiplier=z - 0.01), 30, 1e-5, accountant) > 4.0


def test_calibration_rejects_a_target_it_cannot_mean() -> None:
    with pytest.raises(ConfigError, match="target_epsilon must be > 0"):
        calibrate_noise_multiplier(0.0, 1e-5, 10, LOCAL)
