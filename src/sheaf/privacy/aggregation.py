"""The server half of differential privacy: a clipped, noised mean with a fixed denominator.

:func:`private_mean` is the aggregate step of DP-FedAvg (McMahan et al. 2018, with uniform
client weights): with C the round's clip norm and m the *expected* number of clients per
round,

    Δ = (Σ_i clip(Δ_i, C) + N(0, (z_Δ C)² I)) / m

Uniform weights and the fixed denominator m are what the sensitivity argument needs: one
client moves the sum by at most C whatever its data and whoever else took part, so the
noise hides it (weighting by example counts would let a client with many examples move
it further, and dividing by the number that actually arrived would make the denominator
depend on who did). Clients that drop out only shrink the sum.

- ``clipping = "server"``: the server clips each update (it sees each update);
- ``clipping = "client"``: each client clips before sending (client step ``dp_clip``) and
  the server only sums — the variant that works under secure aggregation. The clip norm is
  part of the acceptance rule, so wherever updates are added up (the loop, a pool worker or
  Ray actor, the deployed server's running sum) a longer one is refused as its client's
  dropout; where the server sees each update (adaptive clipping) it also clips again;
- adaptive clipping (Andrew et al. 2021): every update also carries the bit ``[‖Δ_i‖ ≤ C]``;
  the server releases the centred count ``Σ (b_i − ½) + N(0, σ_b²)`` (one client moves it
  by at most ½, the sensitivity the noise split assumes), reads the share
  ``b̄ = released / m + ½`` from it and sets ``C ← C exp(−η (b̄ − γ))``;
- ``mode = "local"``: the clients clipped and noised their own updates (client step
  ``local_dp``); the server takes their plain uniform mean.

The step's state holds the clip norm and the privacy ledger of the run (rounds released;
in local mode how often each client took part) with the epsilon spent so far, so it is
stored with every round and a resumed run reports the same epsilon. The step carries its
whole contract: its client half (the plan's client steps — budget check, clipping, local
noise — and what the clients are told of the mechanism), the clip norm it sends each round
from its own state, and the privacy figures it reports from it.
:func:`with_privacy` puts the step in place of a FedAvg-family strategy's weighted mean,
keeping its server optimiser (DP-FedAdam, DP-FedAvgM, ...) and the client halves of its
other steps (FedProx's proximal term, FedPer's personal layers).

Example:
    >>> import numpy as np
    >>> from sheaf.core.config import load_config
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies import RoundContext, fedavg
    >>> from sheaf.privacy.plan import privacy_plan
    >>> plan = privacy_plan(load_config(overrides=["privacy.mode=central", "privacy.noise_multiplier=0.5",
    ...                                            "fraction=1", "rounds=10"]), population=2)
    >>> strategy = with_privacy(fedavg(), plan)
    >>> p = Params({"w": np.zeros(3)})
    >>> ups = [Update(0, Params({"w": np.array([3.0, 4.0, 0.0])}), 10), Update(1, p, 1)]
    >>> new, state, _ = strategy.aggregate(ups, strategy.init(p), RoundContext(1, p, 0, 2))
    >>> report = privacy_report(strategy, state)
    >>> report["rounds"], round(report["epsilon"], 2), report["clip"]
    (1.0, 25.93, 1.0)

References:
    McMahan, Ramage, Talwar, Zhang. Learning Differentially Private Recurrent Language
    Models. ICLR 2018. Andrew, Thakkar, McMahan, Ramaswamy. Differentially Private Learning
    with Adaptive Clipping. NeurIPS 2021.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from sheaf.core.acceptance import MetricRange
from sheaf.core.errors import ConfigError, StrategyError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.privacy.accountant import epsilon
from sheaf.privacy.client_steps import privacy_client_steps
from sheaf.privacy.clipping import clip_delta, update_clip
from sheaf.privacy.noise import server_noise
from sheaf.privacy.plan import BELOW_CLIP_METRIC, CLIP_OPTION, PrivacyPlan
from sheaf.strategies.base import (
    AggregateStep,
    Broadcast,
    ClientHalf,
    RoundContext,
    Strategy,
    StrategyState,
    WeightedSum,
    chain,
)

__all__ = ["PRIVACY", "PrivateMeanState", "privacy_report", "private_mean", "with_privacy"]


class PrivateMeanState(NamedTuple):
    """The state of :func:`private_mean`: the clip norm and the run's privacy ledger.

    Attributes:
        clip: the clip norm of the next round.
        rounds: rounds released so far.
        participations: local mode: how many updates each client has sent (by client id);
            empty in central mode.
        epsilon: the epsilon spent after the last released round.
        delta: the delta epsilon is reported at (the plan's).
        noise_multiplier: the plan's noise multiplier z.
    """

    clip: float
    rounds: int
    participations: npt.NDArray[np.int64]
    epsilon: float
    delta: float
    noise_multiplier: float


def _spent(plan: PrivacyPlan, rounds: int, participations: npt.NDArray[np.int64]) -> float:
    if plan.mode == "local":
        # Every client's own ledger; the run reports the client that took part most often.
        most = int(participations.max()) if participations.size else 0
        return epsilon(plan.mechanism, most, plan.delta, plan.accountant)
    return epsilon(plan.mechanism, rounds, plan.delta, plan.accountant)


#: The topic under which the private mean reports (``RoundRecord.privacy``).
PRIVACY = "privacy"


def _send_clip(state: PrivateMeanState, ctx: RoundContext) -> Broadcast:
    return Broadcast({CLIP_OPTION: state.clip}, {})


def _report(state: PrivateMeanState) -> Mapping[str, Mapping[str, float]]:
    return {
        PRIVACY: {
            "epsilon": float(state.epsilon),
            "delta": float(state.delta),
            "rounds": float(state.rounds),
            "clip": float(state.clip),
            "noise_multiplier": float(state.noise_multiplier),
        }
    }


def private_mean(plan: PrivacyPlan) -> AggregateStep[PrivateMeanState]:
    """DP-FedAvg's aggregate step for ``plan`` (see the module docstring).

    Sum-only (it accepts a :class:`~sheaf.strategies.base.WeightedSum` of updates with one
    example each) when clients clip to a fixed norm in central mode; otherwise it needs
    each update. Its client half runs the plan's client steps; clients are told of the
    mechanism (and, each round, the clip norm) only when they act on it — a run clipped on
    the server sends them nothing new, so any backend can train it as usual.

    Raises:
        StrategyError: on a weighted sum whose updates were not sent with one example each.
    """
    needs_updates = plan.mode == "local" or plan.clipping == "server" or plan.adaptive
    z_update = plan.update_noise_multiplier
    m = plan.expected_cohort

    def init(params: Params) -> PrivateMeanState:
        counts = np.zeros(plan.population if plan.mode == "local" else 0, np.int64)
        return PrivateMeanState(float(plan.clip), 0, counts, 0.0, plan.delta, plan.noise_multiplier)

    def apply(
        updates: Sequence[Update] | WeightedSum, state: PrivateMeanState, ctx: RoundContext
    ) -> tuple[Params, PrivateMeanState]:
        clip = state.clip
        like = ctx.params
        totals = {name: np.zeros(array.shape, np.float64) for name, array in like.items()}
        below = 0.0  # Σ (b_i − ½): the centred count of updates within C (sensitivity ½)
        counts = state.participations
        if isinstance(updates, WeightedSum):
            if needs_updates:
                raise StrategyError("this private mean needs each client's update, not only their sum")
            if updates.weight != updates.count:
                raise StrategyError("a private sum needs updates sent with one example each (the dp_clip client step)")
            for name, total in totals.items():
                total += updates.total[name]
            arrived = updates.count
        else:
            chosen = sorted(updates, key=lambda u: u.client_id)
            arrived = len(chosen)
            for update in chosen:
                if plan.mode == "local":
                    clipped = update.delta.astype(np.float64)  # already clipped and noised by the client
                else:
                    clipped, norm = clip_delta(update.delta, clip)
                    if plan.clipping == "server":
                        below += float(norm <= clip) - 0.5
                    else:
                        below += float(update.metrics.get(BELOW_CLIP_METRIC, 0.0) >= 0.5) - 0.5
                for name, total in totals.items():
                    total += clipped[name]
            if plan.mode == "local" and chosen:
                counts = counts.copy()
                np.add.at(counts, [u.client_id for u in chosen if u.client_id < counts.size], 1)
        if plan.mode == "local":
            denominator = float(max(arrived, 1))
        else:
            noise = server_noise(plan.noise, ctx.seed, ctx.round, key=plan.noise_key)
            for total in totals.values():
                total += noise.normal(total.shape, z_update * clip)
            denominator = m
            if plan.adaptive:
                # The centred count is what is noised (and accounted); the share is read from it.
                noisy_below = (below + float(noise.normal((1,), plan.count_stddev)[0])) / m + 0.5
                clip = update_clip(clip, noisy_below, plan.target_quantile, plan.clip_lr)
        delta = Params({name: (total / denominator).astype(like[name].dtype) for name, total in totals.items()})
        rounds = state.rounds + 1
        return delta, PrivateMeanState(
            clip, rounds, counts, _spent(plan, rounds, counts), plan.delta, plan.noise_multiplier
        )

    on_clients = bool(plan.client_step_names)
    reads = (MetricRange(BELOW_CLIP_METRIC, 0.0, 1.0),) if plan.adaptive and plan.clipping == "client" else ()
    # Clients that clip to a fixed C send nothing longer; on the sum-only path the server
    # never sees an update alone, so the bound is checked where each one is added up.
    bound = float(plan.clip) if plan.mode == "central" and plan.clipping == "client" and not plan.adaptive else math.inf
    half = ClientHalf(
        steps=privacy_client_steps(plan),
        options=plan.client_options() if on_clients else {},
        metrics=reads,
        max_norm=bound,
    )
    return AggregateStep(
        init,
        apply,
        "private_mean",
        needs_updates=needs_updates,
        # Central DP releases (and charges) every round that reached the clients: the fixed
        # denominator needs no minimum, and skipping on the raw count would release it.
        private_release=plan.mode == "central",
        client=half,
        configure=_send_clip if on_clients else None,
        report=_report,
    )


def with_privacy(strategy: Strategy, plan: PrivacyPlan) -> Strategy:
    """``strategy`` made differentially private by ``plan``.

    The strategy's weighted mean becomes :func:`private_mean`; its server steps (server
    momentum, Adam, ...) stay and see only the noised mean, so they are post-processing.
    The clients run ``privacy_budget`` (their own ledgers) and, when they clip,
    ``dp_clip`` or ``local_dp``, outside the strategy's own client steps.

    Raises:
        ConfigError: if the strategy is not built on the weighted mean (FedAvg, FedProx,
            FedAvgM, FedAdam, FedYogi, FedAdagrad, FedPer, Ditto): per-update rules such as Krum
            or SCAFFOLD have no DP analysis here.
    """
    if not strategy.aggregator.weighted_mean or strategy.update_steps:
        raise ConfigError(
            f"privacy.mode={plan.mode} works with strategies built on the weighted mean (fedavg, fedprox, fedavgm, "
            f"fedadam, fedyogi, fedadagrad, fedper, ditto), not {strategy.name!r}"
        )
    prefix = "ldp" if plan.mode == "local" else "dp"
    return chain(private_mean(plan), *strategy.server_steps, name=f"{prefix}-{strategy.name}")


def privacy_report(strategy: Strategy, state: StrategyState) -> dict[str, float]:
    """What a round records about privacy: ``epsilon``, ``delta``, rounds and the clip norm.

    What the strategy's steps report under ``"privacy"``; empty for a strategy without
    :func:`private_mean`.
    """
    return strategy.report(state).get(PRIVACY, {})
