"""Privacy accounting with dp-accounting: the epsilon a number of rounds spends.

One round of differentially private federated learning releases, about each client, the
output of a Gaussian mechanism on the clipped updates. :class:`RoundMechanism` says which:

- ``poisson`` — central DP-FedAvg with Poisson sampling: every client takes part
  independently with probability ``rate``; the noised sum of clipped updates has
  sensitivity C under adding or removing one client, so a round is dp-accounting's
  ``PoissonSampledDpEvent(rate, GaussianDpEvent(z))`` (add-or-remove-one relation);
- ``fixed`` — central DP-FedAvg with a fixed-size cohort of ``cohort`` clients drawn
  without replacement from ``population`` (sheaf's default sampler): the analysis of Wang,
  Balle and Kasiviswanathan holds for *replacing* one client, under which the sum's
  sensitivity is 2C, so a round is ``SampledWithoutReplacementDpEvent(population, cohort,
  GaussianDpEvent(z / 2))`` (replace-one relation; RDP accountant only);
- ``local`` — one client's own update clipped to C and noised with standard deviation
  ``z * C`` (local DP): any two updates of the client differ by at most 2C, so it is
  ``GaussianDpEvent(z / 2)``, with no amplification (the server knows who sent it).

``z`` is always the noise's standard deviation over the clip norm, the convention of
DP-FedAvg. :func:`epsilon` composes ``rounds`` identical rounds with the RDP or the PLD
accountant. Both are computed once per mechanism and cached, so asking every round costs
microseconds (RDP) or one PLD self-composition (PLD).

Example:
    >>> m = RoundMechanism("poisson", noise_multiplier=1.0, rate=0.1)
    >>> round(epsilon(m, rounds=100, delta=1e-5), 2)
    7.9
    >>> epsilon(m, rounds=0, delta=1e-5)
    0.0

References:
    Mironov. Rényi Differential Privacy. CSF 2017. Mironov, Talwar, Zhang. Rényi
    Differential Privacy of the Sampled Gaussian Mechanism. 2019. Wang, Balle,
    Kasiviswanathan. Subsampled Rényi Differential Privacy and Analytical Moments
    Accountant. AISTATS 2019. Koskela, Jälkö, Honkela. Computing Tight Differential Privacy
    Guarantees Using FFT. AISTATS 2020 (privacy loss distributions). McMahan, Ramage,
    Talwar, Zhang. Learning Differentially Private Recurrent Language Models. ICLR 2018.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from sheaf.core.errors import ConfigError

if TYPE_CHECKING:
    import dp_accounting

__all__ = [
    "ACCOUNTANTS",
    "MECHANISM_KINDS",
    "PLD_DISCRETIZATION",
    "RoundMechanism",
    "dp_event",
    "epsilon",
    "epsilon_of",
    "make_accountant",
]

#: The accountants a user can choose (``privacy.accountant``).
ACCOUNTANTS = ("rdp", "pld")
#: What one round can release about a client (see the module docstring).
MECHANISM_KINDS = ("poisson", "fixed", "local")
#: Value discretisation of the PLD accountant. Coarser than dp-accounting's default 1e-4
#: (which takes seconds per round here) and still pessimistic, so epsilon stays an upper bound.
PLD_DISCRETIZATION = 1e-3


class RoundMechanism(NamedTuple):
    """What one round releases about a client, for the accountant.

    Attributes:
        kind: ``poisson``, ``fixed`` or ``local`` (see the module docstring).
        noise_multiplier: z, the Gaussian noise's standard deviation over the clip norm
            (0: no noise, epsilon is infinite).
        rate: Poisson sampling probability (``poisson``).
        population: number of clients sampled from (``fixed``).
        cohort: clients per round (``fixed``).
    """

    kind: str
    noise_multiplier: float
    rate: float = 1.0
    population: int = 0
    cohort: int = 0

    def check(self) -> RoundMechanism:
        """The mechanism itself, if its fields are consistent.

        Raises:
            ConfigError: naming the field that is out of range.
        """
        if self.kind not in MECHANISM_KINDS:
            raise ConfigError(f"mechanism kind must be one of: {', '.join(MECHANISM_KINDS)}, got {self.kind!r}")
        if not self.noise_multiplier >= 0:
            raise ConfigError(f"noise multiplier must be >= 0, got {self.noise_multiplier}")
        if self.kind == "poisson" and not 0 < self.rate <= 1:
            raise ConfigError(f"Poisson sampling rate must be in (0, 1], got {self.rate}")
        if self.kind == "fixed" and not 0 < self.cohort <= self.population:
            raise ConfigError(f"fixed cohort must be in 1..population ({self.population}), got {self.cohort}")
        return self

    @property
    def replace_one(self) -> bool:
        """Whether the analysis is for replacing one client (else adding or removing one)."""
        return self.kind == "fixed"


@contextmanager
def _quiet_absl() -> Iterator[None]:
    # dp-accounting logs a warning for each fractional RDP order whose series does not
    # converge and then excludes it (the bound stays valid); that is noise on a terminal.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def dp_event(mechanism: RoundMechanism, rounds: int = 1) -> dp_accounting.DpEvent:
    """The dp-accounting event of ``rounds`` rounds of ``mechanism``.

    Example:
        >>> dp_event(RoundMechanism("local", 2.0), rounds=3)
        SelfComposedDpEvent(event=GaussianDpEvent(noise_multiplier=1.0), count=3)
    """
    import dp_accounting

    mechanism.check()
    z = mechanism.noise_multiplier
    one: dp_accounting.DpEvent
    if mechanism.kind == "poisson":
        one = dp_accounting.PoissonSampledDpEvent(mechanism.rate, dp_accounting.GaussianDpEvent(z))
    elif mechanism.kind == "fixed":
        # Replacing a client moves the clipped sum by up to 2C: half the noise multiplier.
        one = dp_accounting.SampledWithoutReplacementDpEvent(
            mechanism.population, mechanism.cohort, dp_accounting.GaussianDpEvent(z / 2)
        )
    else:
        one = dp_accounting.GaussianDpEvent(z / 2)
    return dp_accounting.SelfComposedDpEvent(one, rounds)


def make_accountant(kind: str, mechanism: RoundMechanism) -> dp_accounting.PrivacyAccountant:
    """A fresh dp-accounting accountant of ``kind`` with the relation ``mechanism`` needs.

    Raises:
        ConfigError: on an unknown accountant, or PLD with fixed-size sampling (which
            dp-accounting's PLD accountant does not support).
    """
    import dp_accounting
    from dp_accounting import pld, rdp

    relation = (
        dp_accounting.NeighboringRelation.REPLACE_ONE
        if mechanism.replace_one
        else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    if kind == "rdp":
        return rdp.RdpAccountant(neighboring_relation=relation)
    if kind == "pld":
        if mechanism.replace_one:
            raise ConfigError(
                "privacy.accountant=pld supports Poisson sampling only; set strategy.sampling=poisson, "
                "or use privacy.accountant=rdp with fixed-size cohorts"
            )
        return pld.PLDAccountant(relation, value_discretization_interval=PLD_DISCRETIZATION)
    raise ConfigError(f"privacy.accountant must be one of: {', '.join(ACCOUNTANTS)}, got {kind!r}")


@functools.lru_cache(maxsize=64)
def _rdp_curve(mechanism: RoundMechanism) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(orders, RDP of one round at each order): computed once, as dp-accounting does."""
    accountant = make_accountant("rdp", mechanism)
    with _quiet_absl():
        accountant.compose(dp_event(mechanism, 1))
    return np.asarray(accountant.orders), np.asarray(accountant.rdp)


@functools.lru_cache(maxsize=16)
def _pld_sampled_round(mechanism: RoundMechanism) -> Any:
    """The privacy loss distribution of one Poisson-sampled round (the costly part)."""
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

    return pld_lib.from_gaussian_mechanism(
        mechanism.noise_multiplier, value_discretization_interval=PLD_DISCRETIZATION, sampling_prob=mechanism.rate
    )


def _pld_rounds(mechanism: RoundMechanism, count: int) -> Any:
    """``count`` rounds as a PLD, built the way dp-accounting's PLD accountant builds them."""
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

    if mechanism.kind == "poisson":
        return _pld_sampled_round(mechanism).self_compose(count)
    # Composing Gaussians is a Gaussian: the accountant folds the count into the deviation.
    return pld_lib.from_gaussian_mechanism(
        mechanism.noise_multiplier / 2 / math.sqrt(count), value_discretization_interval=PLD_DISCRETIZATION
    )


def _rdp_epsilon(events: Sequence[tuple[RoundMechanism, int]], delta: float) -> float:
    from dp_accounting.rdp import rdp_privacy_accountant

    relations = {m.replace_one for m, _ in events}
    if len(relations) > 1:
        raise ConfigError("cannot compose replace-one (fixed-size cohort) and add-or-remove rounds in one ledger")
    total: np.ndarray[Any, Any] | None = None
    orders: np.ndarray[Any, Any] | None = None
    for mechanism, count in events:
        orders, curve = _rdp_curve(mechanism)
        total = count * curve if total is None else total + count * curve
    assert orders is not None
    assert total is not None
    value, _ = rdp_privacy_accountant.compute_epsilon(orders, total, delta)
    return float(value)


def _pld_epsilon(events: Sequence[tuple[RoundMechanism, int]], delta: float) -> float:
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

    composed = pld_lib.identity(value_discretization_interval=PLD_DISCRETIZATION)
    for mechanism, count in events:
        if mechanism.replace_one:
            make_accountant("pld", mechanism)  # raises the clear error
        composed = composed.compose(_pld_rounds(mechanism, count))
    return float(composed.get_epsilon_for_delta(delta))


def epsilon_of(events: Sequence[tuple[RoundMechanism, int]], delta: float, accountant: str = "rdp") -> float:
    """The epsilon at ``delta`` of a composition of ``(mechanism, rounds)`` pairs.

    Args:
        events: the mechanisms and how many rounds of each were released.
        delta: the delta of the (epsilon, delta) guarantee, in (0, 1).
        accountant: ``rdp`` or ``pld``.

    Returns:
        Epsilon (0 for no rounds; infinity if a round had no noise).

    Raises:
        ConfigError: on an unknown accountant, a malformed mechanism, PLD with fixed-size
            sampling, or events under different neighbouring relations.

    Example:
        >>> local = RoundMechanism("local", 4.0)
        >>> epsilon_of([(local, 2), (local, 3)], 1e-5) == epsilon(local, 5, 1e-5)
        True
    """
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"privacy.accountant must be one of: {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    live = [(m.check(), int(c)) for m, c in events if c > 0]
    if not live:
        return 0.0
    if any(m.noise_multiplier == 0 for m, _ in live):
        return math.inf
    if len(live) == 1:
        return epsilon(live[0][0], live[0][1], delta, accountant)
    merged: dict[RoundMechanism, int] = {}
    for mechanism, count in live:
        merged[mechanism] = merged.get(mechanism, 0) + count
    pairs = list(merged.items())
    return _rdp_epsilon(pairs, delta) if accountant == "rdp" else _pld_epsilon(pairs, delta)


@functools.lru_cache(maxsize=4096)
def epsilon(mechanism: RoundMechanism, rounds: int, delta: float, accountant: str = "rdp") -> float:
    """The epsilon at ``delta`` after ``rounds`` rounds of ``mechanism``.

    Equal to composing ``dp_event(mechanism, rounds)`` in a fresh dp-accounting accountant
    (:func:`make_accountant`) and asking for its epsilon — sheaf computes one round once
    and scales it (RDP) or self-composes it (PLD), which is what the accountant does too.

    Raises:
        ConfigError: as :func:`epsilon_of`.
    """
    if rounds <= 0:
        return 0.0
    if mechanism.check().noise_multiplier == 0:
        return math.inf
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if accountant == "rdp":
        return _rdp_epsilon([(mechanism, rounds)], delta)
    if accountant == "pld":
        return _pld_epsilon([(mechanism, rounds)], delta)
    raise ConfigError(f"privacy.accountant must be one of: {', '.join(ACCOUNTANTS)}, got {accountant!r}")
