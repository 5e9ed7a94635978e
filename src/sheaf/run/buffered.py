"""FedBuff: buffered asynchronous aggregation, simulated on the virtual clock.

Up to ``asynchronous.concurrency`` (C) clients train at any virtual time, each from the
model version it pulled when it started. Each arrival goes into a buffer; after every
``asynchronous.buffer`` (K) arrivals the server takes one step: every buffered update's
delta is weighted by its staleness ``s`` (how many server steps happened since its client
pulled), ``1 / sqrt(1 + s)``, the strategy aggregates the weighted updates (FedAvg: their
mean weighted by examples), and the model moves by ``asynchronous.server_lr`` times that
aggregate step. A freed slot is filled at once by a client drawn uniformly among those
online, not training and not yet holding the current version (so no client trains twice
from one version: its update would repeat itself). The server also looks for newly
online devices every :data:`WAKE_SECONDS` of virtual time.

Every event happens at a virtual time from the device profiles (:mod:`sheaf.run.clock`),
never at a wall-clock time, and ties go by client id, so the order of arrivals — and the
model — depends only on the seed, on every backend. Clients are trained lazily, in one
cohort per model version (``Cohort.round`` is the version they pulled plus one, so a
client's training stream is ``(seed, version + 1, client)``), when the first of them
arrives; the cohorts depend only on the event order.

A run's ``rounds`` are server steps; each commits one round to the store, with the
virtual time, the staleness of every update (``staleness``, in its client record), the
clients that dropped out since the last step and, in the same transaction, the clients
still in flight (:data:`RESUME_KEY`): a stopped run resumes after its last step and ends
with the model of an uninterrupted one. An update more than ``asynchronous.max_staleness``
steps old is refused (:func:`staleness_problem`). The step itself, :func:`buffer_step`, is
the one ``sheaf server`` takes too (:mod:`sheaf.deploy.buffered`), with real arrivals.

References:
    Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba. Federated Learning with Buffered
    Asynchronous Aggregation. AISTATS 2022.

Example:
    >>> staleness_weight(0, "sqrt"), staleness_weight(3, "sqrt"), staleness_weight(3, "none")
    (1.0, 0.5, 1.0)
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sheaf.backends.base import Cohort
from sheaf.core.clock_config import AsyncConfig
from sheaf.core.config import RunConfig
from sheaf.core.errors import ClientFailure, SheafError, StoreError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, stream
from sheaf.core.update import Update
from sheaf.data.dataset import Split
from sheaf.evaluation.history import ClientRecord, History, RoundRecord
from sheaf.run.clock import VirtualClock
from sheaf.run.loop import (
    Federated,
    RoundListener,
    _aggregate,
    _checked,
    _Evaluators,
    _population,
    _Skipped,
    _weighted,
    evaluate_round,
    monitor_split,
    run_clock,
)
from sheaf.run.population import Population
from sheaf.strategies.base import Broadcast, RoundContext, Strategy, StrategyState

__all__ = [
    "RESUME_KEY",
    "WAKE_SECONDS",
    "BufferStep",
    "buffer_step",
    "run_buffered",
    "staleness_problem",
    "staleness_weight",
]

#: How often (virtual seconds) the server looks for newly online devices between arrivals.
WAKE_SECONDS = 900.0


def staleness_weight(staleness: int, kind: str) -> float:
    """The weight of an update ``staleness`` server steps old: ``1/sqrt(1+s)`` or 1."""
    return 1.0 / math.sqrt(1.0 + staleness) if kind == "sqrt" else 1.0


@dataclass
class _Server:
    """The asynchronous server's state between events (after a step, :func:`_snapshot`
    holds what of it a resumed run needs)."""

    version: int
    params: Params
    versions: dict[int, Params]
    broadcasts: dict[int, Broadcast]
    events: list[tuple[float, int, int, str]] = field(default_factory=list)  # (time, client, version, dropped)
    running: set[int] = field(default_factory=set)
    holding: set[int] = field(default_factory=set)  # pulled the current version
    untrained: dict[int, list[int]] = field(default_factory=dict)  # version -> clients
    results: dict[tuple[int, int], Update | ClientFailure] = field(default_factory=dict)
    buffer: list[tuple[Update, int]] = field(default_factory=list)
    dropouts: list[ClientFailure] = field(default_factory=list)
    pulls: int = 0  # pull groups so far: the key of each draw
    pulled: int = 0  # clients started since the last step
    wake: float = math.inf


def _refill(server: _Server, clock: VirtualClock, parts: Federated, now: float) -> None:
    """Start clients in the free slots: uniformly among the eligible ones (seeded)."""
    need = parts.config.asynchronous.concurrency - len(server.running)
    if need > 0:
        online = clock.online_clients(now)
        busy = np.fromiter(server.running | server.holding, dtype=np.int64)
        eligible = online[~np.isin(online, busy)]
        if len(eligible):
            rng = stream(parts.config.seed, Purpose.ASYNC, round=server.pulls)
            server.pulls += 1
            chosen = np.sort(rng.choice(eligible, size=min(need, len(eligible)), replace=False))
            for job in clock.jobs(chosen.tolist(), now):
                heapq.heappush(server.events, (job.end, job.client_id, server.version, job.dropped))
                server.running.add(job.client_id)
                server.holding.add(job.client_id)
                if not job.dropped:
                    server.untrained.setdefault(server.version, []).append(job.client_id)
            server.pulled += len(chosen)
    if len(server.running) < parts.config.asynchronous.concurrency and server.wake == math.inf:
        server.wake = now + WAKE_SECONDS


def _train(server: _Server, parts: Federated, version: int) -> None:
    """Train every client that pulled ``version`` and is not trained yet, as one cohort."""
    ids = sorted(server.untrained.pop(version, []))
    sent = server.broadcasts[version]
    rule = parts.strategy.update_rule
    outcome = parts.backend.fit(
        Cohort(
            version + 1,
            ids,
            server.versions[version],
            parts.config.train,
            sent.options,
            sent.payload,
            {},
            False,
            parts.strategy.client_steps,
            rule,
        )
    )
    good, rejected = _checked(outcome.updates, server.versions[version], rule)
    for update in good:
        server.results[(update.client_id, version)] = update
    for failure in [*outcome.failures, *rejected]:
        server.results[(failure.client_id, version)] = failure


def _forget_versions(server: _Server) -> None:
    """Drop the params of versions no client in flight still trains from."""
    wanted = {server.version, *server.untrained, *(v for _, _, v, _ in server.events)}
    for version in [v for v in server.versions if v not in wanted]:
        del server.versions[version]
        del server.broadcasts[version]


def _weighted_update(update: Update, weight: float) -> Update:
    if weight == 1.0:
        return update
    return Update(update.client_id, update.delta * weight, update.num_examples, update.metrics, update.extras)


def _moved(before: Params, after: Params, lr: float) -> Params:
    """``before + lr * (after - before)``, in float64, cast back (lr 1: ``after`` itself)."""
    if lr == 1.0:
        return after
    return before.zip_map(after, lambda b, a: b.astype(np.float64) + lr * (a.astype(np.float64) - b))


#: The meta entry, written with every step, from which an interrupted run resumes.
RESUME_KEY = "asynchronous_resume"


def _snapshot(server: _Server, now: float) -> dict[str, Any]:
    """What a resumed run needs after a step: the clients in flight (their arrival or
    dropout times and the versions they pulled), the pull counter, the next look for
    online devices. The buffer is empty after a step; trained updates still in flight
    are not kept: a resumed run trains them again, to the same bits."""
    return {
        "round": server.version,
        "now": now,
        "events": [list(event) for event in server.events],  # the heap's own order
        "pulls": server.pulls,
        "wake": None if server.wake == math.inf else server.wake,
    }


def _resumed(parts: Federated, population: int) -> tuple[_Server, float]:
    """The server as it was after the store's last step.

    Raises:
        StoreError: if the store lacks that step's snapshot or a version's params.
    """
    store, strategy, seed = parts.store, parts.strategy, parts.config.seed
    last = store.last_round
    snap = store.meta.get(RESUME_KEY)
    try:
        if not isinstance(snap, dict) or snap["round"] != last:
            raise ValueError
        events = [(float(t), int(c), int(v), str(d)) for t, c, v, d in snap["events"]]
        now, pulls, wake = float(snap["now"]), int(snap["pulls"]), snap["wake"]
        wake = math.inf if wake is None else float(wake)
    except (KeyError, TypeError, ValueError):
        raise StoreError(
            f"run {str(store.path)!r} holds {last} asynchronous steps but not what resuming after step {last} "
            "needs; choose another run name or delete the file"
        ) from None
    template = strategy.init(store.params(0))
    needed = {last, *(v for _, _, v, _ in events)}
    try:
        versions = {v: store.params(v) for v in sorted(needed)}
        states = {v: store.state(v, template=template) for v in sorted(needed)}
    except StoreError as exc:
        raise StoreError(
            f"{exc}: clients still in flight after step {last} pulled it (keep_params deletes older versions), "
            "so this asynchronous run cannot resume; choose another run name or delete the file"
        ) from None
    broadcasts = {
        v: strategy.configure(states[v], RoundContext(v + 1, versions[v], seed, population)) for v in sorted(needed)
    }
    untrained: dict[int, list[int]] = {}
    for _, cid, version, dropped in events:
        if not dropped:
            untrained.setdefault(version, []).append(cid)
    server = _Server(last, versions[last], versions, broadcasts, events, {c for _, c, _, _ in events})
    server.untrained, server.pulls, server.wake = untrained, pulls, wake
    return server, now


def run_buffered(parts: Federated, listener: RoundListener | None = None) -> tuple[History, Params]:
    """Run an asynchronous (FedBuff) simulation to its last server step.

    Raises:
        StoreError: if an interrupted run's store lacks what resuming needs (its
            in-flight clients, or the params of the versions they pulled, e.g. deleted by
            ``keep_params``).
        SheafError: if the run stalls: every client holds the current version and none
            is training, with an empty buffer.
    """
    config, store, strategy = parts.config, parts.store, parts.strategy
    if store.last_round >= config.rounds:  # a finished run: nothing left to do
        return store.history(), store.params()
    population = _population(parts)
    params = store.params()
    clock = run_clock(parts, params)
    if clock is None:
        raise SheafError("asynchronous.enabled needs devices.enabled = true: the virtual clock orders the arrivals")
    settings = config.asynchronous
    state = store.state(template=strategy.init(store.params(0)))
    if store.last_round == 0:
        ctx0 = RoundContext(1, params, config.seed, population.num_clients)
        server, now = _Server(0, params, {0: params}, {0: strategy.configure(state, ctx0)}), 0.0
    else:
        server, now = _resumed(parts, population.num_clients)
    history, evaluators = store.history(), _Evaluators()
    monitor = monitor_split(population.central_test, config.evaluation.monitor)
    if listener is not None:
        listener.on_start(config, store.last_round + 1, settings.concurrency, population.num_clients)
    _refill(server, clock, parts, now)
    started = time.perf_counter()
    while server.version < config.rounds:
        arrival = server.events[0][0] if server.events else math.inf
        stalled = not server.running and len(server.holding) >= population.num_clients
        if not stalled and server.wake < arrival:  # look for newly online devices
            now, server.wake = max(now, server.wake), math.inf
            if not server.running and not len(clock.online_clients(now)):
                now = max(now, clock.next_online(now))
            _refill(server, clock, parts, now)
            continue
        if not stalled:
            now, cid, version, dropped = heapq.heappop(server.events)
            server.running.discard(cid)
            if dropped:
                server.dropouts.append(ClientFailure(cid, dropped))
            else:
                if (cid, version) not in server.results:
                    _train(server, parts, version)
                result = server.results.pop((cid, version), None)
                if result is None:  # a backend that lost a client: a dropout, never a crash
                    server.dropouts.append(ClientFailure(cid, "the backend returned no result for this client"))
                elif isinstance(result, ClientFailure):
                    server.dropouts.append(result)
                elif (refused := staleness_problem(server.version - version, settings)) is not None:
                    server.dropouts.append(ClientFailure(cid, refused))
                else:
                    server.buffer.append((result, server.version - version))
            if len(server.buffer) < settings.buffer:
                _refill(server, clock, parts, now)
                continue
        elif not server.buffer:
            raise SheafError(
                f"the asynchronous run stalled at virtual second {now:.0f}: every client holds model version "
                f"{server.version} and none is training; lower asynchronous.buffer (now {settings.buffer})"
            )
        state = _step(server, parts, population, state, now, stalled, history, evaluators, monitor, started)
        if listener is not None:
            listener.on_round(history[-1])
        started = time.perf_counter()
        _forget_versions(server)
        _refill(server, clock, parts, now)
    return history, server.params


@dataclass(frozen=True)
class BufferStep:
    """What one server step over a buffer produced (:func:`buffer_step`).

    Attributes:
        params: the model after the step (the model before it, if not aggregated).
        state: the strategy state after the step.
        clients: each buffered update's client record, ``staleness`` among its metrics.
        fit: the step's fit figures: ``train_loss``, ``staleness_mean``, ``staleness_max``
            and what the strategy reported.
        aggregated: whether the model moved.
        note: why it did not, or that the buffer was flushed short.
    """

    params: Params
    state: StrategyState
    clients: list[ClientRecord]
    fit: dict[str, float]
    aggregated: bool
    note: str


def staleness_problem(staleness: int, settings: AsyncConfig) -> str | None:
    """Why an update from a model ``staleness`` server steps old is refused (None: it is not).

    Example:
        >>> staleness_problem(3, AsyncConfig(max_staleness=2))
        'update refused: its model is 3 server steps old, past asynchronous.max_staleness=2'
    """
    if staleness > settings.max_staleness:
        return (
            f"update refused: its model is {staleness} server steps old, "
            f"past asynchronous.max_staleness={settings.max_staleness}"
        )
    return None


def buffer_step(
    strategy: Strategy,
    buffered: Sequence[tuple[Update, int]],
    params: Params,
    state: StrategyState,
    ctx: RoundContext,
    config: RunConfig,
    *,
    flushed: bool = False,
) -> BufferStep:
    """FedBuff's server step over ``(update, staleness)`` pairs: the one function simulation
    and deployment (:mod:`sheaf.deploy.buffered`) both call, so that the same arrivals give
    the same model bit for bit.

    Updates are taken in client-id order (never arrival order: the sum's order must not
    depend on timing) — two updates of one client, from two model versions, oldest first —
    each delta weighted by :func:`staleness_weight`, aggregated by the
    strategy, and the model moved by ``asynchronous.server_lr`` times the aggregate step.
    Fewer than ``strategy.min_clients`` updates, or an aggregate the strategy refuses,
    leave the model as it was (``aggregated`` false, the reason in ``note``).
    """
    settings = config.asynchronous
    ordered = sorted(buffered, key=lambda item: (item[0].client_id, -item[1]))
    weighted = [_weighted_update(u, staleness_weight(s, settings.staleness)) for u, s in ordered]
    used = {u.client_id for u, _ in ordered}
    clients = [
        ClientRecord(u.client_id, "fit", u.num_examples, {**u.metrics, "staleness": float(s)}) for u, s in ordered
    ]
    stale = [float(s) for _, s in ordered]
    fit: dict[str, float] = {
        "train_loss": _weighted(clients, "train_loss"),
        "staleness_mean": float(np.mean(stale)) if stale else math.nan,
        "staleness_max": max(stale, default=math.nan),
    }
    note = f"buffer flushed with {len(ordered)} < {settings.buffer} updates: no client could start" if flushed else ""
    if len(ordered) < config.strategy.min_clients:
        note = f"{len(ordered)} updates, fewer than strategy.min_clients={config.strategy.min_clients}"
        return BufferStep(params, state, clients, fit, False, note)
    result = _aggregate(strategy, weighted, state, ctx, used)
    if isinstance(result, _Skipped):
        return BufferStep(params, result.state, clients, fit, False, result.reason)
    new_params, new_state, metrics = result
    fit.update(metrics)
    return BufferStep(_moved(params, new_params, settings.server_lr), new_state, clients, fit, True, note)


def _step(
    server: _Server,
    parts: Federated,
    population: Population,
    state: StrategyState,
    now: float,
    flushed: bool,
    history: History,
    evaluators: _Evaluators,
    monitor: Split | None,
    started: float,
) -> StrategyState:
    """One server step over the buffer: weigh, aggregate, evaluate, commit."""
    config, strategy = parts.config, parts.strategy
    round = server.version + 1
    ctx = RoundContext(round, server.params, config.seed, population.num_clients)
    step = buffer_step(strategy, server.buffer, server.params, state, ctx, config, flushed=flushed)
    server.params, state, clients = step.params, step.state, step.clients
    failures: list[tuple[str, ClientFailure]] = [("fit", f) for f in server.dropouts]
    central, monitored, federated = evaluate_round(
        parts, population, server.params, round, monitor, evaluators, clients, failures
    )
    record = RoundRecord(
        round=round,
        sampled=server.pulled,
        completed=len(server.buffer) if step.aggregated else 0,
        failed=len(server.dropouts),
        aggregated=step.aggregated,
        central=central,
        fit=step.fit,
        federated=federated,
        seconds=time.perf_counter() - started,
        note=step.note,
        monitor=monitored,
        virtual_seconds=now,
    )
    server.version = round
    server.versions[round] = server.params
    server.broadcasts[round] = strategy.configure(
        state, RoundContext(round + 1, server.params, config.seed, population.num_clients)
    )
    server.holding, server.buffer, server.dropouts, server.pulled = set(), [], [], 0
    parts.store.commit_round(
        record,
        server.params,
        state,
        clients,
        failures,
        keep_params=config.keep_params,
        meta={RESUME_KEY: _snapshot(server, now)},
    )
    history.append(record)
    return state
