"""Secure aggregation as a strategy step: quantise on the client, unmask only the sum on the server.

Both halves side by side, in sheaf's step contract (:mod:`sheaf.strategies.base`):

- **client half** — the client step ``secagg_encode`` (:data:`SECAGG_ENCODE`), outermost
  around training: it clips the client's delta (and, for FedAvg, weighs it by its capped
  example count), rotates, scales and rounds it into the ring
  (:class:`~sheaf.quantize.Quantizer`), adds its discrete Gaussian noise share under
  distributed DP, and sends the ring vector — its input to the protocol — with a zero
  delta: nothing else of its update leaves it;
- **server half** — :func:`secure_aggregate`, the aggregate step. The clients' inputs go
  through SecAgg+ (:mod:`sheaf.secagg.driver`: the real protocol, every message as bytes,
  or its exact stand-in), which yields only the ring sum of the clients that got through;
  the step decodes it into the weighted sum (``Σ w_i Δ_i``, ``Σ w_i``, the count) and hands
  it to the strategy's own sum-only aggregate step (FedAvg's weighted mean) or, under
  distributed DP — after the server's noise top-up to K shares in the ring
  (:func:`~sheaf.secagg.distributed.top_up`) — to
  :func:`~sheaf.secagg.distributed.distributed_mean`. A protocol that
  aborts (fewer than T clients at a stage) raises
  :class:`~sheaf.core.errors.AggregationError`: the round loop skips the round, keeps the
  model and records why.

In simulation the clients' protocol state machines run inside the server step — the
in-process transport; what crosses from them to the server's state machine is only the
protocol's messages. A deployment moves the same messages over the network instead: its
backend runs the protocol with the remote clients (:mod:`sheaf.deploy.secure_round`) and
the step takes the survivors' ring sum through ``apply_masked`` (a
:class:`~sheaf.strategies.base.MaskedSum`), decoding it as it decodes its own.

:func:`with_secure_aggregation` puts the step in place of a sum-only strategy's aggregate
step, keeping its server steps (server momentum, Adam) and client halves (FedProx's
proximal term); a strategy that reads single updates is refused with one line.

Example:
    >>> from sheaf.core.config import load_config
    >>> from sheaf.secagg.plan import secagg_plan
    >>> from sheaf.strategies import fedadam, krum
    >>> plan = secagg_plan(load_config(overrides=["secagg.enabled=true"]), population=20, length=10)
    >>> with_secure_aggregation(fedadam(), plan).name
    'secagg-fedadam'
    >>> with_secure_aggregation(krum(f=1), plan)
    Traceback (most recent call last):
    ...
    sheaf.core.errors.ConfigError: secure aggregation gives the server only the sum of the updates, but strategy 'krum' reads single updates (its aggregate step 'krum' needs each one); use a sum-only strategy: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox

References:
    Bell, Bonawitz, Gascón, Lepoint, Raykova. Secure Single-Server Aggregation with
    (Poly)Logarithmic Overhead. CCS 2020. Bonawitz et al. Practical Secure Aggregation for
    Privacy-Preserving Machine Learning. CCS 2017. Kairouz, Liu, Steinke. The Distributed
    Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation. ICML 2021.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import AggregationError, ConfigError, SecAggError, StrategyError, TaskError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, stream
from sheaf.core.update import Scalar, Update
from sheaf.privacy.ledger import client_privacy
from sheaf.quantize.quantizer import Quantizer
from sheaf.quantize.randomness import BitSource, SecureBits, SeededBits
from sheaf.secagg.discrete_gaussian import discrete_gaussian
from sheaf.secagg.distributed import distributed_mean, top_up, top_up_bits
from sheaf.secagg.driver import ProtocolOutcome, Stage, exact_protocol, run_protocol
from sheaf.secagg.plan import SecAggPlan
from sheaf.secagg.setup import INSTANCE_BYTES, protocol_setup
from sheaf.strategies.base import (
    AggregateStep,
    Broadcast,
    ClientHalf,
    MaskedSum,
    RoundContext,
    Strategy,
    WeightedSum,
    chain,
)
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import ClientContext, ClientStep, FitFn

__all__ = [
    "INPUT_GROUP",
    "ROTATION_OPTION",
    "SECAGG_ENCODE",
    "SECURE_AGGREGATION",
    "SecureState",
    "round_seeds",
    "secure_aggregate",
    "simulated_dropouts",
    "with_secure_aggregation",
]

#: The extra tensor group that carries a client's protocol input (its ring vector).
INPUT_GROUP = "secagg"
#: The per-round option carrying the rotation seed.
ROTATION_OPTION = "secagg_rotation"
#: The topic the step reports under (recorded with every round's fit figures).
SECURE_AGGREGATION = "secure_aggregation"
#: Strategies that need only the weighted sum of the updates.
_SUM_ONLY = "fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox"


def round_seeds(seed: int, round: int) -> tuple[int, int]:
    """``(rotation seed, graph seed)`` of a simulated round, from the run seed.

    The rotation is public; in deployment the graph seed is the server's own secret.
    """
    rotation, graph = stream(seed, Purpose.SECAGG, round=round).integers(0, 2**62, size=2)
    return int(rotation), int(graph)


def simulated_dropouts(probability: float, seed: int, round: int, clients: Sequence[int]) -> dict[int, Stage]:
    """Which clients drop out of a simulated round's protocol, and at which stage.

    Each client independently with ``probability``, at a stage drawn uniformly, from a
    stream of (seed, round) alone — the same on every backend and after a restart.
    """
    if probability <= 0 or not clients:
        return {}
    generator = stream(seed, Purpose.SECAGG, round=round, client=0)
    drops = generator.random(len(clients)) < probability
    stages = generator.integers(int(Stage.KEYS), int(Stage.UNMASKING) + 1, size=len(clients))
    return {int(c): Stage(int(s)) for c, d, s in zip(sorted(clients), drops, stages) if d}


def _option(instructions: FitInstructions, key: str) -> Scalar:
    if key not in instructions.options:
        raise TaskError(f"secure aggregation needs option {key!r} from the server")
    return instructions.options[key]


def _quantizer(instructions: FitInstructions, length: int) -> Quantizer:
    try:
        return Quantizer(
            length,
            int(_option(instructions, "secagg_bits")),
            float(_option(instructions, "secagg_scale")),
            float(_option(instructions, "secagg_clip")),
            int(_option(instructions, "secagg_max_weight")),
            bool(_option(instructions, "secagg_weighted")),
        )
    except (TypeError, ValueError) as exc:
        raise TaskError(f"the server's secure-aggregation options are unusable: {exc}") from None


def _bits(instructions: FitInstructions, client: ClientContext) -> BitSource:
    """Secure bits, unless the server asks for seeded ones *and* the client's policy allows them."""
    if (
        instructions.options.get("secagg_noise") == "seeded"
        and client_privacy(client.task, instructions.client_id).seeded_noise
    ):
        sequence = np.random.SeedSequence([instructions.seed, int(Purpose.SECAGG)])
        return SeededBits(np.random.Generator(np.random.PCG64(sequence)))
    return SecureBits()


def _encode(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    quantizer = _quantizer(instructions, params.num_elements)
    variance = int(_option(instructions, "secagg_variance"))
    rotation = int(_option(instructions, ROTATION_OPTION))
    result = fit(params, instructions)
    delta = result.params.flatten(np.float64) - params.flatten(np.float64)
    weight = min(int(result.num_examples), quantizer.max_weight) if quantizer.weighted else 1
    source = _bits(instructions, client)
    noise = discrete_gaussian(variance, quantizer.padded, source) if variance else None
    ring = quantizer.encode(delta, weight=weight, rotation_seed=rotation, bits=source, noise=noise)
    # Nothing of the update leaves but its ring vector: the delta sent is zero.
    sent = {INPUT_GROUP: Params({"input": ring.astype(np.float64)})}
    return FitResult(params, weight, dict(result.metrics), sent, result.client_state)


#: The client half: quantise (and noise) the update into the ring, after training.
SECAGG_ENCODE = ClientStep("secagg_encode", _encode)


class SecureState(NamedTuple):
    """The state of :func:`secure_aggregate`.

    Attributes:
        inner: the state of the aggregate step it hands the sum to.
        rounds: sums released.
        survivors: clients whose inputs the last sum held.
        dropped: clients whose updates arrived but left the last protocol early.
        topped_up: noise shares the server added to the last sum (distributed DP).
    """

    inner: Any
    rounds: int
    survivors: int
    dropped: int
    topped_up: int = 0


def _inputs(updates: Sequence[Update], quantizer: Quantizer) -> dict[int, npt.NDArray[np.uint32]]:
    """The clients' ring vectors; an update without a well-formed one takes no part."""
    inputs = {}
    for update in updates:
        group = update.extras.get(INPUT_GROUP)
        vector = None if group is None else group.get("input")
        if vector is None or vector.shape != (quantizer.ring_length,):
            continue
        if not (np.all(vector == np.floor(vector)) and vector.min() >= 0 and vector.max() < 2.0**quantizer.bits):
            continue
        inputs[update.client_id] = vector.astype(np.uint32)
    return inputs


def _sum(plan: SecAggPlan, inputs: Mapping[int, npt.NDArray[np.uint32]], ctx: RoundContext) -> ProtocolOutcome:
    """Run the round's protocol over ``inputs`` (raises AggregationError if it cannot give a sum)."""
    if len(inputs) > plan.max_inputs:
        raise AggregationError(
            f"{len(inputs)} inputs exceed the {plan.max_inputs} the quantiser was sized for; round skipped"
        )
    if len(inputs) < 3:
        raise AggregationError(f"secure aggregation needs at least 3 inputs, {len(inputs)} arrived; round skipped")
    _, graph = round_seeds(ctx.seed, ctx.round)
    clients = sorted(inputs)
    degree = plan.degree if plan.degree < len(clients) - 1 else 0
    try:
        setup = protocol_setup(
            clients,
            instance=os.urandom(INSTANCE_BYTES),
            graph_seed=graph,
            bits=plan.bits,
            length=plan.quantizer().ring_length,
            threshold_fraction=plan.threshold,
            max_dropout=plan.max_dropout,
            degree=degree,
        )
    except SecAggError as exc:
        raise AggregationError(f"secure aggregation cannot start: {exc}; round skipped") from None
    dropouts = simulated_dropouts(plan.dropout, ctx.seed, ctx.round, clients)
    outcome = (exact_protocol if plan.stand_in else run_protocol)(setup, inputs, dropouts)
    if outcome.aborted:
        raise AggregationError(f"secure aggregation aborted, nothing revealed: {outcome.reason}; round skipped")
    return outcome


def secure_aggregate(plan: SecAggPlan, inner: AggregateStep[Any]) -> AggregateStep[SecureState]:
    """The server half of secure aggregation around the sum-only aggregate step ``inner``."""
    quantizer = plan.quantizer()

    def init(params: Params) -> SecureState:
        if params.num_elements != plan.length:
            raise StrategyError(
                f"the secure-aggregation plan is for {plan.length} parameters, the model has {params.num_elements}"
            )
        return SecureState(inner.init(params), 0, 0, 0, 0)

    def apply(
        value: Sequence[Update] | WeightedSum, state: SecureState, ctx: RoundContext
    ) -> tuple[Params, SecureState]:
        if isinstance(value, WeightedSum):
            raise StrategyError("secure aggregation sums the clients' masked inputs itself, not a sum made elsewhere")
        inputs = _inputs(value, quantizer)
        outcome = _sum(plan, inputs, ctx)
        assert outcome.total is not None
        return _decoded(outcome.total, outcome.survivors, len(value), state, ctx)

    def _decoded(
        ring: npt.NDArray[np.uint32], survivors: Sequence[int], arrived: int, state: SecureState, ctx: RoundContext
    ) -> tuple[Params, SecureState]:
        rotation, _ = round_seeds(ctx.seed, ctx.round)
        count = len(survivors)
        added = 0
        if plan.dp == "distributed":  # every released sum carries exactly K noise shares
            ring, added = top_up(plan, ring, count, top_up_bits(plan, ctx.seed, ctx.round))
        total, weight = quantizer.decode(ring, rotation)
        summed = WeightedSum(
            ctx.params.astype(np.float64).unflatten(total), float(weight if plan.weighted else count), count
        )
        delta, inner_state = inner.apply(summed, state.inner, ctx)
        return delta, SecureState(inner_state, state.rounds + 1, count, arrived - count, added)

    def apply_masked(value: MaskedSum, state: SecureState, ctx: RoundContext) -> tuple[Params, SecureState]:
        # The deployment's backend ran the protocol: its outcome stands in for the in-process run.
        if value.total is None:
            raise AggregationError(f"secure aggregation aborted, nothing revealed: {value.reason}; round skipped")
        if value.total.shape != (quantizer.ring_length,) or value.total.dtype != np.uint32:
            raise StrategyError(f"a secure sum must be {quantizer.ring_length} ring elements, got {value.total.shape}")
        if not 3 <= value.count <= plan.max_inputs:
            raise AggregationError(
                f"a secure sum of {value.count} inputs is outside the 3..{plan.max_inputs} the quantiser was sized "
                "for; round skipped"
            )
        return _decoded(value.total, value.survivors, value.arrived, state, ctx)

    def configure(state: SecureState, ctx: RoundContext) -> Broadcast:
        rotation, _ = round_seeds(ctx.seed, ctx.round)
        options: dict[str, Scalar] = {ROTATION_OPTION: rotation}
        payload: dict[str, Params] = {}
        if inner.configure is not None:
            sent = inner.configure(state.inner, ctx)
            options.update(sent.options)
            payload.update(sent.payload)
        return Broadcast(options, payload)

    def report(state: SecureState) -> Mapping[str, Mapping[str, float]]:
        own = {
            SECURE_AGGREGATION: {
                "secagg_rounds": float(state.rounds),
                "secagg_survivors": float(state.survivors),
                "secagg_dropped": float(state.dropped),
                **({"secagg_top_up": float(state.topped_up)} if plan.dp == "distributed" else {}),
            }
        }
        return {**own, **(inner.report(state.inner) if inner.report is not None else {})}

    half = ClientHalf(
        steps=(SECAGG_ENCODE, *inner.client.steps),
        options={**plan.client_options(), **inner.client.options},
        metrics=inner.client.metrics,
        extras=inner.client.extras,
        max_norm=math.inf,
    )
    return AggregateStep(
        init,
        apply,
        f"secure_{inner.name}",
        needs_updates=True,  # each client's protocol input, for the in-process transport
        min_updates=inner.min_updates,
        assumption=inner.assumption,
        client=half,
        configure=configure,
        report=report,
        apply_masked=apply_masked,
    )


def _reads_single_updates(strategy: Strategy) -> str:
    """Why ``strategy`` cannot run on a sum alone (empty if it can)."""
    if strategy.update_steps:
        return f"its update steps {[s.name for s in strategy.update_steps]} see each update"
    if strategy.aggregator.needs_updates:
        return f"its aggregate step {strategy.aggregator.name!r} needs each one"
    rule = strategy.update_rule
    if rule.metrics:
        return f"it reads metric(s) {[m.name for m in rule.metrics]} of each update"
    if rule.extras:
        return f"it reads extra tensors {list(rule.extras)} of each update"
    return ""


def with_secure_aggregation(strategy: Strategy, plan: SecAggPlan) -> Strategy:
    """``strategy`` run through secure aggregation (and distributed DP) as ``plan`` says.

    Raises:
        ConfigError: if the strategy reads single updates (Krum, the median, SCAFFOLD,
            FedNova, q-FedAvg, a private mean clipped on the server), or distributed DP is
            asked of a strategy not built on the weighted mean.
    """
    why = _reads_single_updates(strategy)
    if why:
        raise ConfigError(
            f"secure aggregation gives the server only the sum of the updates, but strategy {strategy.name!r} reads "
            f"single updates ({why}); use a sum-only strategy: {_SUM_ONLY}"
        )
    if plan.dp == "distributed":
        if not strategy.aggregator.weighted_mean:
            raise ConfigError(
                f"secagg.dp=distributed replaces the weighted mean, which strategy {strategy.name!r} does not use; "
                f"use one of: {_SUM_ONLY}"
            )
        inner: AggregateStep[Any] = distributed_mean(plan)
        name = f"ddp-secagg-{strategy.name}"
    else:
        inner = strategy.aggregator
        name = f"secagg-{strategy.name}"
    return chain(secure_aggregate(plan, inner), *strategy.server_steps, name=name)
