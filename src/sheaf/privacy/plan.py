"""The privacy plan of a run: what ``[privacy]`` resolves to for a given population.

:func:`privacy_plan` checks the ``[privacy]`` settings against the sampling and the
population, calibrates the noise multiplier when a target epsilon is given, and returns
a :class:`PrivacyPlan`: everything the server-side step (:mod:`sheaf.privacy.aggregation`)
and the clients' steps (:mod:`sheaf.privacy.client_steps`) need. What a client needs
travels in its instructions' options (:meth:`PrivacyPlan.client_options`), so a client can
keep its own ledger without trusting anything but what it is told it takes part in.

Example:
    >>> from sheaf.core.config import load_config
    >>> plan = privacy_plan(load_config(overrides=["privacy.mode=central", "sampling=poisson",
    ...                                            "fraction=0.1"]), population=1000)
    >>> plan.mechanism, plan.expected_cohort
    (RoundMechanism(kind='poisson', noise_multiplier=1.0, rate=0.1, population=1000, cohort=0), 100.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sheaf.core.config import RunConfig
from sheaf.core.errors import ConfigError, TaskError
from sheaf.core.sampling import cohort_size
from sheaf.core.update import Scalar
from sheaf.privacy.accountant import RoundMechanism, make_accountant
from sheaf.privacy.calibration import calibrate_noise_multiplier
from sheaf.privacy.clipping import update_noise_multiplier

__all__ = [
    "BELOW_CLIP_METRIC",
    "CLIP_OPTION",
    "EVALUATION_OFF",
    "PrivacyPlan",
    "deployed_privacy_plan",
    "mechanism_from_options",
    "privacy_plan",
]

#: The per-round option carrying the current clip norm to the clients.
CLIP_OPTION = "dp_clip"
#: The metric a client that clips reports for adaptive clipping: 1 if its update was within C.
BELOW_CLIP_METRIC = "dp_below_clip"
#: What a private run says once (progress output, run store meta) about federated evaluation.
EVALUATION_OFF = (
    "federated evaluation is off under differential privacy: each client's raw test loss, accuracy and "
    "test-set size would leave it outside the mechanism (the central test set is still evaluated)"
)


@dataclass(frozen=True)
class PrivacyPlan:
    """How a run is made differentially private (resolved from ``[privacy]``).

    Attributes:
        mode: ``central`` (the server noises the aggregate) or ``local`` (each client
            noises its own update).
        clipping: ``server`` or ``client``: who clips (local mode: the client).
        clip: the clip norm (the starting value with adaptive clipping).
        noise_multiplier: z, accounted per round (calibrated if a target epsilon was set).
        adaptive: whether the clip norm tracks ``target_quantile`` of the update norms.
        target_quantile: γ of adaptive clipping.
        clip_lr: η of adaptive clipping.
        count_stddev: σ_b, the noise on the count of unclipped updates (adaptive only).
        delta: the delta epsilon is reported at.
        accountant: ``rdp`` or ``pld``.
        noise: ``seeded`` or ``secure``.
        mechanism: what one round releases about a client, for the accountant.
        expected_cohort: the fixed denominator of the mean (clients expected per round).
        population: the number of clients.
        rounds: the rounds the run will release.
        ledgers: whether clients are asked to run their budget check (``privacy_budget``):
            needed wherever a client may have a limit; without it a central run with server
            clipping has no client step at all (so a vectorised backend can batch it).
        noise_key: a deployed server's run secret: its secure noise for a round is keyed by
            it and the round (:class:`~sheaf.privacy.noise.KeyedNoise`), so a round redone
            after a crash releases the same noise. Empty: fresh noise. Never described.
    """

    mode: str
    clipping: str
    clip: float
    noise_multiplier: float
    adaptive: bool
    target_quantile: float
    clip_lr: float
    count_stddev: float
    delta: float
    accountant: str
    noise: str
    mechanism: RoundMechanism
    expected_cohort: float
    population: int
    rounds: int
    ledgers: bool = True
    noise_key: bytes = field(default=b"", repr=False, compare=False)

    @property
    def update_noise_multiplier(self) -> float:
        """z_Δ: the noise on the updates' sum over the clip norm (z itself without adaptive clipping)."""
        return (
            update_noise_multiplier(self.noise_multiplier, self.count_stddev)
            if self.adaptive
            else self.noise_multiplier
        )

    @property
    def client_step_names(self) -> tuple[str, ...]:
        """The names of the client steps the plan needs, outermost first
        (:func:`~sheaf.privacy.client_steps.privacy_client_steps` gives the steps)."""
        budget = ("privacy_budget",) if self.ledgers else ()
        if self.mode == "local":
            return (*budget, "local_dp")
        return (*budget, "dp_clip") if self.clipping == "client" else budget

    def client_options(self) -> dict[str, Scalar]:
        """What every client is told about the round's mechanism (for its clipping and ledger)."""
        return {
            "dp_mode": self.mode,
            "dp_mechanism": self.mechanism.kind,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_rate": self.mechanism.rate,
            "dp_population": self.mechanism.population,
            "dp_cohort": self.mechanism.cohort,
            "dp_delta": self.delta,
            "dp_accountant": self.accountant,
            "dp_noise": self.noise,
            "dp_adaptive": self.adaptive,
        }

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-ready figures (kept in the run store's meta)."""
        return {
            "mode": self.mode,
            "clipping": self.clipping,
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
            "update_noise_multiplier": self.update_noise_multiplier,
            "adaptive_clip": self.adaptive,
            "count_stddev": self.count_stddev,
            "delta": self.delta,
            "accountant": self.accountant,
            "noise": self.noise,
            "sampling": self.mechanism.kind,
            "sampling_rate": self.mechanism.rate,
            "expected_cohort": self.expected_cohort,
            "population": self.population,
            "rounds": self.rounds,
            "ledgers": self.ledgers,
        }


def mechanism_from_options(options: Mapping[str, Scalar]) -> RoundMechanism:
    """The round's mechanism as a client reads it from its instructions.

    Raises:
        TaskError: if the options do not describe a mechanism.
    """
    try:
        return RoundMechanism(
            str(options["dp_mechanism"]),
            float(options["dp_noise_multiplier"]),
            float(options.get("dp_rate", 1.0)),
            int(options.get("dp_population", 0)),
            int(options.get("dp_cohort", 0)),
        ).check()
    except (KeyError, ValueError, TypeError, ConfigError) as exc:
        raise TaskError(f"the server's privacy options do not describe the round's mechanism: {exc}") from None


def privacy_plan(config: RunConfig, population: int, *, ledgers: bool | None = None) -> PrivacyPlan | None:
    """Resolve ``config.privacy`` for ``population`` clients (None when privacy is off).

    Args:
        config: the run config.
        population: the number of clients.
        ledgers: ask clients to check their own budgets; None: only if ``[privacy]`` gives
            any simulated client one. A deployed server, which cannot know its clients'
            limits, should pass True.

    Raises:
        ConfigError: on settings that do not fit together, naming what to change.
    """
    p, s = config.privacy, config.strategy
    budgets = [int(k) for k in p.client_budgets]
    if p.mode == "none":
        if p.client_budget > 0 or budgets:
            raise ConfigError("privacy.client_budget(s) need privacy.mode=central or local; set privacy.mode")
        return None
    if config.evaluation.federated is True:
        # Nothing noises or accounts per-client evaluation; refuse rather than release it raw.
        raise ConfigError(
            f"evaluation.federated=true would release every evaluating client's raw test loss, accuracy and "
            f"test-set size outside privacy.mode={p.mode}'s mechanism; leave it unset (off under differential "
            "privacy) and evaluate on a central test set"
        )
    if any(cid >= population for cid in budgets):
        raise ConfigError(
            f"privacy.client_budgets names client {max(budgets)}, but there are only {population} (ids 0..{population - 1})"
        )
    size = cohort_size(population, s.fraction, s.min_clients)
    if p.mode == "local":
        if p.adaptive_clip:
            raise ConfigError("privacy.adaptive_clip needs privacy.mode=central (local DP clips to a fixed norm)")
        if s.min_clients > 1:
            raise ConfigError(
                "privacy.mode=local needs strategy.min_clients=1: a round skipped for too few updates would "
                "discard noisy updates the server has already seen, and their clients' ledgers would miss them"
            )
        mechanism = RoundMechanism("local", p.noise_multiplier)
        expected = float(size)
    elif s.sampling == "poisson":
        mechanism = RoundMechanism("poisson", p.noise_multiplier, rate=s.fraction, population=population)
        expected = s.fraction * population
    else:
        mechanism = RoundMechanism("fixed", p.noise_multiplier, population=population, cohort=size)
        expected = float(size)
    make_accountant(p.accountant, mechanism)  # PLD with fixed-size cohorts is refused here
    z = p.noise_multiplier
    if p.target_epsilon > 0:
        # Local DP: calibrated for a client that takes part in every round (the worst case).
        z = calibrate_noise_multiplier(p.target_epsilon, p.delta, config.rounds, mechanism, p.accountant)
    mechanism = mechanism._replace(noise_multiplier=z)
    # Andrew et al.'s expected/20 is below z/2 (unusable) for small cohorts; at least z costs the
    # update at most 15% more noise (z_delta = z / sqrt(1 - 1/4)).
    count_stddev = (p.count_stddev or max(expected / 20.0, z)) if p.adaptive_clip else 0.0
    plan = PrivacyPlan(
        mode=p.mode,
        clipping="client" if p.mode == "local" else p.clipping,
        clip=p.clip,
        noise_multiplier=z,
        adaptive=p.adaptive_clip,
        target_quantile=p.target_quantile,
        clip_lr=p.clip_lr,
        count_stddev=count_stddev,
        delta=p.delta,
        accountant=p.accountant,
        noise=p.noise,
        mechanism=mechanism,
        expected_cohort=expected,
        population=population,
        rounds=config.rounds,
        ledgers=bool(p.client_budget > 0 or budgets) if ledgers is None else ledgers,
    )
    plan.update_noise_multiplier  # noqa: B018 - raises a clear error if σ_b is too small for z
    return plan


def deployed_privacy_plan(config: RunConfig, population: int, *, noise_key: bytes = b"") -> PrivacyPlan | None:
    """What a deployed server (``sheaf server``) runs: ``config``'s plan with secure noise.

    A deployment's server noise is always secure, whatever ``privacy.noise`` says: seeded
    noise can be removed by anyone who knows (or finds by search) the seed. With
    ``noise_key`` (the server's run secret) it is keyed by the secret and the round, so a
    round redone after a crash releases the same noise; without, fresh from the operating
    system's generator. Every client is asked to run its budget check, since only the
    clients know their own limits.

    Example:
        >>> from sheaf.core.config import load_config
        >>> deployed_privacy_plan(load_config(overrides=["privacy.mode=central"]), 10).noise
        'secure'

    Raises:
        ConfigError: if the config sets clients' budgets (a deployed client sets its own:
            ``sheaf client --privacy-budget``), or on any setting :func:`privacy_plan` refuses.
    """
    p = config.privacy
    if p.client_budget > 0 or p.client_budgets:
        raise ConfigError(
            "privacy.client_budget(s) give simulated clients their limits; in a deployment each client "
            "sets its own: 'sheaf client --privacy-budget EPSILON'. Remove them from the server's config"
        )
    plan = privacy_plan(config, population, ledgers=True)
    return None if plan is None else dataclasses.replace(plan, noise="secure", noise_key=noise_key)
