"""The secure-aggregation plan of a run: what ``[secagg]`` resolves to for a model and population.

:func:`secagg_plan` checks ``[secagg]`` (and, for distributed DP, ``[privacy]``) against the
sampling, the population and the model's size, and fixes everything a round needs:

- the **quantiser** (:class:`~sheaf.quantize.Quantizer`): ring bits, clip norm, weight cap
  and scale. The scale is the largest for which a sum of ``max_inputs`` encodings wraps
  around the ring with probability at most 2**-40 (:func:`~sheaf.quantize.choose_scale`),
  where ``max_inputs`` bounds the cohort (its size with fixed-size sampling; with Poisson
  sampling, the expected size plus 8 standard deviations plus 8: a larger cohort is
  skipped, not wrapped);
- for **distributed DP**, the **top-up** K: every released sum carries exactly K noise
  shares — the survivors' own and, added by the server after unmasking, ``K - survivors``
  more (:func:`~sheaf.secagg.distributed.top_up`) — so that whether a client took part
  does not change the noise's variance. K is the smallest cohort bound with
  ``P(Binomial(N - 1, q) >= K) <= δ_K``, ``δ_K = δ / (10 rounds)`` (:func:`cohort_bound`):
  a round whose survivors exceed K is aborted before anything is released, and the
  reported delta is ``δ + rounds δ_K`` (:attr:`SecAggPlan.reported_delta`);
- each client's noise share: ``N_Z(0, σ²)`` on every rotated coordinate with
  ``σ² = ceil(z² Δ₂² / (K - 1))``, where ``Δ₂ = s C + sqrt(d')`` is the rounded update's
  sensitivity (:mod:`sheaf.secagg.accounting`) and ``K - 1`` the shares that protect a
  client in every released sum besides its own (the released noise is
  ``z Δ₂ sqrt(K / (K - 1))``). ``z`` is ``privacy.noise_multiplier``, or calibrated so
  that ``rounds`` rounds with ``K - 1`` shares spend ``privacy.target_epsilon`` (at δ).
  The scale is then chosen so that ``σ² <= 2**26`` (the exact sampler's int64 range) and
  a sum of at most ``max(max_inputs, K)`` inputs with K shares of noise does not wrap — so
  the rounding inflation ``sqrt(d') / (s C)`` is reported, and refused above 1/3;
- the **protocol**: threshold fraction, planned dropout rate, neighbour degree, and the
  simulated dropouts and stand-in of a simulation.

Example:
    >>> from sheaf.core.config import load_config
    >>> plan = secagg_plan(load_config(overrides=["secagg.enabled=true", "clients=20", "fraction=0.5"]),
    ...                    population=20, length=1000)
    >>> plan.dp, plan.max_inputs, plan.weighted, plan.quantizer().padded
    ('none', 10, True, 1024)

References:
    Kairouz, Liu, Steinke. The Distributed Discrete Gaussian Mechanism for Federated
    Learning with Secure Aggregation. ICML 2021. Bell, Bonawitz, Gascón, Lepoint, Raykova.
    Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from sheaf.core.config import RunConfig
from sheaf.core.errors import ConfigError
from sheaf.core.sampling import cohort_size
from sheaf.core.update import Scalar
from sheaf.quantize.hadamard import RandomizedHadamard
from sheaf.quantize.quantizer import DEFAULT_FAILURE, Quantizer, choose_scale, ring_bound
from sheaf.secagg.accounting import (
    DistributedMechanism,
    calibrate_distributed,
    epsilon_from_rdp,
    rounded_sensitivity,
)
from sheaf.secagg.discrete_gaussian import MAX_VARIANCE

__all__ = ["SecAggPlan", "cohort_bound", "max_inputs_for", "secagg_plan"]

#: The largest rounding inflation ``sqrt(d') / (s C)`` distributed DP accepts.
_MAX_INFLATION = 1 / 3


@dataclass(frozen=True)
class SecAggPlan:
    """How a run is securely aggregated (resolved from ``[secagg]``; see the module docstring).

    Attributes:
        dp: ``none`` or ``distributed``.
        bits: the ring is Z_{2**bits}.
        clip: each update's L2 clip norm C.
        max_weight: the largest weight (1 with distributed DP: uniform weights).
        weighted: whether encodings carry their weight (without DP).
        length: the model's parameters (d).
        scale: the quantiser's scale s.
        threshold: the secret-sharing threshold as a fraction of the neighbours.
        max_dropout: the dropout rate the neighbour graph is planned for.
        degree: neighbours per client (0: from ``max_dropout``).
        dropout: simulated dropout probability during the protocol (simulation only).
        stand_in: run the exact stand-in instead of the protocol (simulation only).
        max_inputs: the most inputs a sum may hold (the quantiser's bound).
        expected_cohort: clients expected per round (the mean's fixed denominator with DP).
        population: the number of clients.
        rounds: the rounds of the run.
        noise: ``seeded`` or ``secure``: where rounding and noise bits come from (seeded
            only for simulated clients whose own policy allows it).
        variance: σ², each client's discrete Gaussian variance (0 without DP).
        noise_multiplier: z the variance was planned for.
        delta: the delta epsilon is reported at.
        rate: the Poisson sampling rate (amplification; 1 without it).
        shares: K - 1, the noise shares that protect a client in every released sum.
        planned_epsilon: epsilon after ``rounds`` rounds of ``shares`` shares (0 without DP).
        top_up: K, the noise shares every released sum carries (0 without DP).
        top_up_failure: δ_K, the chance per round that the cohort exceeds K.
    """

    dp: str
    bits: int
    clip: float
    max_weight: int
    weighted: bool
    length: int
    scale: float
    threshold: float
    max_dropout: float
    degree: int
    dropout: float
    stand_in: bool
    max_inputs: int
    expected_cohort: float
    population: int
    rounds: int
    noise: str = "seeded"
    variance: int = 0
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    rate: float = 1.0
    shares: int = 0
    planned_epsilon: float = 0.0
    top_up: int = 0
    top_up_failure: float = 0.0

    def reported_delta(self, rounds: int) -> float:
        """The delta of the amplified epsilon after ``rounds`` rounds: ``δ + rounds δ_K``."""
        return self.delta + rounds * self.top_up_failure

    def quantizer(self) -> Quantizer:
        """The run's quantiser."""
        return Quantizer(self.length, self.bits, self.scale, self.clip, self.max_weight, self.weighted)

    @property
    def padded(self) -> int:
        """Rotated coordinates (d')."""
        return RandomizedHadamard(self.length, 0).padded

    @property
    def sensitivity(self) -> tuple[float, float]:
        """``(Δ₂, Δ₁)`` of one client's rounded, scaled, rotated vector."""
        return rounded_sensitivity(self.scale * self.clip, self.padded)

    def mechanism(self) -> DistributedMechanism:
        """What one round releases about a client (distributed DP)."""
        l2, l1 = self.sensitivity
        return DistributedMechanism(l2, l1, self.padded, float(self.variance), self.rate)

    def client_options(self) -> dict[str, Scalar]:
        """What every client needs to encode its update (fixed for the run)."""
        return {
            "secagg_bits": self.bits,
            "secagg_scale": self.scale,
            "secagg_clip": self.clip,
            "secagg_max_weight": self.max_weight,
            "secagg_weighted": self.weighted,
            "secagg_variance": self.variance,
            "secagg_noise": self.noise,
        }

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-ready figures (the run store's meta ``secagg``)."""
        l2, _ = self.sensitivity
        return {
            "protocol": "SecAgg+ (Bell et al. 2020)" + (", exact stand-in" if self.stand_in else ""),
            "dp": self.dp,
            "bits": self.bits,
            "clip": self.clip,
            "max_weight": self.max_weight,
            "scale": self.scale,
            "padded_length": self.padded,
            "max_inputs": self.max_inputs,
            "threshold": self.threshold,
            "max_dropout": self.max_dropout,
            "degree": self.degree,
            "simulated_dropout": self.dropout,
            "wrap_probability_bound": DEFAULT_FAILURE,
            "noise_variance": self.variance,
            "noise_multiplier": self.noise_multiplier,
            "rounding_inflation": math.sqrt(self.padded) / (self.scale * self.clip),
            "planned_shares": self.shares,
            "planned_epsilon": self.planned_epsilon,
            "delta": self.delta,
            "top_up_shares": self.top_up,
            "top_up_failure": self.top_up_failure,
            "planned_delta": self.reported_delta(self.rounds),
            "sensitivity_l2": l2,
            "noise": self.noise,
        }


def max_inputs_for(population: int, size: int, rate: float | None) -> int:
    """The quantiser's bound on the inputs of one sum: the cohort size, or with Poisson
    sampling at ``rate`` the mean plus 8 standard deviations plus 8 (at most the population)."""
    if rate is None:
        return size
    mean = rate * population
    return min(population, math.ceil(mean + 8 * math.sqrt(mean * (1 - rate)) + 8))


def cohort_bound(population: int, rate: float, failure: float) -> int:
    """K: the smallest bound with ``P(Binomial(population - 1, rate) >= K) <= failure`` (at
    most ``population``, which no cohort exceeds).

    With a given client in the cohort, the cohort exceeds K exactly when ``K`` or more of
    the other ``population - 1`` clients are sampled; without it, only then or less often.

    Example:
        >>> cohort_bound(1000, 0.1, 1e-8)
        158
    """
    if not 0 < rate <= 1 or not 0 < failure < 1 or population < 1:
        raise ValueError(f"cohort_bound needs population >= 1, 0 < rate <= 1, 0 < failure < 1; got {population}, "
                         f"{rate}, {failure}")  # fmt: skip
    n = population - 1
    if rate == 1:
        return population
    log_q, log_p = math.log(rate), math.log1p(-rate)
    log_pmf = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_q + (n - k) * log_p
        for k in range(n + 1)
    ]
    tail = 0.0  # P(X >= k), summed from the top so that small tails keep their precision
    for k in range(n, -1, -1):
        tail += math.exp(log_pmf[k])
        if tail > failure:
            return k + 1
    return 0


def _distributed(config: RunConfig, plan: SecAggPlan) -> SecAggPlan:
    p, s = config.privacy, config.strategy
    if p.mode != "none":
        raise ConfigError(
            "secagg.dp=distributed is the differential privacy of the run (the clients add the noise); "
            f"leave privacy.mode=none (got {p.mode!r}), its noise_multiplier, target_epsilon, clip and delta apply"
        )
    if s.sampling != "poisson":
        raise ConfigError("secagg.dp=distributed is accounted with Poisson sampling; set strategy.sampling=poisson")
    if p.adaptive_clip or p.client_budget or p.client_budgets:
        raise ConfigError("secagg.dp=distributed supports a fixed clip norm without client budgets; unset them")
    if p.accountant != "rdp":
        raise ConfigError("secagg.dp=distributed is accounted in RDP; set privacy.accountant=rdp")
    rate = s.fraction
    rounds = config.rounds
    failure = p.delta / (10 * rounds)
    top_up = max(2, cohort_bound(plan.population, rate, failure))
    shares = top_up - 1
    inputs = max(plan.max_inputs, top_up)
    if p.target_epsilon > 0:
        z = calibrate_distributed(p.target_epsilon, rate=rate, shares=shares, rounds=rounds, delta=p.delta)
    elif p.noise_multiplier > 0:
        z = p.noise_multiplier
    else:
        raise ConfigError(
            "secagg.dp=distributed needs noise: set privacy.noise_multiplier > 0 or privacy.target_epsilon"
        )
    padded = RandomizedHadamard(plan.length, 0).padded
    room = float((1 << (plan.bits - 1)) - 1)
    # The largest sensitivity whose noise share stays within the exact sampler's variance.
    sensitivity = math.sqrt(MAX_VARIANCE * shares) / z
    while True:
        scale = (sensitivity - math.sqrt(padded)) / p.clip
        if scale <= 0 or math.sqrt(padded) > _MAX_INFLATION * scale * p.clip:
            raise ConfigError(
                f"distributed DP over {shares + 1} clients cannot noise a model of {plan.length} parameters at "
                f"z = {z:.3g} precisely enough (rounding would inflate the sensitivity by more than a third); "
                "raise strategy.fraction or use a smaller model"
            )
        variance = math.ceil((z * sensitivity) ** 2 / shares)
        if variance > MAX_VARIANCE:  # rounding put the ceiling one past the sampler's range
            sensitivity *= 1 - 1e-12
            continue
        bound = ring_bound(scale, clip=p.clip, max_weight=1, inputs=inputs, length=plan.length, noise_variance=variance)
        if bound <= room:
            break
        sensitivity *= 0.8
    mechanism = DistributedMechanism(*rounded_sensitivity(scale * p.clip, padded), padded, float(variance), rate)
    epsilon = epsilon_from_rdp(rounds * mechanism.round_rdp(shares), p.delta)
    return dataclasses.replace(
        plan,
        clip=p.clip,
        max_weight=1,
        weighted=False,
        scale=scale,
        variance=variance,
        noise_multiplier=z,
        delta=p.delta,
        rate=rate,
        shares=shares,
        planned_epsilon=epsilon,
        max_inputs=inputs,
        top_up=top_up,
        top_up_failure=failure,
    )


def secagg_plan(config: RunConfig, population: int, length: int) -> SecAggPlan | None:
    """Resolve ``config.secagg`` for ``population`` clients and a model of ``length``
    parameters (None when secure aggregation is off).

    Raises:
        ConfigError: on settings that do not fit together, naming what to change.
    """
    g, s = config.secagg, config.strategy
    if not g.enabled:
        if g.dp != "none":
            raise ConfigError("secagg.dp needs secure aggregation: set secagg.enabled=true")
        return None
    size = cohort_size(population, s.fraction, s.min_clients)
    rate = s.fraction if s.sampling == "poisson" else None
    inputs = max_inputs_for(population, size, rate)
    expected = s.fraction * population if rate is not None else float(size)
    if expected < 3:
        raise ConfigError(
            f"secure aggregation needs at least 3 clients per round (a sum of two reveals each to the other), "
            f"but a round expects {expected:g}; raise strategy.fraction or strategy.min_clients"
        )
    clip = config.privacy.clip if config.privacy.mode == "central" else g.norm_bound
    try:
        scale = choose_scale(g.bits, clip=clip, max_weight=g.max_weight, inputs=inputs, length=length)
    except ValueError as exc:
        raise ConfigError(f"secagg: {exc} (secagg.bits, secagg.max_weight)") from None
    plan = SecAggPlan(
        dp=g.dp,
        bits=g.bits,
        clip=clip,
        max_weight=g.max_weight,
        weighted=True,
        length=length,
        scale=scale,
        threshold=g.threshold,
        max_dropout=g.max_dropout,
        degree=g.degree,
        dropout=g.dropout,
        stand_in=g.stand_in,
        max_inputs=inputs,
        expected_cohort=expected,
        population=population,
        rounds=config.rounds,
        noise=config.privacy.noise,
    )
    return _distributed(config, plan) if g.dp == "distributed" else plan
