"""Strategies as chains of small pure steps, each carrying its whole contract, optax-style.

A step is a frozen value holding pure functions: ``init(params) -> state`` and
``apply(value, state, ctx) -> (value, state)``. State is returned, never kept on an
object, so a checkpoint of a strategy is just its state tree. There are three kinds of
step, by what flows through them:

- :class:`UpdateStep` — the clients' individual updates in, updates out (clipping,
  simulated attacks);
- :class:`AggregateStep` — updates (or, where it declares it needs only that, their
  weighted sum) in, one aggregated delta out (weighted mean, median, Krum);
- :class:`ServerStep` — the aggregated delta in, the delta to apply out (noise, server
  momentum, server Adam).

Besides its server half, a step declares everything else it is part of (its *contract*):

- ``client`` — its client half (:class:`ClientHalf`): the client steps every client runs
  around its training, fixed options the clients receive, and what the step reads from
  each update (metrics with their valid ranges, extra tensor groups) so that an update
  without them, or with a hostile value, is refused before aggregation; and, for a step
  whose clients encode their updates (compression), the codec whose server half decodes
  each update where it arrives — before the acceptance rule judges it — and the layout of
  the model deltas clients are sent (download compression);
- ``configure`` — what it sends every client of a round, computed from *its own* state
  (SCAFFOLD's control variate, DP's current clip norm);
- ``report`` — what it reports about the round, by topic (the privacy spent).

:func:`chain` checks the order (update steps, one aggregate step, server steps) and
returns a :class:`Strategy`, whose contract is derived from its steps'. Nothing outside a
step reads its state or looks it up by name; each step's functions see only its own
slice. A new algorithm is a new factory that chains steps, never a subclass::

    fedavg = chain(weighted_mean(), name="fedavg")

A strategy *needs individual updates* when its aggregate step does (robust aggregators)
or any update step exists; otherwise a weighted sum is enough — the property secure
aggregation and per-worker reduction rely on.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.aggregate import weighted_mean
    >>> strategy = chain(weighted_mean(), name="fedavg")
    >>> p = Params({"w": np.zeros(2, np.float32)})
    >>> ups = [Update(0, Params({"w": np.array([1., 1.], np.float32)}), 1),
    ...        Update(1, Params({"w": np.array([4., 4.], np.float32)}), 2)]
    >>> new, state, _ = strategy.aggregate(ups, strategy.init(p), RoundContext(1, p, 0, 2))
    >>> new["w"].tolist()
    [3.0, 3.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from sheaf.core.acceptance import MetricRange, UpdateRejected, UpdateRule
from sheaf.core.encoded import Encoded, EncodedLayout, layout_problem
from sheaf.core.errors import AggregationError, ConfigError, SheafError, StrategyError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.update import Scalar, TensorGroups, Update
from sheaf.task.client_steps import ClientStep, steps_by_name

__all__ = [
    "EMPTY",
    "AggregateStep",
    "Broadcast",
    "ClientHalf",
    "EmptyState",
    "MaskedSum",
    "RoundContext",
    "ServerStep",
    "Step",
    "Strategy",
    "StrategyState",
    "UpdateCodec",
    "UpdateStep",
    "WeightedSum",
    "chain",
    "client_side",
    "init_empty",
    "sum_updates",
]

S = TypeVar("S")


class EmptyState(NamedTuple):
    """The state of a step that keeps none (one shared value: :data:`EMPTY`)."""


#: The one empty state.
EMPTY = EmptyState()


def init_empty(params: Params) -> EmptyState:
    """``init`` of a step without state."""
    return EMPTY


#: A strategy's state: one entry per step, in step order (each step reads only its own).
StrategyState = tuple[Any, ...]


class RoundContext(NamedTuple):
    """Facts about the round a step may use (never mutated).

    Attributes:
        round: the round number (1-based).
        params: the global params the clients started from.
        seed: the run seed; steps derive their random streams from it.
        population: number of registered clients.
    """

    round: int
    params: Params
    seed: int
    population: int


@dataclass(frozen=True)
class WeightedSum:
    """The weighted sum of updates: all a sum-only aggregate step may see.

    Attributes:
        total: sum over clients of ``num_examples * delta`` (float64, see :func:`sum_updates`).
        weight: sum of ``num_examples``.
        count: number of updates summed.
    """

    total: Params
    weight: float
    count: int

    @classmethod
    def from_exact(cls, exact: ExactSum) -> WeightedSum:
        """The weighted sum held by an exact accumulator (e.g. partial sums merged)."""
        return cls(exact.total(), float(exact.weight), exact.count)


@dataclass(frozen=True)
class MaskedSum:
    """A secure aggregation's outcome, run elsewhere (a deployment's backend ran the protocol).

    Only an aggregate step with ``apply_masked`` (secure aggregation's) accepts it: the ring
    sum is meaningful only to the quantiser that encoded the inputs.

    Attributes:
        total: the sum of the survivors' ring vectors in Z_{2^bits} (None: the protocol aborted).
        survivors: the clients whose inputs the sum holds.
        arrived: the clients whose inputs entered the protocol (survivors and dropouts).
        reason: why the protocol aborted (empty if it did not).
    """

    total: npt.NDArray[np.uint32] | None
    survivors: tuple[int, ...]
    arrived: int
    reason: str = ""

    @property
    def count(self) -> int:
        """The inputs the sum holds."""
        return len(self.survivors)


def sum_updates(updates: Sequence[Update], like: Params) -> WeightedSum:
    """Sum ``num_examples * delta`` over updates exactly, then round to float64 once.

    The sum is exact (:class:`~sheaf.core.exactsum.ExactSum`), so it depends neither on the
    order of the updates nor on how they were grouped: partial sums made by worker
    processes and merged give the same bits as summing every update in one place, and the
    same seed gives the same model on every backend.
    """
    exact = ExactSum(like)
    exact.add_updates(updates)
    return WeightedSum.from_exact(exact)


def _frozen(options: Mapping[str, Scalar]) -> Mapping[str, Scalar]:
    return MappingProxyType(dict(options))


class UpdateCodec(Protocol):
    """How a step's clients send their deltas encoded, with the server half that decodes one."""

    @property
    def name(self) -> str:
        """The encoding, for messages (``q4+rotation``)."""
        ...

    @property
    def layout(self) -> EncodedLayout:
        """What every encoded update holds for this model (names, dtypes, shapes)."""
        ...

    def decode(self, encoded: Encoded, like: Params, options: Mapping[str, Scalar]) -> Params:
        """The delta ``encoded`` stands for, shaped and typed like ``like``.

        ``options`` are the round's (what the steps sent every client, e.g. a rotation seed).

        Raises:
            ValueError: if ``encoded`` holds something its encoder cannot have sent.
        """
        ...


@dataclass(frozen=True)
class ClientHalf:
    """What a step asks of every client of a round, and reads from what comes back.

    Attributes:
        steps: client steps every client runs around its training, outermost first.
        options: fixed settings every client receives (e.g. FedProx's ``proximal_mu``).
        metrics: metrics read from every update that trained, with their valid ranges.
        extras: extra tensor groups, shaped like the model, read from every such update.
        max_norm: the longest delta (L2) the step accepts, e.g. the clip norm its clients
            clip to (``inf``: no bound).
        codec: how the clients encode their deltas, and the server half that decodes each
            one where it arrives (None: deltas arrive plain).
        downlink: the layout of one round's model delta as clients are sent it instead of
            the model (download compression; empty: clients are sent the model).
    """

    steps: tuple[ClientStep, ...] = ()
    options: Mapping[str, Scalar] = field(default_factory=dict)
    metrics: tuple[MetricRange, ...] = ()
    extras: tuple[str, ...] = ()
    max_norm: float = math.inf
    codec: UpdateCodec | None = None
    downlink: EncodedLayout = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _frozen(self.options))


#: A step without a client half.
NO_CLIENT_HALF = ClientHalf()


class Broadcast(NamedTuple):
    """What every client of a round receives besides the params.

    Attributes:
        options: settings (numbers, strings, flags).
        payload: named tensor groups (e.g. SCAFFOLD's ``scaffold`` control variate).
    """

    options: Mapping[str, Scalar]
    payload: TensorGroups


#: A step's per-round message to the clients, from its own state.
ConfigureFn = Callable[[S, RoundContext], Broadcast]
#: What a step reports about the round from its own state: topic -> figures.
ReportFn = Callable[[S], Mapping[str, Mapping[str, float]]]


@dataclass(frozen=True)
class UpdateStep(Generic[S]):
    """A step on the individual updates (e.g. clipping). See the module docstring."""

    init: Callable[[Params], S]
    apply: Callable[[Sequence[Update], S, RoundContext], tuple[list[Update], S]]
    name: str
    client: ClientHalf = NO_CLIENT_HALF
    configure: ConfigureFn[S] | None = None
    report: ReportFn[S] | None = None


@dataclass(frozen=True)
class AggregateStep(Generic[S]):
    """The step that turns updates into one delta.

    Attributes:
        needs_updates: True if ``apply`` must see each update (median, Krum); False if a
            :class:`WeightedSum` is enough — then ``apply`` accepts either.
        min_updates: the fewest updates (from clients with examples) its assumption allows,
            e.g. ``2f + 3`` for Krum; a round with fewer is skipped, not aggregated.
        assumption: the assumption in words, for error messages (``"Krum with f=1 assumes
            n >= 2f + 3 = 5 updates"``).
        weighted_mean: True if the step is the plain example-weighted mean of the deltas,
            which a differentially private mean may stand in for.
        private_release: True if the step's output is a differentially private release of
            the updates (the central private mean), so the round loop decides nothing on
            what the mechanism does not release: it aggregates every round that reached the
            clients whatever number of updates arrived (never skipping one for fewer than
            ``strategy.min_clients`` on the un-noised count).
        apply_masked: how the step takes a :class:`MaskedSum` (secure aggregation run by a
            deployment's backend); None: it cannot.
    """

    init: Callable[[Params], S]
    apply: Callable[[Sequence[Update] | WeightedSum, S, RoundContext], tuple[Params, S]]
    name: str
    needs_updates: bool
    min_updates: int = 1
    assumption: str = ""
    weighted_mean: bool = False
    private_release: bool = False
    client: ClientHalf = NO_CLIENT_HALF
    configure: ConfigureFn[S] | None = None
    report: ReportFn[S] | None = None
    apply_masked: Callable[[MaskedSum, S, RoundContext], tuple[Params, S]] | None = None


@dataclass(frozen=True)
class ServerStep(Generic[S]):
    """A step on the aggregated delta (noise, server optimisers). See the module docstring."""

    init: Callable[[Params], S]
    apply: Callable[[Params, S, RoundContext], tuple[Params, S]]
    name: str
    client: ClientHalf = NO_CLIENT_HALF
    configure: ConfigureFn[S] | None = None
    report: ReportFn[S] | None = None


Step = UpdateStep[Any] | AggregateStep[Any] | ServerStep[Any]


def _unchanged(delta: Params, state: EmptyState, ctx: RoundContext) -> tuple[Params, EmptyState]:
    return delta, state


def client_side(
    name: str, client: ClientHalf = NO_CLIENT_HALF, *, configure: ConfigureFn[EmptyState] | None = None
) -> ServerStep[EmptyState]:
    """A step that lives on the clients only: its server half leaves the delta as it is.

    For mechanisms such as FedProx's proximal term or FedPer's personal layers, whose
    whole effect is in how clients train; ``configure`` may send them something every
    round (it has no state of its own to send from).

    Example:
        >>> step = client_side("proximal_term", ClientHalf(options={"proximal_mu": 0.1}))
        >>> step.name, dict(step.client.options)
        ('proximal_term', {'proximal_mu': 0.1})
    """
    return ServerStep(init_empty, _unchanged, name, client=client, configure=configure)


@dataclass(frozen=True)
class Strategy:
    """A chain of steps that turns a round's updates into the next global params.

    Build one with :func:`chain`. Its state is a tuple with one entry per step; its
    contract (client steps, options, what it reads, what it reports) is its steps'.

    Attributes:
        name: the strategy's name (for logs and the run store).
        update_steps: steps on individual updates, in order.
        aggregator: the aggregate step.
        server_steps: steps on the aggregated delta, in order.
    """

    name: str
    update_steps: tuple[UpdateStep[Any], ...]
    aggregator: AggregateStep[Any]
    server_steps: tuple[ServerStep[Any], ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        """All steps in order."""
        return (*self.update_steps, self.aggregator, *self.server_steps)

    @property
    def needs_updates(self) -> bool:
        """Whether aggregation must see each client's update, not only their weighted sum."""
        return bool(self.update_steps) or self.aggregator.needs_updates

    @property
    def min_updates(self) -> int:
        """The fewest updates a round needs for the aggregate step's assumption to hold."""
        return self.aggregator.min_updates

    @property
    def private_release(self) -> bool:
        """Whether the aggregate is a differentially private release (see :class:`AggregateStep`)."""
        return self.aggregator.private_release

    @property
    def client_steps(self) -> tuple[ClientStep, ...]:
        """The client steps every client runs around its training, outermost first."""
        return tuple(steps_by_name(s for step in self.steps for s in step.client.steps).values())

    @property
    def client_options(self) -> Mapping[str, Scalar]:
        """The fixed settings every client receives (the steps' options, merged in order)."""
        merged: dict[str, Scalar] = {}
        for step in self.steps:
            merged.update(step.client.options)
        return _frozen(merged)

    @property
    def update_rule(self) -> UpdateRule:
        """What every update must carry to be aggregated (the steps' reads, merged)."""
        metrics = {m.name: m for step in self.steps for m in step.client.metrics}
        extras = dict.fromkeys(e for step in self.steps for e in step.client.extras)
        bound = min((step.client.max_norm for step in self.steps), default=math.inf)
        codec = self.codec
        encoding = codec.layout if codec is not None else ()
        return UpdateRule(self.name, tuple(metrics.values()), tuple(extras), bound, encoding=encoding)

    @property
    def codec(self) -> UpdateCodec | None:
        """How clients encode their updates (the one step that declares a codec), or None."""
        return next((step.client.codec for step in self.steps if step.client.codec is not None), None)

    @property
    def downlink(self) -> EncodedLayout:
        """The layout of one round's model delta as clients are sent it (empty: the whole model)."""
        return next((step.client.downlink for step in self.steps if step.client.downlink), ())

    @property
    def reads_updates(self) -> bool:
        """Whether anything reads a single update (so backends must return them, not a sum)."""
        return self.needs_updates or self.update_rule.reads_updates

    def receive(self, update: Update, like: Params, options: Mapping[str, Scalar]) -> Update:
        """The update as the server reads it: decoded by the codec's server half, if the
        clients encode their updates; otherwise unchanged.

        Runs where an update arrives, before :meth:`check_update`, so every bound of the
        acceptance rule (a clip norm, the operator's limits) applies to the decoded delta.

        Raises:
            UpdateRejected: if an encoded update was expected and a plain one came, or the
                encoding is not its encoder's (layout) or cannot be decoded.
        """
        codec = self.codec
        if codec is None:
            return update
        who = f"client {update.client_id}: strategy {self.name!r}"
        if update.encoded is None:
            raise UpdateRejected(f"{who} takes updates encoded with {codec.name}, got a plain delta")
        problem = layout_problem(update.encoded, codec.layout)
        if problem is not None:
            raise UpdateRejected(f"{who}: {problem}")
        try:
            delta = codec.decode(update.encoded, like, options)
        except (ValueError, SheafError) as exc:
            raise UpdateRejected(f"{who} cannot decode its {codec.name} update: {exc}") from None
        return Update(update.client_id, delta, update.num_examples, update.metrics, update.extras)

    def check_update(self, update: Update, like: Params) -> None:
        """Check an update against :attr:`update_rule` (structure, metrics, extras).

        Raises:
            UpdateRejected: naming the client and what is missing or malformed.
        """
        self.update_rule.check(update, like)

    def check_cohort(self, size: int) -> None:
        """Check that a round of ``size`` sampled clients can meet the aggregator's assumption.

        Raises:
            ConfigError: naming the assumption, the numbers and what to change.
        """
        if size < self.min_updates:
            raise ConfigError(
                f"strategy {self.name!r}: {self.aggregator.assumption or f'needs {self.min_updates} updates'}, "
                f"but a round samples only {size} clients; raise strategy.fraction or strategy.min_clients, "
                "or lower the strategy's f"
            )

    def configure(self, state: StrategyState, ctx: RoundContext) -> Broadcast:
        """What every client of the round receives besides the params: each step's fixed
        options, then what each step sends from its own state."""
        self._check_state(state)
        options: dict[str, Scalar] = dict(self.client_options)
        payload: dict[str, Params] = {}
        for step, step_state in zip(self.steps, state, strict=True):
            if step.configure is not None:
                sent = step.configure(step_state, ctx)
                options.update(sent.options)
                payload.update(sent.payload)
        return Broadcast(options, payload)

    def report(self, state: StrategyState) -> dict[str, dict[str, float]]:
        """What the steps report about the round, by topic (e.g. ``"privacy"``)."""
        self._check_state(state)
        topics: dict[str, dict[str, float]] = {}
        for step, step_state in zip(self.steps, state, strict=True):
            if step.report is not None:
                for topic, figures in step.report(step_state).items():
                    topics.setdefault(topic, {}).update(figures)
        return topics

    def init(self, params: Params) -> StrategyState:
        """The initial state: one entry per step."""
        return tuple(step.init(params) for step in self.steps)

    def aggregate(
        self, updates: Sequence[Update] | WeightedSum | MaskedSum, state: StrategyState, ctx: RoundContext
    ) -> tuple[Params, StrategyState, dict[str, float]]:
        """Run the chain on a round's updates.

        Args:
            updates: the successful updates (or their weighted sum, for sum-only chains; or
                the outcome of a secure aggregation run elsewhere, for a chain whose
                aggregate step takes one).
            state: the state returned by ``init`` or the previous call.
            ctx: the round's context.

        Returns:
            The new global params, the new state, and metrics about the aggregation.

        Raises:
            StrategyError: if the state does not fit the chain, or a sum is given to a chain
                that needs individual updates.
            AggregationError: if the updates break a step's assumption (too few for the
                aggregator, or missing what a step needs); the round loop skips the round.
        """
        self._check_state(state)
        if isinstance(updates, WeightedSum) and self.needs_updates:
            raise StrategyError(f"strategy {self.name!r} needs each client's update, not only their sum")
        masked = self.aggregator.apply_masked
        if isinstance(updates, MaskedSum) and (self.update_steps or masked is None):
            raise StrategyError(f"strategy {self.name!r} cannot take a secure aggregation's outcome")
        new_state: list[Any] = []
        value: Any = updates
        for step, step_state in zip(self.steps, state, strict=True):
            if isinstance(value, MaskedSum) and masked is not None:
                value, step_state = masked(value, step_state, ctx)
            else:
                if step is self.aggregator:
                    self._check_count(value)
                value, step_state = step.apply(value, step_state, ctx)
            new_state.append(step_state)
        delta: Params = value
        new_params = ctx.params + delta
        return new_params, tuple(new_state), {"update_norm": delta.l2_norm()}

    def _check_state(self, state: StrategyState) -> None:
        if len(state) != len(self.steps):
            raise StrategyError(f"strategy {self.name!r} has {len(self.steps)} steps but the state has {len(state)}")

    def _check_count(self, updates: Sequence[Update] | WeightedSum) -> None:
        count = updates.count if isinstance(updates, WeightedSum) else sum(1 for u in updates if u.num_examples > 0)
        # An aggregator that accepts any number (min_updates 1) returns a zero delta for none.
        if count < self.min_updates and self.min_updates > 1:
            raise AggregationError(
                f"{self.aggregator.assumption or f'{self.name} needs {self.min_updates} updates'}, "
                f"but only {count} arrived; round skipped"
            )


def chain(*steps: Step, name: str) -> Strategy:
    """Compose steps into a strategy: update steps, exactly one aggregate step, server steps.

    Args:
        steps: the steps, in order.
        name: the strategy's name.

    Raises:
        StrategyError: if the steps are out of order, there is not exactly one aggregate
            step, or two steps' client halves use the same client step name or option
            differently.
    """
    aggregators = [s for s in steps if isinstance(s, AggregateStep)]
    if len(aggregators) != 1:
        raise StrategyError(f"a strategy needs exactly one aggregate step, got {len(aggregators)}")
    cut = steps.index(aggregators[0])
    before, after = steps[:cut], steps[cut + 1 :]
    bad = [s.name for s in before if not isinstance(s, UpdateStep)] + [
        s.name for s in after if not isinstance(s, ServerStep)
    ]
    if bad:
        raise StrategyError(
            f"steps {bad} are out of place: update steps come before the aggregate step, server steps after"
        )
    _check_halves(steps)
    return Strategy(
        name,
        tuple(s for s in before if isinstance(s, UpdateStep)),
        aggregators[0],
        tuple(s for s in after if isinstance(s, ServerStep)),
    )


def _check_halves(steps: Sequence[Step]) -> None:
    """Two steps may not disagree on a client step of one name, or on an option's value;
    at most one encodes the clients' updates, and at most one the model clients are sent."""
    for part in ("codec", "downlink"):
        declaring = [step.name for step in steps if getattr(step.client, part)]
        if len(declaring) > 1:
            raise StrategyError(f"steps {declaring} each declare a {part}; a strategy may have one")
    seen_steps: dict[str, ClientStep] = {}
    seen_options: dict[str, Scalar] = {}
    for step in steps:
        for client_step in step.client.steps:
            if seen_steps.setdefault(client_step.name, client_step) != client_step:
                raise StrategyError(f"two steps ask clients to run different client steps named {client_step.name!r}")
        for key, value in step.client.options.items():
            if seen_options.setdefault(key, value) != value:
                raise StrategyError(f"two steps send clients different values of option {key!r}")
