"""The round loop: sample a cohort, dispatch it, aggregate, evaluate, commit.

One function, :func:`run_rounds`, drives every simulation (and, behind another backend,
deployment). It starts from the run store's last committed round, so a run that was
stopped resumes where it left off with the same results as an uninterrupted one: params
and strategy state come from the store, and every random choice comes from streams
derived from (seed, round, client), not from state in memory.

Per round:

1. sample the cohort from (seed, round);
2. ask the backend to train it, with what the strategy's steps send (their options and
   per-round payload) and run on the clients (their client steps); failed clients are
   dropouts (for a strategy whose steps read nothing but the weighted sum, the backend may
   return the exact sum of the updates instead, every update checked where it was added);
3. check every update against the strategy's acceptance rule (names, shapes, dtypes,
   finite; the metrics and extras its steps read, within their ranges); rejected updates
   are dropouts;
4. aggregate with the strategy if at least ``strategy.min_clients`` updates remain and
   they meet the strategy's assumption (e.g. Krum's ``n >= 2f + 3``), otherwise keep the
   model unchanged and record why. Whatever goes wrong in aggregation — an exception in a
   step, a non-finite or exploding aggregate — skips the round with its reason and the
   contributors named; the model and the strategy state are kept, never served broken. A
   strategy whose aggregate is a differentially private release (``private_release``:
   central DP) is aggregated whatever number arrived — a decision on the un-noised count
   would release it —, its updates are bounded by nothing learnt from earlier rounds' raw
   updates, an aggregate refused after it was computed is still charged (its state moves
   on, the model does not), and the privacy spent is recorded with every round;
5. evaluate the new model centrally (if there is a central test set: every round, or on a
   fixed subset every round and the whole set after the last, ``evaluation.monitor``), and on the
   clients' local test splits every ``evaluation.interval`` rounds and after the last (at
   most ``evaluation.max_clients`` clients: a fixed sample drawn once from the seed; with
   personalised models beside the global one when asked, :mod:`sheaf.run.personalize`) —
   unless the run is differentially private, whose clients' raw test metrics would leave
   them outside the mechanism (``RunConfig.federated_evaluation``);
6. commit the round to the store in one transaction, then tell the listener.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from sheaf.backends.base import Backend, ClientReport, Cohort
from sheaf.core.acceptance import OperatorLimits, UpdateRule
from sheaf.core.config import RunConfig
from sheaf.core.errors import AggregationError, ClientFailure, SheafError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, stream
from sheaf.core.sampling import cohort_size
from sheaf.core.update import TensorGroups, Update
from sheaf.data.dataset import Federation, Split
from sheaf.evaluation.fairness import summarize
from sheaf.evaluation.history import ClientRecord, History, RoundRecord
from sheaf.privacy.aggregation import PRIVACY
from sheaf.run.personalize import personalized_evaluation, wants_personalization
from sheaf.run.population import Population
from sheaf.run.store import RunStore
from sheaf.secagg.step import SECURE_AGGREGATION
from sheaf.strategies.base import RoundContext, Strategy, StrategyState, WeightedSum
from sheaf.task.base import Task
from sheaf.task.metric_log import collecting, with_logged

__all__ = ["Federated", "RoundListener", "monitor_split", "run_rounds"]


class RoundListener(Protocol):
    """Receives progress from the round loop (the CLI's progress bar is one)."""

    def on_start(self, config: RunConfig, first_round: int, cohort: int, population: int) -> None:
        """Called once before the first round to run."""

    def on_round(self, record: RoundRecord) -> None:
        """Called after each round is committed."""


@dataclass(frozen=True)
class Federated:
    """The pieces the loop works with.

    Attributes:
        config: the run config.
        task: the user's task (the server uses it for central evaluation).
        federation: the clients' data (the loop reads only its sizes and central test
            set), or a :class:`~sheaf.run.population.Population` when the clients hold
            their own data (deployment).
        strategy: the aggregation strategy.
        backend: a started backend.
        store: the run's store, holding at least round 0.
        limits: what a deployment's operator bounds in every update (weights, lengths);
            None in a simulation, whose clients are the user's own code.
    """

    config: RunConfig
    task: Task
    federation: Federation | Population
    strategy: Strategy
    backend: Backend
    store: RunStore
    limits: OperatorLimits | None = None


def _weighted(records: Sequence[ClientRecord], metric: str) -> float:
    values = [(r.metrics[metric], r.num_examples) for r in records if metric in r.metrics]
    weight = sum(n for _, n in values)
    return float(sum(v * n for v, n in values) / weight) if weight else float("nan")


#: Fit metrics of the standard training loop that ``RoundRecord.fit`` does not repeat.
_BUILT_IN = frozenset({"train_loss", "steps"})


def _own_metrics(records: Sequence[ClientRecord], rule: UpdateRule) -> list[str]:
    """The fit metrics a task reported or logged itself: not the standard loop's, and none a
    strategy step reads for its server half (e.g. DP's below-clip bit, released only noised)."""
    read = {m.name for m in rule.metrics}
    names = {name for r in records for name in r.metrics}
    return sorted(names - _BUILT_IN - read)


def _central(task: Task, params: Params, split: Split) -> dict[str, float]:
    """The server's own evaluation of ``params`` on ``split``, with whatever the task logs there."""
    with collecting() as logged:
        result = task.evaluate(params, split)
    return {"loss": result.loss, **with_logged(result.metrics, logged)}


def _population(parts: Federated) -> Population:
    fed = parts.federation
    return fed if isinstance(fed, Population) else Population.of(fed)


def _evaluation_clients(parts: Federated, population: Population) -> list[int]:
    """The clients with a local test split, or a fixed sample of them (seeded, sorted)."""
    candidates = np.asarray(population.evaluation_clients, dtype=np.int64)
    limit = parts.config.evaluation.max_clients
    if 0 < limit < len(candidates):
        candidates = np.sort(stream(parts.config.seed, Purpose.EVALUATE).choice(candidates, limit, replace=False))
    return [int(c) for c in candidates]


def _federated_evaluation(
    parts: Federated, params: Params, clients: list[int]
) -> tuple[dict[str, dict[str, float]], list[ClientRecord], list[ClientFailure]]:
    outcome = parts.backend.evaluate(clients, params)
    records = [
        ClientRecord(cid, "evaluate", r.num_examples, {"loss": r.loss, **r.metrics})
        for cid, r in sorted(outcome.results.items())
    ]
    names = sorted({name for r in records for name in r.metrics})
    summaries = {
        name: summarize(
            [r.metrics.get(name, float("nan")) for r in records], [r.num_examples for r in records]
        ).as_dict()
        for name in names
    }
    return summaries, records, outcome.failures


def _checked(updates: Sequence[Update], like: Params, rule: UpdateRule) -> tuple[list[Update], list[ClientFailure]]:
    good: list[Update] = []
    rejected: list[ClientFailure] = []
    for update in updates:
        try:
            rule.check(update, like)
            good.append(update)
        except SheafError as exc:
            rejected.append(ClientFailure(update.client_id, f"update rejected: {exc}"))
    return good, rejected


#: A round whose change per parameter (root mean square) exceeds this many times the model's
#: own (or this, for a model whose parameters are below 1 on average) is refused as
#: exploding: no honest round comes near it.
EXPLODING = 1e4


def aggregate_problem(before: Params, after: Params) -> str | None:
    """Why an aggregated model must not be served (None if it may).

    Example:
        >>> import numpy as np
        >>> aggregate_problem(Params({"w": np.ones(2)}), Params({"w": np.array([1.0, np.inf])}))
        'the aggregated model holds NaN or infinite values'
    """
    if not after.all_finite():
        return "the aggregated model holds NaN or infinite values"
    size = max(1, sum(array.size for array in before.values()))
    change = (after.astype(np.float64) - before.astype(np.float64)).l2_norm() / math.sqrt(size)
    limit = EXPLODING * max(1.0, before.astype(np.float64).l2_norm() / math.sqrt(size))
    if not change <= limit:
        return (
            f"the round would move each parameter by {change:.4g} on average (root mean square), more than "
            f"{limit:.4g} ({EXPLODING:g} times the model's own, or {EXPLODING:g})"
        )
    return None


def _median_norm(updates: Sequence[Update], reports: Sequence[ClientReport]) -> float:
    norms = [u.delta.astype(np.float64).l2_norm() for u in updates if u.num_examples > 0]
    norms += [r.norm for r in reports if r.num_examples > 0 and math.isfinite(r.norm)]
    return float(np.median(norms)) if norms else math.nan


def _previous_median(history: History) -> float | None:
    for record in reversed(list(history)):
        if record.aggregated:
            value = record.fit.get("update_norm_median", math.nan)
            return value if math.isfinite(value) else None
    return None


def _merged(summed: ExactSum, updates: Sequence[Update], like: Params) -> WeightedSum:
    """A backend's exact partial sum plus the updates it returned whole."""
    total = ExactSum(like)
    total.merge(summed)
    total.add_updates(updates)
    return WeightedSum.from_exact(total)


def monitor_split(test: Split | None, rows: int) -> Split | None:
    """The fixed subset of ``rows`` evenly spaced rows of the central test set that rounds
    are watched on (``evaluation.monitor``), or None to evaluate the whole set every round.

    Example:
        >>> test = Split(np.arange(10.0).reshape(10, 1), np.arange(10) % 2)
        >>> monitor_split(test, 4).x.ravel().tolist(), monitor_split(test, 0), monitor_split(test, 10)
        ([0.0, 3.0, 6.0, 9.0], None, None)
    """
    if test is None or rows <= 0 or rows >= len(test):
        return None
    keep = np.unique(np.linspace(0, len(test) - 1, rows).round().astype(np.int64))
    return Split(test.x[keep], test.y[keep])


class _Skipped(NamedTuple):
    """A round that is not served: why, and the strategy state to keep."""

    reason: str
    state: StrategyState


def _aggregate(
    strategy: Strategy, value: Sequence[Update] | WeightedSum, state: StrategyState, ctx: RoundContext, used: set[int]
) -> tuple[Params, StrategyState, dict[str, float]] | _Skipped:
    """The strategy's aggregate, or why the round must be skipped with the model kept.

    Nothing a client sent may crash the server or poison the model it serves: an exception
    anywhere in the chain and an aggregate that is not finite or explodes are refused, and
    the contributors are named in the round's note. The state is kept too — except after a
    differentially private release that is refused: refusing is decided on the noised
    aggregate, so the round is charged (the state, with its privacy ledger, moves on).
    """
    try:
        params, new_state, metrics = strategy.aggregate(value, state, ctx)
    except AggregationError as exc:  # e.g. too few updates for Krum: skip the round, say why
        return _Skipped(str(exc), state)
    except Exception as exc:  # a step that breaks on what arrived: the run goes on without this round
        return _Skipped(
            f"aggregation failed ({type(exc).__name__}: {exc}); model kept; contributors: {sorted(used)}", state
        )
    problem = aggregate_problem(ctx.params, params)
    if problem is not None:
        kept = new_state if strategy.private_release else state
        return _Skipped(f"aggregate refused: {problem}; model kept; contributors: {sorted(used)}", kept)
    return params, new_state, metrics


def run_rounds(parts: Federated, listener: RoundListener | None = None) -> tuple[History, Params]:
    """Run the remaining rounds of a run and return its full history and final params.

    Raises:
        ConfigError: if the sampling settings do not fit the population.
        SheafError: on errors that stop the whole run (a broken store, a backend failure).
    """
    config, store = parts.config, parts.store
    clients_of_run = _population(parts)
    population = clients_of_run.num_clients
    size = cohort_size(population, config.strategy.fraction, config.strategy.min_clients)
    history = store.history()
    params = store.params()
    state = store.state(template=parts.strategy.init(params))
    eval_clients: list[int] | None = None
    # Backends may return the exact sum instead of the updates only where nothing reads a
    # single update: neither the strategy's steps nor its acceptance rule.
    strategy = parts.strategy
    reduce = not strategy.reads_updates
    monitor = monitor_split(clients_of_run.central_test, config.evaluation.monitor)
    if listener is not None:
        listener.on_start(config, store.last_round + 1, size, population)

    for round in range(store.last_round + 1, config.rounds + 1):
        started = time.perf_counter()
        rate = config.strategy.fraction if config.strategy.sampling == "poisson" else None
        ids = clients_of_run.cohort(size, seed=config.seed, round=round, rate=rate)
        ctx = RoundContext(round, params, config.seed, population)
        sent = strategy.configure(state, ctx)
        rule = strategy.update_rule
        if parts.limits is not None:
            # A private release is bounded by its clip norm; a bound learnt from earlier rounds'
            # raw updates would make who counts now depend on who took part then, unaccounted.
            median = None if strategy.private_release else _previous_median(history)
            rule = parts.limits.rule_for(rule, median, params)
        outcome = parts.backend.fit(
            Cohort(
                round,
                ids,
                params,
                config.train.for_round(round),
                sent.options,
                sent.payload,
                store.client_states(ids),
                reduce,
                strategy.client_steps,
                rule,
            )
        )
        updates, rejected = _checked(outcome.updates, params, rule)
        failures: list[tuple[str, ClientFailure]] = [("fit", f) for f in [*outcome.failures, *rejected]]
        clients = [ClientRecord(u.client_id, "fit", u.num_examples, u.metrics) for u in updates]
        clients += [ClientRecord(r.client_id, "fit", r.num_examples, r.metrics) for r in outcome.reports]
        clients.sort(key=lambda c: c.client_id)

        succeeded = len(clients)
        # A private mean's release must not depend on the raw count of arrivals: never skip it.
        aggregated = strategy.private_release or succeeded >= config.strategy.min_clients
        note = (
            "" if aggregated else f"{succeeded} updates, fewer than strategy.min_clients={config.strategy.min_clients}"
        )
        fit: dict[str, float] = {"train_loss": _weighted(clients, "train_loss")}
        # What the task reports or logs itself (sheaf.task.log_metrics), as a weighted mean per round.
        fit.update({name: _weighted(clients, name) for name in _own_metrics(clients, strategy.update_rule)})
        median = _median_norm(updates, outcome.reports)
        if math.isfinite(median):  # what the next round's relative norm bound starts from
            fit["update_norm_median"] = median
        new_states: dict[int, TensorGroups] = {}
        if aggregated:
            summed = None if outcome.summed is None else _merged(outcome.summed, updates, params)
            used = {c.client_id for c in clients}
            result = _aggregate(strategy, summed or updates, state, ctx, used)
            if isinstance(result, _Skipped):
                aggregated, note, state = False, result.reason, result.state
            else:
                params, state, agg_metrics = result
                fit.update(agg_metrics)
                fit.update(strategy.report(state).get(SECURE_AGGREGATION, {}))  # who the secure sum held
                # A client's state moves on only if its update was used.
                new_states = {cid: s for cid, s in outcome.client_states.items() if cid in used}

        central_metrics: Mapping[str, float] = {}
        monitor_metrics: Mapping[str, float] = {}
        if clients_of_run.central_test is not None:
            if monitor is not None:
                monitor_metrics = _central(parts.task, params, monitor)
            if monitor is None or round == config.rounds:
                central_metrics = _central(parts.task, params, clients_of_run.central_test)

        federated: dict[str, dict[str, float]] = {}
        if config.federated_evaluation and (round % config.evaluation.interval == 0 or round == config.rounds):
            if eval_clients is None:
                eval_clients = _evaluation_clients(parts, clients_of_run)
            federated, eval_records, eval_failures = _federated_evaluation(parts, params, eval_clients)
            clients += eval_records
            failures += [("evaluate", f) for f in eval_failures]
            if wants_personalization(config, strategy):
                evaluated = [r.client_id for r in eval_records]
                personal, personal_records, personal_failures = personalized_evaluation(
                    parts.backend, strategy, config, store, round, params, evaluated
                )
                federated.update(personal)
                clients += personal_records
                failures += [("personalize", f) for f in personal_failures]

        record = RoundRecord(
            round=round,
            sampled=len(ids),
            completed=succeeded if aggregated else 0,
            failed=sum(1 for phase, _ in failures if phase == "fit"),
            aggregated=aggregated,
            central=dict(central_metrics),
            fit=fit,
            federated=federated,
            seconds=time.perf_counter() - started,
            note=note,
            privacy=strategy.report(state).get(PRIVACY, {}),
            monitor=dict(monitor_metrics),
        )
        store.commit_round(
            record, params, state, clients, failures, keep_params=config.keep_params, client_states=new_states
        )
        history.append(record)
        if listener is not None:
            listener.on_round(record)
    return history, params
