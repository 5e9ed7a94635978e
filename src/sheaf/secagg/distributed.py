"""The server half of distributed DP: the mean of a noised sum, and the privacy it spent.

Under distributed DP the clients clip their updates to C and each adds its share of
discrete Gaussian noise inside the ring (client step ``secagg_encode``); secure
aggregation hands the server only their decoded sum. :func:`distributed_mean` turns it
into the mean with the fixed denominator of DP-FedAvg (the expected cohort, so that the
denominator does not depend on who took part) and accounts the round: the noise that
protects a client is the shares of the *other* clients in the sum, ``survivors - 1`` of
them (:mod:`sheaf.secagg.accounting`), with Poisson amplification for what the released
models reveal (``epsilon``) and without it for what the server, which knows the cohort,
learns from the sums (``epsilon_server``). Its state holds both RDP curves, so a resumed
run reports the same epsilon.

Example:
    >>> import numpy as np
    >>> from sheaf.core.config import load_config
    >>> from sheaf.core.params import Params
    >>> from sheaf.secagg.plan import secagg_plan
    >>> from sheaf.strategies.base import RoundContext, WeightedSum
    >>> config = load_config(overrides=["secagg.enabled=true", "secagg.dp=distributed", "sampling=poisson",
    ...                                 "fraction=0.1", "privacy.noise_multiplier=1.0", "rounds=10"])
    >>> step = distributed_mean(secagg_plan(config, population=1000, length=3))
    >>> p = Params({"w": np.zeros(3)})
    >>> delta, state = step.apply(WeightedSum(Params({"w": np.full(3, 50.0)}), 100.0, 100), step.init(p),
    ...                           RoundContext(1, p, 0, 1000))
    >>> delta["w"].tolist(), state.shares, round(state.epsilon, 2) > 0
    ([0.5, 0.5, 0.5], 99, True)

References:
    McMahan, Ramage, Talwar, Zhang. Learning Differentially Private Recurrent Language
    Models. ICLR 2018. Kairouz, Liu, Steinke. The Distributed Discrete Gaussian Mechanism
    for Federated Learning with Secure Aggregation. ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import StrategyError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.privacy.aggregation import PRIVACY
from sheaf.secagg.accounting import ORDERS, epsilon_from_rdp
from sheaf.secagg.plan import SecAggPlan
from sheaf.strategies.base import AggregateStep, RoundContext, WeightedSum

__all__ = ["DistributedState", "distributed_mean"]


class DistributedState(NamedTuple):
    """The privacy ledger of distributed DP (the step's state).

    Attributes:
        rounds: sums released.
        rdp: the RDP curve spent so far about the released models (Poisson-amplified).
        rdp_server: the RDP curve spent so far against the server (no amplification).
        epsilon: epsilon at ``delta`` of ``rdp``.
        epsilon_server: epsilon at ``delta`` of ``rdp_server``.
        delta: the delta epsilon is reported at.
        noise_multiplier: the last round's effective noise multiplier, ``sqrt(shares σ²) / Δ₂``.
        shares: the noise shares that protected a client in the last round.
    """

    rounds: int
    rdp: npt.NDArray[np.float64]
    rdp_server: npt.NDArray[np.float64]
    epsilon: float
    epsilon_server: float
    delta: float
    noise_multiplier: float
    shares: int


def distributed_mean(plan: SecAggPlan) -> AggregateStep[DistributedState]:
    """The aggregate step of distributed DP for ``plan`` (see the module docstring).

    It accepts only the decoded sum of uniformly weighted updates (a
    :class:`~sheaf.strategies.base.WeightedSum` whose weight is its count), which
    :func:`~sheaf.secagg.step.secure_aggregate` gives it.
    """
    mechanism = plan.mechanism()
    l2, _ = plan.sensitivity

    def init(params: Params) -> DistributedState:
        zeros = np.zeros(len(ORDERS), np.float64)
        return DistributedState(0, zeros, zeros.copy(), 0.0, 0.0, plan.delta, plan.noise_multiplier, plan.shares)

    def apply(
        value: Sequence[Update] | WeightedSum, state: DistributedState, ctx: RoundContext
    ) -> tuple[Params, DistributedState]:
        if not isinstance(value, WeightedSum) or value.weight != value.count:
            raise StrategyError("distributed DP needs the securely aggregated sum of uniformly weighted updates")
        like = ctx.params
        delta = Params({name: (value.total[name] / plan.expected_cohort).astype(like[name].dtype) for name in like})
        shares = value.count - 1
        rdp = state.rdp + mechanism.round_rdp(shares)
        rdp_server = state.rdp_server + mechanism.round_rdp(shares, sampled=False)
        effective = math.sqrt(shares * plan.variance) / l2
        return delta, DistributedState(
            state.rounds + 1,
            rdp,
            rdp_server,
            epsilon_from_rdp(rdp, plan.delta),
            epsilon_from_rdp(rdp_server, plan.delta),
            plan.delta,
            effective,
            shares,
        )

    def report(state: DistributedState) -> Mapping[str, Mapping[str, float]]:
        return {
            PRIVACY: {
                "epsilon": float(state.epsilon),
                "delta": float(state.delta),
                "rounds": float(state.rounds),
                "clip": float(plan.clip),
                "noise_multiplier": float(state.noise_multiplier),
                "epsilon_server": float(state.epsilon_server),
                "noise_shares": float(state.shares),
            }
        }

    return AggregateStep(init, apply, "distributed_mean", needs_updates=False, report=report)
