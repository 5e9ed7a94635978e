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
3. decode every update its client sent encoded (the strategy's codec: compression's
   server half), then check it against the strategy's acceptance rule (names, shapes,
   dtypes, finite; the metrics and extras its steps read, within their ranges; the norm
   bound) — so every bound applies to what will be aggregated; an update that cannot be
   decoded or is rejected is a dropout; and count the round's bytes, per client
   (:mod:`sheaf.run.traffic`);
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
5. evaluate the new model centrally (if there is a central test set) every
   ``evaluation.central_interval`` rounds and after the last — on the whole set, or on a
   fixed subset and the whole set only after the last (``evaluation.monitor``); the whole
   set in fixed shards combined exactly, in the backend's workers where it has any, so the
   figures are the same bits on every backend (:mod:`sheaf.evaluation.central`) — and on the
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

from sheaf.backends.base import Backend, CentralEvaluator, ClientReport, Cohort, FitOutcome
from sheaf.core.acceptance import OperatorLimits, UpdateRule
from sheaf.core.config import RunConfig
from sheaf.core.encoded import layout_bytes
from sheaf.core.errors import AggregationError, ClientFailure, SheafError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, stream
from sheaf.core.sampling import cohort_size, sample_cohort
from sheaf.core.update import Scalar, TensorGroups, Update
from sheaf.data.dataset import Federation, Split
from sheaf.evaluation.central import central_shards, combine_shards, evaluate_shards
from sheaf.evaluation.fairness import summarize
from sheaf.evaluation.history import ClientRecord, History, RoundRecord
from sheaf.privacy.aggregation import PRIVACY
from sheaf.run.clock import RoundPlan, VirtualClock
from sheaf.run.personalize import personalized_evaluation, wants_personalization
from sheaf.run.population import Population
from sheaf.run.store import RunStore
from sheaf.run.traffic import missed_rounds, round_traffic
from sheaf.secagg.step import SECURE_AGGREGATION
from sheaf.strategies.base import MaskedSum, RoundContext, Strategy, StrategyState, WeightedSum
from sheaf.task.base import EvalResult, Task

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


def _metrics(result: EvalResult) -> dict[str, float]:
    return {"loss": result.loss, **result.metrics}


def _sharded(task: Task, params: Params, split: Split, shard_rows: int) -> EvalResult:
    """The server's own evaluation of ``params`` on ``split`` in this process, in fixed shards
    combined exactly, with whatever the task logs there (:mod:`sheaf.evaluation.central`)."""
    return combine_shards(evaluate_shards(task, params, split, central_shards(len(split), shard_rows)))


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


def _central_evaluation(parts: Federated, params: Params, test: Split) -> EvalResult:
    """The global model on the central test set, in fixed shards combined exactly
    (:mod:`sheaf.evaluation.central`): in a simulation backend's workers, else here."""
    shards = central_shards(len(test), parts.config.evaluation.shard_rows)
    backend = parts.backend
    if isinstance(backend, CentralEvaluator) and isinstance(parts.federation, Federation):
        results = backend.evaluate_central(params, shards)  # the backend holds this federation's test set
    else:
        results = evaluate_shards(parts.task, params, test, shards)
    return combine_shards(results)  # each shard with what the task logged evaluating it


def _received(
    strategy: Strategy, updates: Sequence[Update], like: Params, options: Mapping[str, Scalar]
) -> tuple[list[Update], list[ClientFailure]]:
    """The updates as the strategy reads them (decoded, if its clients encode them)."""
    good: list[Update] = []
    refused: list[ClientFailure] = []
    for update in updates:
        try:
            good.append(strategy.receive(update, like, options))
        except SheafError as exc:
            refused.append(ClientFailure(update.client_id, f"update rejected: {exc}"))
    return good, refused


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
    strategy: Strategy,
    value: Sequence[Update] | WeightedSum | MaskedSum,
    state: StrategyState,
    ctx: RoundContext,
    used: set[int],
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


class _Evaluators:
    """The clients of federated evaluation, drawn once per run when first needed."""

    def __init__(self) -> None:
        self.ids: list[int] | None = None

    def get(self, parts: Federated, population: Population) -> list[int]:
        if self.ids is None:
            self.ids = _evaluation_clients(parts, population)
        return self.ids


def evaluate_round(
    parts: Federated,
    population: Population,
    params: Params,
    round: int,
    monitor: Split | None,
    evaluators: _Evaluators,
    clients: list[ClientRecord],
    failures: list[tuple[str, ClientFailure]],
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]]]:
    """A round's evaluations: central (or on the monitor subset), and federated on the
    rounds that have it (with personalised models where asked); the clients' records and
    failures are appended to ``clients`` and ``failures``.

    Returns:
        The central metrics, the monitor metrics and the federated summaries.
    """
    config, strategy = parts.config, parts.strategy
    central_metrics: dict[str, float] = {}
    monitor_metrics: dict[str, float] = {}
    every = config.evaluation.central_interval
    if population.central_test is not None and (round % every == 0 or round == config.rounds):
        if monitor is not None:
            monitor_metrics = _metrics(_sharded(parts.task, params, monitor, config.evaluation.shard_rows))
        if monitor is None or round == config.rounds:
            central_metrics = _metrics(_central_evaluation(parts, params, population.central_test))

    federated: dict[str, dict[str, float]] = {}
    if config.federated_evaluation and (round % config.evaluation.interval == 0 or round == config.rounds):
        federated, eval_records, eval_failures = _federated_evaluation(parts, params, evaluators.get(parts, population))
        clients += eval_records
        failures += [("evaluate", f) for f in eval_failures]
        if wants_personalization(config, strategy):
            evaluated = [r.client_id for r in eval_records]
            personal, personal_records, personal_failures = personalized_evaluation(
                parts.backend, strategy, config, parts.store, round, params, evaluated
            )
            federated.update(personal)
            clients += personal_records
            failures += [("personalize", f) for f in personal_failures]
    return central_metrics, monitor_metrics, federated


def _fit(backend: Backend, cohort: Cohort) -> FitOutcome:
    """The backend's outcome, or nothing for a cohort the clock left empty."""
    return backend.fit(cohort) if cohort.size else FitOutcome([], [])


def run_clock(parts: Federated, params: Params) -> VirtualClock | None:
    """The virtual clock of a simulation with ``[devices]`` (None otherwise)."""
    fed = parts.federation
    if not parts.config.devices.enabled or not isinstance(fed, Federation):
        return None
    return VirtualClock.for_run(parts.config, fed.train_counts, params.nbytes)


def _clocked_cohort(
    clock: VirtualClock, population: Population, config: RunConfig, size: int, round: int, now: float
) -> tuple[list[int], RoundPlan]:
    """A synchronous round under the clock: who is sampled among the devices online when it
    starts (over-selected by ``devices.overselect``), and which of them it keeps."""
    start = clock.next_online(now)
    rate = config.strategy.fraction if config.strategy.sampling == "poisson" else None
    wanted = min(population.num_clients, math.ceil(size * (1 + config.devices.overselect) - 1e-9))
    if clock.always:
        ids = population.cohort(wanted, seed=config.seed, round=round, rate=rate)
    else:  # by position among the online clients, from (seed, round) alone
        online = clock.online_clients(start)
        positions = sample_cohort(len(online), wanted, seed=config.seed, round=round, rate=rate)
        ids = [population.client_ids[int(online[p])] for p in positions]
    target = len(ids) if rate is not None else size
    return ids, clock.plan_round(ids, start=start, target=target, deadline=config.devices.deadline)


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
    evaluators = _Evaluators()
    # Backends may return the exact sum instead of the updates only where nothing reads a
    # single update: neither the strategy's steps nor its acceptance rule.
    strategy = parts.strategy
    reduce = not strategy.reads_updates
    monitor = monitor_split(clients_of_run.central_test, config.evaluation.monitor)
    clock = run_clock(parts, params)
    now = history[-1].virtual_seconds if len(history) else 0.0
    # Download compression: which model each client holds, so it is counted only the deltas it missed.
    downlink = layout_bytes(strategy.downlink)
    held = {c: r - 1 for c, r in store.last_sent().items()} if downlink else {}
    moved = [r.aggregated for r in history]
    if listener is not None:
        listener.on_start(config, store.last_round + 1, size, population)

    for round in range(store.last_round + 1, config.rounds + 1):
        started = time.perf_counter()
        rate = config.strategy.fraction if config.strategy.sampling == "poisson" else None
        plan: RoundPlan | None = None
        if clock is None:
            ids = clients_of_run.cohort(size, seed=config.seed, round=round, rate=rate)
            trained = ids
        else:
            ids, plan = _clocked_cohort(clock, clients_of_run, config, size, round, now)
            trained, now = plan.train, plan.end
        ctx = RoundContext(round, params, config.seed, population)
        sent = strategy.configure(state, ctx)
        rule = strategy.update_rule
        if parts.limits is not None:
            # A private release is bounded by its clip norm; a bound learnt from earlier rounds'
            # raw updates would make who counts now depend on who took part then, unaccounted.
            median = None if strategy.private_release else _previous_median(history)
            rule = parts.limits.rule_for(rule, median, params)
        outcome = _fit(
            parts.backend,
            Cohort(
                round,
                trained,
                params,
                config.train.for_round(round),
                sent.options,
                sent.payload,
                store.client_states(trained),
                reduce,
                strategy.client_steps,
                rule,
            ),
        )
        traffic = round_traffic(  # what was sent to (and came back from) the clients that trained
            trained,
            outcome.updates,
            outcome.traffic,
            params,
            sent.payload,
            reports=outcome.reports,
            downlink_bytes=downlink,
            held=held,
            missed={c: missed_rounds(moved, held[c], round) for c in trained if c in held},
        )
        received, refused = _received(strategy, outcome.updates, params, sent.options)
        updates, rejected = _checked(received, params, rule)
        failures: list[tuple[str, ClientFailure]] = [("fit", f) for f in [*outcome.failures, *refused, *rejected]]
        if plan is not None:  # the clock's dropouts: offline, stragglers, over-selected
            failures += [("fit", ClientFailure(cid, why)) for cid, why in plan.dropped]
        clients = [ClientRecord(u.client_id, "fit", u.num_examples, u.metrics) for u in updates]
        clients += [ClientRecord(r.client_id, "fit", r.num_examples, r.metrics) for r in outcome.reports]
        clients.sort(key=lambda c: c.client_id)

        succeeded = len(clients)
        # A private mean's release must not depend on the raw count of arrivals: never skip it.
        aggregated = strategy.private_release or succeeded >= config.strategy.min_clients
        note = (
            "" if aggregated else f"{succeeded} updates, fewer than strategy.min_clients={config.strategy.min_clients}"
        )
        if outcome.secure is not None and outcome.secure.total is None:  # the protocol aborted: why
            aggregated, note = False, f"secure aggregation aborted, nothing revealed: {outcome.secure.reason}"
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
            value = outcome.secure if outcome.secure is not None else summed or updates
            result = _aggregate(strategy, value, state, ctx, used)
            if isinstance(result, _Skipped):
                aggregated, note, state = False, result.reason, result.state
            else:
                params, state, agg_metrics = result
                fit.update(agg_metrics)
                fit.update(strategy.report(state).get(SECURE_AGGREGATION, {}))  # who the secure sum held
                # A client's state moves on only if its update was used.
                new_states = {cid: s for cid, s in outcome.client_states.items() if cid in used}

        central_metrics, monitor_metrics, federated = evaluate_round(
            parts, clients_of_run, params, round, monitor, evaluators, clients, failures
        )

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
            virtual_seconds=now,
            traffic=traffic.totals(),
        )
        store.commit_round(
            record,
            params,
            state,
            clients,
            failures,
            keep_params=config.keep_params,
            client_states=new_states,
            traffic=traffic.per_client(),
        )
        history.append(record)
        moved.append(aggregated)
        if downlink:
            held.update(dict.fromkeys(trained, round - 1))
        if listener is not None:
            listener.on_round(record)
    return history, params
