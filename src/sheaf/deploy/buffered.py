"""FedBuff deployed: ``sheaf server`` with ``[asynchronous]`` — clients pull when ready,
the server steps every K results.

The driver posts one *open* batch of work to the coordinator
(:class:`~sheaf.deploy.work.Work` with ``issue`` and ``admit``) and keeps it posted
for the whole run:

- **Issuing.** Any authenticated client that pulls gets a task while fewer than
  ``asynchronous.concurrency`` (C) tasks are open, unless it already has one open or already
  trained from the current model (its update would repeat itself: the same seed, the same
  model). The server writes the task down — client, model version — in its ledger
  (:class:`~sheaf.deploy.async_ledger.AsyncLedger`) *before* sending it; the task's round
  is the version plus one, so the client trains with the seed a simulation derives for
  ``(run seed, version + 1, client)``. Nothing the client says about versions is used.
- **Admitting.** A result passes the same checks as a synchronous round's (its task is
  awaited, its tensors match the model, finite, the weight it may claim, the norm bound,
  the strategy's metrics: :mod:`sheaf.deploy.service`); then its staleness — the step it
  will join minus one, minus its task's version, both from the server's own ledger — is
  checked against ``asynchronous.max_staleness``
  (:func:`~sheaf.run.buffered.staleness_problem`). An admitted update is written to the
  ledger, for the step being filled, before its client hears "accepted".
- **Stepping.** When K updates are buffered for a step, the driver takes the step with
  :func:`~sheaf.run.buffered.buffer_step` — the function the simulation calls — evaluates
  centrally if the server has test data, and commits the round: its record (staleness
  mean and max, wall seconds since the last step), the model, the strategy state, each
  update's client record (``staleness``) and the dropouts. Results keep arriving while it
  works; they fill the next step. If every authorised client holds the current model and
  none is training, the buffer is flushed short (as in simulation).
- **Dropouts.** A task with no result within ``asynchronous.task_timeout`` seconds of being
  handed out, from a client silent past ``server.heartbeat_timeout``, one the client
  reports failed, and a refused result all free their slot and are recorded against the
  step being filled, with their reason.

**Resuming.** A server killed (``kill -9`` included) and started with the same command
continues after its last committed step: the model and state from the run store, the
updates already buffered for later steps and the open tasks from the ledger. A result for
an open task is accepted as if nothing happened (its timeout counts again from the
restart); a result for a task the ledger does not hold is refused as unknown. What is lost:
nothing accepted. Given the same order of arrivals, the resumed run ends with the model of
an uninterrupted one; the arrival order itself is the clients' timing, which a restart
changes (see ``docs/deployment.md``).

Federated evaluation is not run (it would stop clients that train); central evaluation on
the server's ``--test-data`` is.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from sheaf.core.acceptance import UpdateRule
from sheaf.core.errors import ClientFailure, StoreError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, seeds_for
from sheaf.core.update import Update
from sheaf.data.dataset import Split
from sheaf.deploy.async_ledger import AsyncLedger
from sheaf.deploy.backend import task_id
from sheaf.deploy.chunks import encode_tensors
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.logs import log_event
from sheaf.deploy.wire import ReceivedResult, encode_task_header, task_chunk
from sheaf.deploy.work import Slot, Work
from sheaf.evaluation.history import History, RoundRecord
from sheaf.run.buffered import buffer_step, staleness_problem
from sheaf.run.loop import Federated, RoundListener, _Evaluators, _population, evaluate_round, monitor_split
from sheaf.strategies.base import Broadcast, RoundContext, StrategyState

__all__ = ["BufferedServer"]

_log = logging.getLogger("sheaf.server")

#: The meta entry written with every step: the last step and the weighting (for a reader of the store).
_STEP_META = "asynchronous_deployed"


class BufferedServer:
    """A deployed FedBuff run's driver (see the module docstring).

    Args:
        parts: the run's pieces (its backend is not used to train: clients pull).
        coordinator: the server's live state, shared with the service's handlers.
        ledger: the run's durable ledger of tasks and buffered updates.
        clock: real seconds for the wall time of each step.
    """

    def __init__(
        self,
        parts: Federated,
        coordinator: Coordinator,
        ledger: AsyncLedger,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        config, store = parts.config, parts.store
        self.parts, self.coordinator, self.ledger, self._clock = parts, coordinator, ledger, clock
        self.settings = config.asynchronous
        self.population = _population(parts)
        self.template = parts.strategy.init(store.params(0))
        # What the handlers read through ``issue`` and ``admit``: changed under the coordinator's lock.
        self.version = store.last_round
        self.params: Params = store.params()
        self.state: StrategyState = store.state(template=self.template)
        self.filling = self.version + 1
        self.counts = ledger.steps_after(self.version)
        while self.counts.get(self.filling, 0) >= self.settings.buffer:
            self.filling += 1
        self.holding: set[int] = set(ledger.issued(self.version))
        self.refused: set[tuple[int, int]] = set()  # (client, version) whose refusal admit recorded
        self._publish(self.version, self.params, self.state)
        self.work = Work(
            "fit",
            self.version + 1,
            {},
            [],
            like=self.params,
            rule=self._rule(),
            issue=self._issue,
            admit=self._admit,
            slot_timeout=self.settings.task_timeout,
        )
        self._restore_open_tasks()

    def _rule(self) -> UpdateRule:
        """The acceptance rule of every result, narrowed by the operator's limits (the norm
        bound by the scale of the current model: a stale update is bounded as a fresh one)."""
        rule = self.parts.strategy.update_rule
        limits = self.parts.limits
        return rule if limits is None else limits.rule_for(rule, None, self.params)

    # The handlers' side (called with the coordinator's lock held) ---------------------------
    def _publish(self, version: int, params: Params, state: StrategyState) -> None:
        """Encode the model clients pull from now on (once per version, shared by every task)."""
        ctx = RoundContext(version + 1, params, self.parts.config.seed, self.population.num_clients)
        self.broadcast: Broadcast = self.parts.strategy.configure(state, ctx)
        self.tensors = encode_tensors({"": params, **{k: v for k, v in self.broadcast.payload.items() if k}})
        self.chunks = [task_chunk(c) for c in self.tensors.chunks]

    def _slot(self, client_id: int, version: int) -> Slot:
        config = self.parts.config
        round = version + 1
        tid = task_id(round, "fit", client_id)
        (seed,) = seeds_for(config.seed, Purpose.FIT, round=round, clients=[client_id])
        header = encode_task_header(
            tid, "fit", round, client_id, self.tensors, train=config.train, options=self.broadcast.options, seed=seed
        )
        return Slot(client_id, tid, header, round=round, chunks=self.chunks, like=self.params)

    def _issue(self, client_id: int) -> Slot | None:
        open_tasks = sum(1 for slot in self.work.slots.values() if slot.state != "done")
        if (
            self.filling > self.parts.config.rounds  # the last step's buffer is full: the run is ending
            or open_tasks >= self.settings.concurrency
            or client_id in self.holding
        ):
            return None
        self.ledger.issue(client_id, self.version)  # durable before the task leaves
        self.holding.add(client_id)
        log_event(_log, logging.INFO, "task_issued", client=client_id, version=self.version, open=open_tasks + 1)
        return self._slot(client_id, self.version)

    def _admit(self, slot: Slot, result: ReceivedResult) -> str | None:
        version = slot.round - 1
        staleness = self.filling - 1 - version  # steps the model will have moved since the task's version
        reason = None
        if self.filling > self.parts.config.rounds:
            reason = "update refused: the run has taken its last server step"
        elif result.delta is None:
            reason = "update refused: a fit result without an update"
        else:
            reason = staleness_problem(staleness, self.settings)
        if reason is not None:
            self.ledger.drop(self.filling, slot.client_id, version, reason)
            self.refused.add((slot.client_id, version))
            return reason
        assert result.delta is not None
        update = Update(slot.client_id, result.delta, result.num_examples, dict(result.metrics))
        self.ledger.accept(self.filling, update, version=version, staleness=staleness)
        log_event(
            _log, logging.INFO, "update_buffered", client=slot.client_id, step=self.filling, version=version,
            staleness=staleness,
        )  # fmt: skip
        self.counts[self.filling] = self.counts.get(self.filling, 0) + 1
        if self.counts[self.filling] >= self.settings.buffer:
            self.filling += 1
        return None

    # The driver's side ------------------------------------------------------------------------
    def _restore_open_tasks(self) -> None:
        """Open again the tasks a killed server had handed out and not closed."""
        now = self.coordinator.now()
        for client_id, version in self.ledger.open_tasks():
            try:
                params = self.parts.store.params(version)
                state = self.parts.store.state(version, template=self.template)
            except StoreError:
                reason = f"its model version {version} is no longer stored (keep_params); task dropped on restart"
                self.ledger.drop(self.filling, client_id, version, reason)
                continue
            self._publish(version, params, state)
            slot = self._slot(client_id, version)
            slot.like, slot.state, slot.issued = params, "sent", now
            self.work.slots[client_id] = slot
        self._publish(self.version, self.params, self.state)

    def _record_failures(self, slots: list[Slot]) -> None:
        with self.coordinator.locked():
            for slot in slots:
                version = slot.round - 1
                if slot.failure and (slot.client_id, version) not in self.refused:
                    self.ledger.drop(self.filling, slot.client_id, version, slot.failure)
                self.refused.discard((slot.client_id, version))

    def _stalled(self) -> bool:
        """Every authorised client holds the current model, none trains, and the buffer is short."""
        with self.coordinator.locked():
            training = any(slot.state != "done" for slot in self.work.slots.values())
            return (
                not training
                and self.filling == self.version + 1
                and self.counts.get(self.filling, 0) > 0
                and self.holding >= set(self.population.client_ids)
            )

    def run(self, listener: RoundListener | None = None) -> tuple[History, Params]:
        """Serve until the last server step is committed; return the history and the model."""
        config, store = self.parts.config, self.parts.store
        history = store.history()
        if listener is not None:
            listener.on_start(config, self.version + 1, self.settings.concurrency, self.population.num_clients)
        log_event(
            _log, logging.INFO, "fedbuff_started", version=self.version, concurrency=self.settings.concurrency,
            buffer=self.settings.buffer, open_tasks=sorted(self.work.slots), buffered=self.counts.get(self.filling, 0),
        )  # fmt: skip
        self.coordinator.post(self.work)
        evaluators, started = _Evaluators(), self._clock()
        monitor = monitor_split(self.population.central_test, config.evaluation.monitor)
        while self.version < config.rounds:
            self._record_failures(self.coordinator.take_settled(self.work, 0.5))
            ready = self.filling > self.version + 1
            flushed = not ready and self._stalled()
            if not ready and not flushed:
                continue
            record = self._step(flushed, evaluators, monitor, started)
            started = self._clock()
            history.append(record)
            if listener is not None:
                listener.on_round(record)
        return history, self.params

    def _step(self, flushed: bool, evaluators: _Evaluators, monitor: Split | None, started: float) -> RoundRecord:
        """One server step over the buffer of step ``version + 1``: aggregate, evaluate, commit."""
        config, store, strategy = self.parts.config, self.parts.store, self.parts.strategy
        round = self.version + 1
        with self.coordinator.locked():
            if flushed:
                self.filling = round + 1  # what arrives from now on fills the next step
            sampled = len(self.ledger.issued(self.version))
        buffered = self.ledger.buffered(round)
        dropouts = self.ledger.dropouts(round)
        ctx = RoundContext(round, self.params, config.seed, self.population.num_clients)
        step = buffer_step(strategy, buffered, self.params, self.state, ctx, config, flushed=flushed)
        failures: list[tuple[str, ClientFailure]] = [("fit", f) for f in dropouts]
        clients = list(step.clients)
        central_only = dataclasses.replace(
            self.parts, config=config.replace(evaluation=dataclasses.replace(config.evaluation, federated=False))
        )
        central, monitored, _ = evaluate_round(
            central_only, self.population, step.params, round, monitor, evaluators, clients, failures
        )
        record = RoundRecord(
            round=round,
            sampled=sampled,
            completed=len(buffered) if step.aggregated else 0,
            failed=len(dropouts),
            aggregated=step.aggregated,
            central=central,
            fit=step.fit,
            seconds=self._clock() - started,
            note=step.note,
            monitor=monitored,
        )
        store.commit_round(
            record, step.params, step.state, clients, failures, keep_params=config.keep_params,
            meta={_STEP_META: {"round": round, "staleness": config.asynchronous.staleness}},
        )  # fmt: skip
        with self.coordinator.locked():
            self.version, self.params, self.state = round, step.params, step.state
            self.holding = set()
            self._publish(round, step.params, step.state)
            self.work.round, self.work.like, self.work.rule = round + 1, step.params, self._rule()
        self.coordinator.wake()  # clients that trained from the last model may pull again
        self.coordinator.tick()
        self.ledger.prune(round)
        log_event(
            _log, logging.INFO, "server_step", step=round, updates=len(buffered), dropouts=len(dropouts),
            staleness_mean=step.fit.get("staleness_mean"), staleness_max=step.fit.get("staleness_max"),
            aggregated=step.aggregated, seconds=round_seconds(record.seconds),
        )  # fmt: skip
        return record


def round_seconds(seconds: float) -> float:
    """Seconds to two decimals, for the log."""
    return float(f"{seconds:.2f}")
