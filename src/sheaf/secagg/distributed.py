"""The server half of distributed DP: the top-up, the mean of a noised sum, and the privacy it spent.

Under distributed DP the clients clip their updates to C and each adds its share of
discrete Gaussian noise inside the ring (client step ``secagg_encode``); secure
aggregation hands the server only their ring sum. Two steps follow, the same in
simulation and deployment:

- :func:`top_up`, in the ring before decoding: the server adds ``K - s`` more
  independent ``N_Z(0, σ²)`` shares to the sum of the ``s`` survivors, so that every
  released sum carries exactly K shares (the plan's :attr:`~sheaf.secagg.plan.SecAggPlan.top_up`)
  whether or not a given client took part. Without it the noise's *variance* would tell
  the two worlds apart — ``s`` shares against ``s - 1``, which over thousands of
  coordinates is not a small difference — and the amplified epsilon would not be a bound.
  With it the neighbouring pair is a pure shift of a symmetric noise, which the subsampled
  accounting of :mod:`sheaf.secagg.accounting` needs. A round with more than K survivors
  (probability at most ``δ_K``, which the reported delta includes) is aborted before
  anything is released. Its bits follow the clients' policy: a seeded stream of the run
  seed (``Purpose.NOISE``, the round) in a simulation whose plan asks for seeded noise,
  the operating system's CSPRNG otherwise (always in deployment).
- :func:`distributed_mean` turns the decoded sum into the mean with the fixed denominator
  of DP-FedAvg (the expected cohort, so that the denominator does not depend on who took
  part) and accounts the round. What the released models reveal to anyone who does not
  know the cohort (``epsilon``, Poisson-amplified, at ``δ + rounds δ_K`` for the run's
rounds) is protected by
  ``K - 1`` shares every round (a client's own share is not counted). The server knows
  the cohort and its own top-up: against it there is no amplification and only the
  *other* survivors' shares count, ``s - 1`` of them (``epsilon_server``, at δ). Its
  state holds both RDP curves, so a resumed run reports the same epsilon.

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
    >>> delta["w"].tolist(), state.shares, state.server_shares, round(state.epsilon, 2) > 0
    ([0.5, 0.5, 0.5], 152, 99, True)

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

from sheaf.core.errors import AggregationError, StrategyError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, stream
from sheaf.core.update import Update
from sheaf.privacy.aggregation import PRIVACY
from sheaf.quantize.quantizer import to_ring
from sheaf.quantize.randomness import BitSource, SecureBits, SeededBits
from sheaf.secagg.accounting import ORDERS, epsilon_from_rdp
from sheaf.secagg.discrete_gaussian import discrete_gaussian
from sheaf.secagg.plan import SecAggPlan
from sheaf.strategies.base import AggregateStep, RoundContext, WeightedSum

__all__ = ["DistributedState", "distributed_mean", "top_up", "top_up_bits"]


class DistributedState(NamedTuple):
    """The privacy ledger of distributed DP (the step's state).

    Attributes:
        rounds: sums released.
        rdp: the RDP curve spent so far about the released models (Poisson-amplified).
        rdp_server: the RDP curve spent so far against the server (no amplification).
        epsilon: epsilon of ``rdp`` at ``delta``.
        epsilon_server: epsilon of ``rdp_server`` at the plan's δ (no larger than ``delta``).
        delta: the delta epsilon is reported at, ``δ + rounds δ_K`` for the run's rounds (a
            round past K is aborted whether or not a sum was released before it).
        noise_multiplier: the effective noise multiplier of the released sums,
            ``sqrt((K - 1) σ²) / Δ₂``.
        shares: the noise shares that protect a client in a released sum, ``K - 1``.
        server_shares: those that protected it against the server in the last round, ``s - 1``.
        top_up: the shares the server added to the last sum, ``K - s``.
    """

    rounds: int
    rdp: npt.NDArray[np.float64]
    rdp_server: npt.NDArray[np.float64]
    epsilon: float
    epsilon_server: float
    delta: float
    noise_multiplier: float
    shares: int
    server_shares: int = 0
    top_up: int = 0


def top_up_bits(plan: SecAggPlan, seed: int, round: int) -> BitSource:
    """The bits of a round's top-up: seeded from the run seed when the plan asks simulated
    clients for seeded noise, the operating system's CSPRNG otherwise (as the clients')."""
    if plan.noise == "seeded":
        return SeededBits(stream(seed, Purpose.NOISE, round=round))
    return SecureBits()


def top_up(
    plan: SecAggPlan, ring: npt.NDArray[np.uint32], survivors: int, bits: BitSource
) -> tuple[npt.NDArray[np.uint32], int]:
    """The ring sum of ``survivors`` inputs with ``K - survivors`` noise shares added, and
    how many were added (see the module docstring).

    Raises:
        AggregationError: if the sum holds more than K inputs (the round is skipped, nothing released).
    """
    if plan.dp != "distributed" or plan.top_up < 2:
        raise StrategyError("a noise top-up needs a distributed-DP plan")
    if survivors > plan.top_up:
        raise AggregationError(
            f"{survivors} survivors exceed the {plan.top_up} noise shares every released sum must carry "
            f"(probability at most {plan.top_up_failure:.3g} a round, counted in delta); round skipped, nothing released"
        )
    added = plan.top_up - survivors
    noise = np.zeros(ring.shape, np.int64)
    padded = plan.padded
    for _ in range(added):  # K - s independent shares: a sum of discrete Gaussians is not one
        noise[:padded] += discrete_gaussian(plan.variance, padded, bits)
    return to_ring(ring.astype(np.int64) + noise, plan.bits), added


def distributed_mean(plan: SecAggPlan) -> AggregateStep[DistributedState]:
    """The aggregate step of distributed DP for ``plan`` (see the module docstring).

    It accepts only the decoded sum of uniformly weighted updates (a
    :class:`~sheaf.strategies.base.WeightedSum` whose weight is its count), which
    :func:`~sheaf.secagg.step.secure_aggregate` gives it.
    """
    mechanism = plan.mechanism()
    l2, _ = plan.sensitivity

    shares = plan.top_up - 1
    effective = math.sqrt(shares * plan.variance) / l2
    released = mechanism.round_rdp(shares)

    def init(params: Params) -> DistributedState:
        zeros = np.zeros(len(ORDERS), np.float64)
        return DistributedState(0, zeros, zeros.copy(), 0.0, 0.0, plan.delta, effective, shares)

    def apply(
        value: Sequence[Update] | WeightedSum, state: DistributedState, ctx: RoundContext
    ) -> tuple[Params, DistributedState]:
        if not isinstance(value, WeightedSum) or value.weight != value.count:
            raise StrategyError("distributed DP needs the securely aggregated sum of uniformly weighted updates")
        like = ctx.params
        delta = Params({name: (value.total[name] / plan.expected_cohort).astype(like[name].dtype) for name in like})
        if value.count > plan.top_up:
            raise AggregationError(
                f"a sum of {value.count} inputs exceeds the {plan.top_up} noise shares; round skipped"
            )
        others = value.count - 1
        rdp = state.rdp + released
        rdp_server = state.rdp_server + mechanism.round_rdp(others, sampled=False)
        rounds = state.rounds + 1
        return delta, DistributedState(
            rounds,
            rdp,
            rdp_server,
            epsilon_from_rdp(rdp, plan.delta),
            epsilon_from_rdp(rdp_server, plan.delta),
            plan.reported_delta(max(plan.rounds, ctx.round)),  # every round of the run may abort past K
            effective,
            shares,
            others,
            plan.top_up - value.count,
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
                "server_noise_shares": float(state.server_shares),
            }
        }

    return AggregateStep(init, apply, "distributed_mean", needs_updates=False, report=report)
