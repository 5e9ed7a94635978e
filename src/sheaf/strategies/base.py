"""Strategies as chains of small pure steps, optax-style.

A step is a pair of pure functions held in a NamedTuple: ``init(params) -> state`` and
``apply(value, state, ctx) -> (value, state)``. State is returned, never kept on an
object, so a checkpoint of a strategy is just its state tree. There are three kinds of
step, by what flows through them:

- :class:`UpdateStep` — the clients' individual updates in, updates out (clipping,
  simulated attacks);
- :class:`AggregateStep` — updates (or, where it declares it needs only that, their
  weighted sum) in, one aggregated delta out (weighted mean, median, Krum);
- :class:`ServerStep` — the aggregated delta in, the delta to apply out (noise, server
  momentum, server Adam).

:func:`chain` checks the order (update steps, one aggregate step, server steps) and
returns a :class:`Strategy`. A new algorithm is a new factory that chains steps, never a
subclass::

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
from typing import Any, NamedTuple

from sheaf.core.errors import AggregationError, ConfigError, StrategyError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.update import Scalar, TensorGroups, Update

__all__ = [
    "AggregateStep",
    "ConfigureFn",
    "RoundContext",
    "ServerStep",
    "Step",
    "Strategy",
    "UpdateStep",
    "WeightedSum",
    "chain",
    "sum_updates",
]


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


InitFn = Callable[[Params], Any]


class UpdateStep(NamedTuple):
    """A step on the individual updates (e.g. clipping). See the module docstring."""

    init: InitFn
    apply: Callable[[Sequence[Update], Any, RoundContext], tuple[list[Update], Any]]
    name: str


class AggregateStep(NamedTuple):
    """The step that turns updates into one delta.

    Attributes:
        needs_updates: True if ``apply`` must see each update (median, Krum); False if a
            :class:`WeightedSum` is enough — then ``apply`` accepts either.
        min_updates: the fewest updates (from clients with examples) its assumption allows,
            e.g. ``2f + 3`` for Krum; a round with fewer is skipped, not aggregated.
        assumption: the assumption in words, for error messages (``"Krum with f=1 assumes
            n >= 2f + 3 = 5 updates"``).
    """

    init: InitFn
    apply: Callable[[Sequence[Update] | WeightedSum, Any, RoundContext], tuple[Params, Any]]
    name: str
    needs_updates: bool
    min_updates: int = 1
    assumption: str = ""


class ServerStep(NamedTuple):
    """A step on the aggregated delta (noise, server optimisers). See the module docstring."""

    init: InitFn
    apply: Callable[[Params, Any, RoundContext], tuple[Params, Any]]
    name: str


Step = UpdateStep | AggregateStep | ServerStep

#: ``(strategy state, ctx) -> (options, payload)`` sent to every client of a round.
ConfigureFn = Callable[[tuple[Any, ...], RoundContext], tuple[Mapping[str, Scalar], TensorGroups]]


@dataclass(frozen=True)
class Strategy:
    """A chain of steps that turns a round's updates into the next global params.

    Build one with :func:`chain`. Its state is a tuple with one entry per step.

    Attributes:
        name: the strategy's name (for logs and the run store).
        update_steps: steps on individual updates, in order.
        aggregator: the aggregate step.
        server_steps: steps on the aggregated delta, in order.
        client_options: settings sent to every client with its instructions.
        configure_fn: optional ``(state, ctx) -> (options, payload)`` for what depends on
            the state: per-round options and tensors sent to every client (e.g. SCAFFOLD's
            server control variate).
        requires_metrics: metrics every update from a client with examples must carry
            (e.g. FedNova's ``fednova_norm``); see :meth:`check_update`.
        requires_extras: extra tensor groups, shaped like the model, every such update
            must carry (e.g. SCAFFOLD's ``scaffold``).
    """

    name: str
    update_steps: tuple[UpdateStep, ...]
    aggregator: AggregateStep
    server_steps: tuple[ServerStep, ...]
    client_options: Mapping[str, Scalar] = field(default_factory=dict)
    configure_fn: ConfigureFn | None = None
    requires_metrics: tuple[str, ...] = ()
    requires_extras: tuple[str, ...] = ()

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
    def client_steps(self) -> tuple[str, ...]:
        """Names of the client steps every client runs around its training (e.g. ``scaffold``)."""
        names = str(self.client_options.get("client_steps", ""))
        return tuple(n.strip() for n in names.split(",") if n.strip())

    def check_update(self, update: Update, like: Params) -> None:
        """Check that an update carries what this strategy's steps read, before aggregation.

        The round loop turns a failed check into a dropout, so the steps can rely on it.

        Raises:
            StrategyError: naming the client and what is missing or malformed.
        """
        if update.num_examples == 0:
            return
        who = f"client {update.client_id}"
        for key in self.requires_metrics:
            value = update.metrics.get(key)
            if value is None or not math.isfinite(value):
                raise StrategyError(f"{who}: strategy {self.name!r} needs a finite metric {key!r}, got {value!r}")
        for group in self.requires_extras:
            tensors = update.extras.get(group)
            if tensors is None or not like.same_structure(tensors):
                raise StrategyError(
                    f"{who}: strategy {self.name!r} needs extra tensors {group!r} shaped like the model"
                )

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

    def configure(self, state: tuple[Any, ...], ctx: RoundContext) -> tuple[dict[str, Scalar], TensorGroups]:
        """What every client of the round receives besides the params: options and payload."""
        options: dict[str, Scalar] = dict(self.client_options)
        payload: TensorGroups = {}
        if self.configure_fn is not None:
            extra, payload = self.configure_fn(state, ctx)
            options.update(extra)
        return options, payload

    def init(self, params: Params) -> tuple[Any, ...]:
        """The initial state: one entry per step."""
        return tuple(step.init(params) for step in self.steps)

    def aggregate(
        self, updates: Sequence[Update] | WeightedSum, state: tuple[Any, ...], ctx: RoundContext
    ) -> tuple[Params, tuple[Any, ...], dict[str, float]]:
        """Run the chain on a round's updates.

        Args:
            updates: the successful updates (or their weighted sum, for sum-only chains).
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
        if len(state) != len(self.steps):
            raise StrategyError(f"strategy {self.name!r} has {len(self.steps)} steps but the state has {len(state)}")
        if isinstance(updates, WeightedSum) and self.needs_updates:
            raise StrategyError(f"strategy {self.name!r} needs each client's update, not only their sum")
        new_state: list[Any] = []
        value: Any = updates
        for step, step_state in zip(self.steps, state, strict=True):
            if step is self.aggregator:
                self._check_count(value)
            value, step_state = step.apply(value, step_state, ctx)
            new_state.append(step_state)
        delta: Params = value
        new_params = ctx.params + delta
        return new_params, tuple(new_state), {"update_norm": delta.l2_norm()}

    def _check_count(self, updates: Sequence[Update] | WeightedSum) -> None:
        count = updates.count if isinstance(updates, WeightedSum) else sum(1 for u in updates if u.num_examples > 0)
        # An aggregator that accepts any number (min_updates 1) returns a zero delta for none.
        if count < self.min_updates and self.min_updates > 1:
            raise AggregationError(
                f"{self.aggregator.assumption or f'{self.name} needs {self.min_updates} updates'}, "
                f"but only {count} arrived; round skipped"
            )


def chain(
    *steps: Step,
    name: str,
    client_options: Mapping[str, Scalar] | None = None,
    configure: ConfigureFn | None = None,
    requires_metrics: Sequence[str] = (),
    requires_extras: Sequence[str] = (),
) -> Strategy:
    """Compose steps into a strategy: update steps, exactly one aggregate step, server steps.

    Args:
        steps: the steps, in order.
        name: the strategy's name.
        client_options: fixed settings sent to every client (e.g. ``{"proximal_mu": 0.01}``,
            or ``{"client_steps": "scaffold"}`` for a client-side half).
        configure: ``(state, ctx) -> (options, payload)`` for per-round settings and tensors
            that depend on the strategy state.
        requires_metrics: metrics each update must carry (checked before aggregation).
        requires_extras: extra tensor groups each update must carry.

    Raises:
        StrategyError: if the steps are out of order or there is not exactly one aggregate step.
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
    return Strategy(
        name,
        tuple(s for s in before if isinstance(s, UpdateStep)),
        aggregators[0],
        tuple(s for s in after if isinstance(s, ServerStep)),
        dict(client_options or {}),
        configure,
        tuple(requires_metrics),
        tuple(requires_extras),
    )
