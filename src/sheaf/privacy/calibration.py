"""The inverse of accounting: the noise multiplier that spends a target epsilon.

Given a target (epsilon, delta), a number of rounds and how clients are sampled,
:func:`calibrate_noise_multiplier` finds the smallest noise multiplier z whose rounds stay
within the target, with dp-accounting's ``calibrate_dp_mechanism`` (Brent's method on the
accountant's epsilon, then a check that the answer is on the safe side). For the PLD
accountant it first calibrates with RDP — whose epsilon is never below PLD's, so its z is
an upper end — and searches below it, because PLD evaluations at small z are slow.

Example:
    >>> from sheaf.privacy.accountant import RoundMechanism, epsilon
    >>> z = calibrate_noise_multiplier(10.0, 1e-5, rounds=50, mechanism=RoundMechanism("poisson", 1.0, rate=1.0))
    >>> round(z, 1), epsilon(RoundMechanism("poisson", z, rate=1.0), 50, 1e-5) <= 10.0
    (3.7, True)

References:
    Brent. Algorithms for Minimization without Derivatives. 1973. The dp-accounting
    library (Google, ``dp_accounting.calibrate_dp_mechanism``).
"""

from __future__ import annotations

from sheaf.core.errors import ConfigError
from sheaf.privacy.accountant import (
    ACCOUNTANTS,
    RoundMechanism,
    _quiet_absl,
    dp_event,
    epsilon,
    make_accountant,
)

__all__ = ["calibrate_noise_multiplier"]

#: Noise multipliers are found to within this (absolute) tolerance, on the safe side.
TOLERANCE = 1e-3


def _search(
    accountant: str, mechanism: RoundMechanism, target_epsilon: float, delta: float, rounds: int, bracket: object
) -> float:
    import dp_accounting

    def event(z: float) -> dp_accounting.DpEvent:
        return dp_event(mechanism._replace(noise_multiplier=float(z)), rounds)

    with _quiet_absl():
        z = dp_accounting.calibrate_dp_mechanism(
            lambda: make_accountant(accountant, mechanism), event, target_epsilon, delta, bracket, tol=TOLERANCE
        )
    return float(z)


def calibrate_noise_multiplier(
    target_epsilon: float, delta: float, rounds: int, mechanism: RoundMechanism, accountant: str = "rdp"
) -> float:
    """The smallest noise multiplier with which ``rounds`` rounds spend at most ``target_epsilon``.

    Args:
        target_epsilon: the epsilon to spend in total, > 0.
        delta: the delta of the guarantee, in (0, 1).
        rounds: the rounds that will be released (each accounted as ``mechanism``).
        mechanism: how a round is sampled (its noise multiplier is ignored).
        accountant: ``rdp`` or ``pld``.

    Returns:
        z, within 1e-3 of the optimum and never spending more than the target.

    Raises:
        ConfigError: if a setting is out of range, or no noise multiplier up to about 2^30
            reaches the target.
    """
    if not target_epsilon > 0:
        raise ConfigError(f"privacy.target_epsilon must be > 0, got {target_epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"privacy.delta must be in (0, 1), got {delta}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1 to calibrate noise, got {rounds}")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"privacy.accountant must be one of: {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    import dp_accounting

    mechanism = mechanism._replace(noise_multiplier=1.0).check()
    make_accountant(accountant, mechanism)  # refuses PLD with fixed-size sampling, clearly

    def spends(z: float, kind: str) -> float:
        return epsilon(mechanism._replace(noise_multiplier=z), rounds, delta, kind)

    try:
        # Bracket by doubling or halving from z = 1: small z is where the accountants are
        # slowest, so the search goes there only if it must.
        lower, upper = 0.5, 1.0
        while spends(upper, "rdp") > target_epsilon:
            lower, upper = upper, upper * 2
            if upper > 2**30:
                raise ValueError("no noise multiplier up to 2^30 is enough")
        while lower > 1e-3 and spends(lower, "rdp") <= target_epsilon:
            lower, upper = lower / 2, lower
        upper = _search(
            "rdp", mechanism, target_epsilon, delta, rounds, dp_accounting.ExplicitBracketInterval(lower, upper)
        )
        if accountant == "rdp":
            return upper
        # RDP's epsilon is never below PLD's, so PLD's answer lies below RDP's.
        lower = 0.75 * upper
        while spends(lower, "pld") <= target_epsilon:
            lower *= 0.75
        return _search(
            "pld", mechanism, target_epsilon, delta, rounds, dp_accounting.ExplicitBracketInterval(lower, upper)
        )
    except ValueError as exc:
        raise ConfigError(
            f"cannot reach privacy.target_epsilon={target_epsilon:g} at delta={delta:g} over {rounds} rounds "
            f"({exc}); raise the target or lower the rounds or the sampling rate"
        ) from None
